//! SQLite: reading the JWT deny-list, and back-channel logout marks
//! (`logout_marks`, migration 0005).

use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};

use super::super::events::NewEvent;
use super::super::row::{self, DENY_COLS, LOGOUT_COLS};
use super::super::{DenyEntry, DenyKeyset, DenylistKind, LogoutKeyset, LogoutMark, Result};
use super::{SqliteStore, micros, ts};

type Raw = (String, String, String, i64, i64, i64);

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

fn mark((iss, kind, value, nbf, exp, changed): Raw) -> Result<LogoutMark> {
    row::logout_mark(
        (iss, kind, value),
        micros(nbf)?,
        micros(exp)?,
        micros(changed)?,
    )
}

impl SqliteStore {
    pub(super) async fn denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (jti, sid) = (jti.map(str::to_owned), sid.map(str::to_owned));
        self.run(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jwt_denylist WHERE expires_at > ?3 AND \
                 ((kind = 'jti' AND value = ?1) OR (kind = 'sid' AND value = ?2)))",
            )?
            .query_row(params![jti, sid, ts(now)], |r| r.get(0))
        })
        .await
    }

    pub(super) async fn denied_since(
        &self,
        after: &DenyKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DenyEntry>> {
        let (at, (kind, value)) = (ts(after.at), after.key.clone());
        let rows: Vec<(String, String, i64, i64)> = self
            .run(move |c| {
                let sql = format!(
                    "SELECT {DENY_COLS} FROM jwt_denylist \
                     WHERE (created_at, kind, value) > (?1, ?2, ?3) AND expires_at > ?4 \
                     ORDER BY created_at, kind, value LIMIT ?5"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let args = params![at, kind, value, ts(now), i64::from(limit)];
                let rows =
                    stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(kind, value, exp, changed)| {
                row::deny_entry(&kind, value, micros(exp)?, micros(changed)?)
            })
            .collect()
    }

    /// Upserts `m`, with `ev` (its `jwt.logged_out` event) in the same
    /// transaction when given.
    pub(super) async fn put_logout_mark(&self, m: &LogoutMark, ev: Option<NewEvent>) -> Result<()> {
        let m = m.clone();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(&row::logout_upsert_sql('?', "MAX"))?
                .execute(params![
                    m.issuer,
                    m.kind.as_str(),
                    m.value,
                    ts(m.not_before),
                    ts(m.expires_at),
                    ts(m.changed_at)
                ])?;
            if let Some(e) = &ev {
                super::writes::insert_event(&tx, e)?;
            }
            tx.commit()
        })
        .await
    }

    pub(super) async fn select_logout_marks(
        &self,
        filter: &'static str,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<LogoutMark>> {
        let rows: Vec<Raw> = self
            .run(move |c| {
                let sql = format!("SELECT {LOGOUT_COLS} FROM logout_marks WHERE {filter}");
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), raw)?;
                rows.collect()
            })
            .await?;
        rows.into_iter().map(mark).collect()
    }

    pub(super) async fn marks_since(
        &self,
        after: &LogoutKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LogoutMark>> {
        let (issuer, kind, value) = after.key.clone();
        let args = vec![
            ts(after.at).into(),
            issuer.into(),
            kind.into(),
            value.into(),
            ts(now).into(),
            i64::from(limit).into(),
        ];
        self.select_logout_marks(
            "(created_at, issuer, kind, value) > (?1, ?2, ?3, ?4) AND expires_at > ?5 \
             ORDER BY created_at, issuer, kind, value LIMIT ?6",
            args,
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
        let sid = sid
            .map(str::to_owned)
            .map_or(rusqlite::types::Value::Null, Into::into);
        let args = vec![
            issuer.to_owned().into(),
            sid,
            sub.to_owned().into(),
            ts(now).into(),
        ];
        self.select_logout_marks(
            "issuer = ?1 AND expires_at > ?4 AND \
             ((kind = 'sid' AND value = ?2) OR (kind = 'sub' AND value = ?3))",
            args,
        )
        .await
    }

    pub(super) async fn purge_marks(&self, now: DateTime<Utc>) -> Result<u64> {
        self.run(move |c| {
            c.prepare_cached("DELETE FROM logout_marks WHERE expires_at <= ?1")?
                .execute([ts(now)])
                .map(|n| n as u64)
        })
        .await
    }

    pub(super) async fn deny_jwt_sql(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        ev: Option<NewEvent>,
    ) -> Result<()> {
        let value = value.to_owned();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO jwt_denylist (kind, value, expires_at, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (kind, value) DO UPDATE SET \
                 created_at = CASE WHEN excluded.expires_at > expires_at THEN excluded.created_at ELSE created_at END, \
                 expires_at = MAX(expires_at, excluded.expires_at)",
            )?
            .execute(params![kind.as_str(), value, ts(expires_at), ts(now)])?;
            if let Some(e) = &ev {
                super::writes::insert_event(&tx, e)?;
            }
            tx.commit()
        })
        .await
    }

    pub(super) async fn purge_denylist_sql(&self, now: DateTime<Utc>) -> Result<u64> {
        self.run(move |c| {
            c.prepare_cached("DELETE FROM jwt_denylist WHERE expires_at <= ?1")?
                .execute([ts(now)])
                .map(|n| n as u64)
        })
        .await
    }
}
