//! SQLite: moving legacy (version 1) token hashes to the keyed hash
//! (`portcullis token rekey`, and upgrades on use).

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::super::row::{COLS, hash32};
use super::super::{Result, TokenHash, TokenRecord};
use super::{SqliteStore, record, uuid_at};

impl SqliteStore {
    pub(super) async fn upgrade_hash_sql(
        &self,
        id: Uuid,
        old: &TokenHash,
        new: &TokenHash,
    ) -> Result<Option<TokenRecord>> {
        let (old, new) = (*old, *new);
        self.run(move |c| {
            let sql = format!(
                "UPDATE personal_access_tokens SET token_hash = ?3, hash_version = 2 \
                 WHERE id = ?1 AND token_hash = ?2 AND hash_version = 1 RETURNING {COLS}"
            );
            c.prepare_cached(&sql)?
                .query_row(params![id.to_string(), &old[..], &new[..]], record)
                .optional()
        })
        .await
    }

    pub(super) async fn legacy_hashes_sql(&self) -> Result<Vec<(Uuid, TokenHash)>> {
        let rows: Vec<(Uuid, Vec<u8>)> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, token_hash FROM personal_access_tokens \
                     WHERE hash_version = 1 AND kind = 'opaque'",
                )?;
                let rows = stmt.query_map([], |r| {
                    let id: String = r.get(0)?;
                    Ok((uuid_at(0, &id)?, r.get(1)?))
                })?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(id, h)| Ok((id, hash32(h)?)))
            .collect()
    }
}
