//! Postgres: back-channel logout marks (`logout_marks`, migration 0005).

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

use super::super::row::{self, LOGOUT_COLS};
use super::super::{LogoutMark, Result};
use super::{PgStore, col, pg_err};

fn mark(r: &tokio_postgres::Row) -> Result<LogoutMark> {
    let names = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
    row::logout_mark(names, col(r, 3)?, col(r, 4)?, col(r, 5)?)
}

impl PgStore {
    pub(super) async fn put_logout_mark(&self, m: &LogoutMark) -> Result<()> {
        let c = self.client().await?;
        let stmt = c
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
        c.execute(&stmt, &args).await.map_err(pg_err).map(|_| ())
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
        watermark: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<LogoutMark>> {
        self.select_logout_marks(
            "created_at > $1 AND expires_at > $2 ORDER BY created_at, issuer, kind, value",
            &[&watermark, &now],
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
}
