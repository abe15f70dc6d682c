//! Postgres: the resync loop's PAT reads, one keyset page per call
//! (`store::page`): revocations, creations, and the known-hash set's full
//! load.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::super::row::hash32;
use super::super::{HashAt, PatKeyset, Result, TokenHash};
use super::{PgStore, col, pg_err};

impl PgStore {
    /// `sql` selects `id, token_hash, <timestamp>`.
    async fn hash_page(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<HashAt>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
        let rows = c.query(&stmt, args).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(HashAt {
                    id: col(r, 0)?,
                    hash: hash32(col(r, 1)?)?,
                    at: col(r, 2)?,
                })
            })
            .collect()
    }

    pub(super) async fn revoked_page(&self, after: &PatKeyset, limit: u32) -> Result<Vec<HashAt>> {
        self.hash_page(
            "SELECT id, token_hash, revoked_at FROM personal_access_tokens \
             WHERE (revoked_at, id) > ($1, $2) ORDER BY revoked_at, id LIMIT $3",
            &[&after.at, &after.key, &i64::from(limit)],
        )
        .await
    }

    pub(super) async fn created_page(
        &self,
        after: &PatKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HashAt>> {
        self.hash_page(
            "SELECT id, token_hash, created_at FROM personal_access_tokens \
             WHERE (created_at, id) > ($1, $2) AND revoked_at IS NULL AND expires_at > $3 \
             ORDER BY created_at, id LIMIT $4",
            &[&after.at, &after.key, &now, &i64::from(limit)],
        )
        .await
    }

    pub(super) async fn active_page(
        &self,
        after: Uuid,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Uuid, TokenHash)>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, token_hash FROM personal_access_tokens \
                 WHERE id > $1 AND revoked_at IS NULL AND expires_at > $2 \
                 ORDER BY id LIMIT $3",
            )
            .await
            .map_err(pg_err)?;
        let rows = c
            .query(&stmt, &[&after, &now, &i64::from(limit)])
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((col(r, 0)?, hash32(col(r, 1)?)?)))
            .collect()
    }
}
