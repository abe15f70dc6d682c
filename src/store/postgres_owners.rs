//! Postgres: PAT owners' synced state (`pat_owners`, migration 0006) and
//! the owner sync's lease (`sync_leases`, migration 0011).

use chrono::{DateTime, Utc};

use super::super::row::{self, OWNER_COLS};
use super::super::{OwnerKeyset, OwnerRecord, Result};
use super::{PgStore, col, pg_err};

fn owner(r: &tokio_postgres::Row) -> Result<OwnerRecord> {
    let names = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
    row::owner(names, col(r, 3)?, col(r, 4)?, col(r, 5)?)
}

impl PgStore {
    pub(super) async fn active_owners_sql(
        &self,
        issuer: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&row::active_owners_sql('$'))
            .await
            .map_err(pg_err)?;
        let rows = c.query(&stmt, &[&issuer, &now]).await.map_err(pg_err)?;
        rows.iter().map(|r| col(r, 0)).collect()
    }

    pub(super) async fn owners_since_sql(
        &self,
        after: &OwnerKeyset,
        limit: u32,
    ) -> Result<Vec<OwnerRecord>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {OWNER_COLS} FROM pat_owners WHERE (changed_at, issuer, user_id) > ($1, $2, $3) \
             ORDER BY changed_at, issuer, user_id LIMIT $4"
        );
        let stmt = c.prepare_cached(&sql).await.map_err(pg_err)?;
        let (issuer, user) = &after.key;
        let rows = c
            .query(&stmt, &[&after.at, issuer, user, &i64::from(limit)])
            .await
            .map_err(pg_err)?;
        rows.iter().map(owner).collect()
    }

    pub(super) async fn owner_sql(&self, issuer: &str, user: &str) -> Result<Option<OwnerRecord>> {
        let c = self.client().await?;
        let sql = format!("SELECT {OWNER_COLS} FROM pat_owners WHERE issuer = $1 AND user_id = $2");
        let stmt = c.prepare_cached(&sql).await.map_err(pg_err)?;
        let r = c
            .query_opt(&stmt, &[&issuer, &user])
            .await
            .map_err(pg_err)?;
        r.as_ref().map(owner).transpose()
    }

    pub(super) async fn take_lease_sql(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        // The database's clock, as webhook delivery leases: a replica whose
        // clock is off can neither cut another's lease short nor hold one
        // long after it died. Only the length comes from the caller.
        let lease_secs = (lease_until - now)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64());
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO sync_leases (name, holder, lease_until) \
                 VALUES ($1, $2, now() + $3::float8 * interval '1 second') \
                 ON CONFLICT (name) DO UPDATE \
                 SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
                 WHERE sync_leases.holder = EXCLUDED.holder OR sync_leases.lease_until <= now() \
                 RETURNING holder",
            )
            .await
            .map_err(pg_err)?;
        let r = c
            .query_opt(&stmt, &[&name, &holder, &lease_secs])
            .await
            .map_err(pg_err)?;
        Ok(r.is_some())
    }

    pub(super) async fn release_lease_sql(&self, name: &str, holder: &str) -> Result<()> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("DELETE FROM sync_leases WHERE name = $1 AND holder = $2")
            .await
            .map_err(pg_err)?;
        c.execute(&stmt, &[&name, &holder]).await.map_err(pg_err)?;
        Ok(())
    }
}
