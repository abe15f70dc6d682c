//! Postgres: back-channel logout marks (`logout_marks`, migration 0005).

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

use super::super::events::NewEvent;
use super::super::row::{self, DENY_COLS, LOGOUT_COLS};
use super::super::{DenyEntry, DenyKeyset, DenylistKind, LogoutKeyset, LogoutMark, Result};
use super::{PgStore, col, pg_err};

fn mark(r: &tokio_postgres::Row) -> Result<LogoutMark> {
    let names = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
    row::logout_mark(names, col(r, 3)?, col(r, 4)?, col(r, 5)?)
}

impl PgStore {
    /// Upserts `m`, with `ev` (its `jwt.logged_out` event) in the same
    /// transaction when given.
    pub(super) async fn put_logout_mark(
        &self,
        m: &LogoutMark,
        ev: Option<&NewEvent>,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(&row::logout_upsert_sql('$', "GREATEST"))
            .await
            .map_err(pg_err)?;
        let args: [&(dyn ToSql + Sync); 6] = [
            &m.issuer,
            &m.kind.as_str(),
            &m.value,
            &m.not_before,
            &m.expires_at,
            &m.changed_at,
        ];
        tx.execute(&stmt, &args).await.map_err(pg_err)?;
        if let Some(e) = ev {
            super::writes::insert_event(&tx, e).await?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn select_logout_marks(
        &self,
        filter: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<LogoutMark>> {
        let c = self.client().await?;
        let sql = format!("SELECT {LOGOUT_COLS} FROM logout_marks WHERE {filter}");
        let stmt = c.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = c.query(&stmt, args).await.map_err(pg_err)?;
        rows.iter().map(mark).collect()
    }

    pub(super) async fn marks_since(
        &self,
        after: &LogoutKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LogoutMark>> {
        let (issuer, kind, value) = &after.key;
        self.select_logout_marks(
            "(created_at, issuer, kind, value) > ($1, $2, $3, $4) AND expires_at > $5 \
             ORDER BY created_at, issuer, kind, value LIMIT $6",
            &[&after.at, issuer, kind, value, &now, &i64::from(limit)],
        )
        .await
    }

    pub(super) async fn marks_for(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LogoutMark>> {
        self.select_logout_marks(
            "issuer = $1 AND expires_at > $4 AND \
             ((kind = 'sid' AND value = $2) OR (kind = 'sub' AND value = $3))",
            &[&issuer, &sid, &sub, &now],
        )
        .await
    }

    pub(super) async fn purge_marks(&self, now: DateTime<Utc>) -> Result<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM logout_marks WHERE expires_at <= $1", &[&now])
            .await
            .map_err(pg_err)
    }

    pub(super) async fn deny_jwt_sql(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        ev: Option<&NewEvent>,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO jwt_denylist (kind, value, expires_at, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, value) DO UPDATE \
                 SET created_at = CASE WHEN EXCLUDED.expires_at > jwt_denylist.expires_at \
                                  THEN EXCLUDED.created_at ELSE jwt_denylist.created_at END, \
                     expires_at = GREATEST(jwt_denylist.expires_at, EXCLUDED.expires_at)",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&kind.as_str(), &value, &expires_at, &now])
            .await
            .map_err(pg_err)?;
        if let Some(e) = ev {
            super::writes::insert_event(&tx, e).await?;
        }
        tx.commit().await.map_err(pg_err)
    }

    pub(super) async fn is_denied_sql(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jwt_denylist WHERE expires_at > $3 AND \
                 ((kind = 'jti' AND value = $1) OR (kind = 'sid' AND value = $2)))",
            )
            .await
            .map_err(pg_err)?;
        let row = c
            .query_one(&stmt, &[&jti, &sid, &now])
            .await
            .map_err(pg_err)?;
        col(&row, 0)
    }

    pub(super) async fn purge_denylist_sql(&self, now: DateTime<Utc>) -> Result<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM jwt_denylist WHERE expires_at <= $1", &[&now])
            .await
            .map_err(pg_err)
    }

    pub(super) async fn denied_since_sql(
        &self,
        after: &DenyKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DenyEntry>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {DENY_COLS} FROM jwt_denylist \
             WHERE (created_at, kind, value) > ($1, $2, $3) AND expires_at > $4 \
             ORDER BY created_at, kind, value LIMIT $5"
        );
        let stmt = c.prepare_cached(&sql).await.map_err(pg_err)?;
        let (kind, value) = &after.key;
        let args: [&(dyn ToSql + Sync); 5] = [&after.at, kind, value, &now, &i64::from(limit)];
        let rows = c.query(&stmt, &args).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let kind: String = col(r, 0)?;
                row::deny_entry(&kind, col(r, 1)?, col(r, 2)?, col(r, 3)?)
            })
            .collect()
    }
}
