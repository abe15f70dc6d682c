//! SQLite: the resync loop's PAT reads, one keyset page per call
//! (`store::page`): revocations, creations, and the known-hash set's full
//! load.

use chrono::{DateTime, Utc};
use rusqlite::params;
use uuid::Uuid;

use super::super::row::hash32;
use super::super::{HashAt, PatKeyset, Result, TokenHash};
use super::{SqliteStore, micros, ts, uuid_at};

type Raw = (Uuid, Vec<u8>, i64);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    let id: String = r.get(0)?;
    Ok((uuid_at(0, &id)?, r.get(1)?, r.get(2)?))
}

fn hash_at((id, h, at): Raw) -> Result<HashAt> {
    Ok(HashAt {
        id,
        hash: hash32(h)?,
        at: micros(at)?,
    })
}

impl SqliteStore {
    /// `sql` selects `id, token_hash, <timestamp>` with `?1`/`?2` the
    /// keyset, `?3` now and `?4` the limit.
    async fn hash_page(
        &self,
        sql: &'static str,
        after: &PatKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HashAt>> {
        let (at, id) = (ts(after.at), after.key.to_string());
        let rows: Vec<Raw> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(sql)?;
                let rows = stmt.query_map(params![at, id, ts(now), i64::from(limit)], raw)?;
                rows.collect()
            })
            .await?;
        rows.into_iter().map(hash_at).collect()
    }

    pub(super) async fn revoked_page(&self, after: &PatKeyset, limit: u32) -> Result<Vec<HashAt>> {
        // Revocations are read whatever the expiry: `?3` (now) is not used
        // (SQLite counts parameters up to the highest index, so it binds).
        self.hash_page(
            "SELECT id, token_hash, revoked_at FROM personal_access_tokens \
             WHERE (revoked_at, id) > (?1, ?2) \
             ORDER BY revoked_at, id LIMIT ?4",
            after,
            DateTime::<Utc>::UNIX_EPOCH,
            limit,
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
             WHERE (created_at, id) > (?1, ?2) AND revoked_at IS NULL AND expires_at > ?3 \
             ORDER BY created_at, id LIMIT ?4",
            after,
            now,
            limit,
        )
        .await
    }

    pub(super) async fn active_page(
        &self,
        after: Uuid,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Uuid, TokenHash)>> {
        let after = after.to_string();
        let rows: Vec<(Uuid, Vec<u8>)> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, token_hash FROM personal_access_tokens \
                     WHERE id > ?1 AND revoked_at IS NULL AND expires_at > ?2 \
                     ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![after, ts(now), i64::from(limit)], |r| {
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
