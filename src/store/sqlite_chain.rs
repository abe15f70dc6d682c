//! SQLite: rotation chains (`rotated_from` links).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::super::row::{self, COLS, sort_newest_first};
use super::super::{Result, TokenRecord};
use super::{SqliteStore, micros, query_records, ts};

impl SqliteStore {
    pub(super) async fn revoke_chain_sql(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>> {
        let mut v = self
            .run(move |c| {
                let sql = format!(
                    "WITH RECURSIVE chain(id, prev) AS ( \
                       SELECT id, rotated_from FROM personal_access_tokens WHERE id = ?1 \
                       UNION \
                       SELECT t.id, t.rotated_from FROM personal_access_tokens t \
                       JOIN chain c ON t.rotated_from = c.id OR t.id = c.prev) \
                     UPDATE personal_access_tokens SET revoked_at = COALESCE(revoked_at, ?2) \
                     WHERE id IN (SELECT id FROM chain) RETURNING {COLS}"
                );
                query_records(c, &sql, params![id.to_string(), ts(now)])
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    pub(super) async fn chain_origin_sql(&self, id: Uuid) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = self
            .run(move |c| {
                c.prepare_cached(&row::chain_origin_sql('?'))?
                    .query_row([id.to_string()], |r| r.get(0))
                    .optional()
                    .map(Option::flatten)
            })
            .await?;
        at.map(micros).transpose()
    }
}
