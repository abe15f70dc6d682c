//! SQLite: PAT owners' synced state (`pat_owners`, migration 0006; scopes
//! are a JSON array, NULL: not restricted) and the owner sync's lease
//! (`sync_leases`, migration 0011).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::super::row::{self, OWNER_COLS};
use super::super::{OwnerKeyset, OwnerRecord, Result, StoreError};
use super::{SqliteStore, micros, ts};

type Raw = (String, String, String, Option<String>, i64, i64);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn owner((issuer, user, state, scopes, synced, changed): Raw) -> Result<OwnerRecord> {
    let scopes = scopes
        .map(|j| serde_json::from_str(&j))
        .transpose()
        .map_err(|e| StoreError::Other(format!("pat_owners.scopes: {e}")))?;
    row::owner(
        (issuer, user, state),
        scopes,
        micros(synced)?,
        micros(changed)?,
    )
}

impl SqliteStore {
    pub(super) async fn active_owners_sql(
        &self,
        issuer: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let issuer = issuer.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&row::active_owners_sql('?'))?;
            let rows = stmt.query_map(params![issuer, ts(now)], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn owners_since_sql(
        &self,
        after: &OwnerKeyset,
        limit: u32,
    ) -> Result<Vec<OwnerRecord>> {
        let (at, (issuer, user)) = (ts(after.at), after.key.clone());
        let rows: Vec<Raw> = self
            .run(move |c| {
                let sql = format!(
                    "SELECT {OWNER_COLS} FROM pat_owners \
                     WHERE (changed_at, issuer, user_id) > (?1, ?2, ?3) \
                     ORDER BY changed_at, issuer, user_id LIMIT ?4"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![at, issuer, user, i64::from(limit)], raw)?;
                rows.collect()
            })
            .await?;
        rows.into_iter().map(owner).collect()
    }

    pub(super) async fn owner_sql(&self, issuer: &str, user: &str) -> Result<Option<OwnerRecord>> {
        let (issuer, user) = (issuer.to_owned(), user.to_owned());
        let row: Option<Raw> = self
            .run(move |c| {
                let sql = format!(
                    "SELECT {OWNER_COLS} FROM pat_owners WHERE issuer = ?1 AND user_id = ?2"
                );
                c.prepare_cached(&sql)?
                    .query_row(params![issuer, user], raw)
                    .optional()
            })
            .await?;
        row.map(owner).transpose()
    }

    pub(super) async fn take_lease_sql(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |c| {
            // One connection, so the upsert is the whole decision.
            c.prepare_cached(
                "INSERT INTO sync_leases (name, holder, lease_until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE \
                 SET holder = excluded.holder, lease_until = excluded.lease_until \
                 WHERE sync_leases.holder = excluded.holder OR sync_leases.lease_until <= ?4 \
                 RETURNING holder",
            )?
            .query_row(params![name, holder, ts(lease_until), ts(now)], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
        })
        .await
    }

    pub(super) async fn release_lease_sql(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |c| {
            c.prepare_cached("DELETE FROM sync_leases WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])
                .map(|_| ())
        })
        .await
    }
}
