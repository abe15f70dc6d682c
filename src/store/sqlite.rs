//! SQLite backend: one connection in WAL mode behind a `std::sync::Mutex`,
//! used only inside `spawn_blocking` (the lock is never held across `.await`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::{Null, ToSqlOutput, Type};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use super::events::{
    AttemptOutcome, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord, EventQuery,
    EventRecord, HookFilter, LogoutClaims,
};
use uuid::Uuid;

use super::row::{self, COLS, Param, sort_newest_first};
use super::{
    Cause, DenyEntry, DenyKeyset, DenylistKind, HashAt, LogoutKeyset, LogoutMark, MIGRATIONS,
    NewToken, OwnerKeyset, OwnerRecord, PatKeyset, Result, StoreError, TokenHash, TokenQuery,
    TokenRecord, TokenStore, Usage,
};

#[path = "sqlite_chain.rs"]
mod chain;
#[path = "sqlite_columns.rs"]
mod columns;
#[path = "sqlite_deny.rs"]
mod deny;
#[path = "sqlite_inventory.rs"]
mod inventory;
#[path = "sqlite_outbox.rs"]
mod outbox;
#[path = "sqlite_owners.rs"]
mod owners;
#[path = "sqlite_rekey.rs"]
mod rekey;
#[path = "sqlite_resync.rs"]
mod resync;
#[path = "sqlite_writes.rs"]
mod writes;

pub(super) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub(super) async fn open(path: PathBuf, busy: Duration) -> Result<SqliteStore> {
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("create {}: {e}", dir.display()))
                })?;
            }
            let conn = Connection::open(&path).map_err(map_err)?;
            conn.busy_timeout(busy).map_err(map_err)?;
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(map_err)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(map_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite open task: {e}")))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Other("sqlite connection mutex poisoned".into()))?;
            f(&mut guard).map_err(map_err)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite task: {e}")))?
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => {
                StoreError::Conflict("unique constraint violated".into())
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        },
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        _ => StoreError::Other(e.to_string()),
    }
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A timestamp column value read outside a row mapper.
fn micros(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Other("timestamp out of range".into()))
}

fn conv<E: std::error::Error + Send + Sync + 'static>(
    idx: usize,
    ty: Type,
    e: E,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, Box::new(e))
}

fn from_ts(idx: usize, v: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| {
        conv(
            idx,
            Type::Integer,
            StoreError::Other("timestamp out of range".into()),
        )
    })
}

fn uuid_at(idx: usize, s: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| conv(idx, Type::Text, e))
}

fn record(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    row::decode(row)
}

/// An insert value in SQLite's representation of its column type.
fn bind<'a>(p: &'a Param<'_>) -> rusqlite::Result<ToSqlOutput<'a>> {
    Ok(match *p {
        Param::Uuid(u) => ToSqlOutput::from(u.to_string()),
        Param::OptUuid(u) => u.map_or(ToSqlOutput::from(Null), |u| u.to_string().into()),
        Param::Text(s) => ToSqlOutput::from(s),
        Param::OptText(s) => s.map_or(ToSqlOutput::from(Null), ToSqlOutput::from),
        Param::Bytes(b) => ToSqlOutput::from(b),
        Param::Scopes(s) => ToSqlOutput::from(
            serde_json::to_string(s)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        ),
        Param::Time(t) => ToSqlOutput::from(ts(t)),
        Param::OptTime(t) => t.map_or(ToSqlOutput::from(Null), |t| ts(t).into()),
        Param::SmallInt(v) => ToSqlOutput::from(v),
    })
}

fn query_records(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Vec<TokenRecord>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, record)?;
    rows.collect()
}

fn insert_token(conn: &Connection, t: &NewToken) -> rusqlite::Result<TokenRecord> {
    let values = row::insert_values(t);
    let bound = values
        .iter()
        .map(bind)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    conn.prepare_cached(&row::insert_sql('?'))?
        .query_row(rusqlite::params_from_iter(bound), record)
}

#[async_trait::async_trait]
impl TokenStore for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<Vec<u32>> {
        self.run(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )?;
            let mut applied = Vec::new();
            for &(version, name, sql, _) in MIGRATIONS {
                let done: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                    [version],
                    |r| r.get(0),
                )?;
                if done {
                    continue;
                }
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![version, name, ts(Utc::now())],
                )?;
                applied.push(version);
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.run(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn insert(&self, token: NewToken, cause: &Cause) -> Result<TokenRecord> {
        self.insert_sql(token, cause.clone()).await
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>> {
        let hash = *hash;
        self.run(move |c| {
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE token_hash = ?1");
            c.prepare_cached(&sql)?
                .query_row([&hash[..]], record)
                .optional()
        })
        .await
    }

    async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>> {
        let jti = jti.to_owned();
        self.run(move |c| {
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE jti = ?1");
            c.prepare_cached(&sql)?.query_row([jti], record).optional()
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        self.run(move |c| {
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = ?1");
            c.prepare_cached(&sql)?
                .query_row([id.to_string()], record)
                .optional()
        })
        .await
    }

    async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>> {
        let owner = (issuer.to_owned(), user_id.to_owned());
        let mut v = self
            .run(move |c| {
                let sql = format!(
                    "SELECT {COLS} FROM personal_access_tokens WHERE user_issuer = ?1 AND user_id = ?2"
                );
                query_records(c, &sql, params![owner.0, owner.1])
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    async fn count_active(&self, issuer: &str, user_id: &str, now: DateTime<Utc>) -> Result<u64> {
        let owner = (issuer.to_owned(), user_id.to_owned());
        self.run(move |c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM personal_access_tokens \
                 WHERE user_issuer = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
            )?
            .query_row(params![owner.0, owner.1, ts(now)], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0).unsigned_abs())
        })
        .await
    }

    async fn claim_unowned(&self, issuer: &str) -> Result<u64> {
        let issuer = issuer.to_owned();
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE personal_access_tokens SET user_issuer = ?1 WHERE user_issuer = ''",
            )?
            .execute([issuer])
            .map(|n| n as u64)
        })
        .await
    }

    async fn revoke(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>> {
        self.revoke_sql(id, now, cause.clone()).await
    }

    async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.revoke_all_sql(issuer, user_id, now, cause.clone())
            .await
    }

    async fn rotate(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<TokenRecord> {
        self.rotate_sql(old_id, new, now, cause.clone()).await
    }

    async fn revoke_chain(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.revoke_chain_sql(id, now, cause.clone()).await
    }

    async fn chain_origin(&self, id: Uuid) -> Result<Option<DateTime<Utc>>> {
        self.chain_origin_sql(id).await
    }

    async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64> {
        let json: Vec<(String, i64)> = batch
            .iter()
            .map(|(id, at)| (id.to_string(), ts(*at)))
            .collect();
        let json = serde_json::to_string(&json).map_err(|e| StoreError::Other(e.to_string()))?;
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE personal_access_tokens AS t SET last_used_at = u.at \
                 FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at \
                       FROM json_each(?1)) AS u \
                 WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
            )?
            .execute([json])
            .map(|n| n as u64)
        })
        .await
    }

    async fn deny_jwt(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.deny_jwt_sql(kind, value, expires_at, now, None).await
    }

    async fn deny_jwt_by(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<()> {
        let event = super::events::jwt_revoked_event(kind, value, expires_at, cause, now);
        self.deny_jwt_sql(kind, value, expires_at, now, Some(event))
            .await
    }

    async fn is_jwt_denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.denied(jti, sid, now).await
    }

    async fn purge_jwt_denylist(&self, now: DateTime<Utc>) -> Result<u64> {
        self.purge_denylist_sql(now).await
    }

    async fn upgrade_hash(
        &self,
        id: Uuid,
        old: &TokenHash,
        new: &TokenHash,
    ) -> Result<Option<TokenRecord>> {
        self.upgrade_hash_sql(id, old, new).await
    }

    async fn legacy_opaque_hashes(&self) -> Result<Vec<(Uuid, TokenHash)>> {
        self.legacy_hashes_sql().await
    }

    async fn active_hashes(
        &self,
        after: Uuid,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Uuid, TokenHash)>> {
        self.active_page(after, now, limit).await
    }

    async fn created_since(
        &self,
        after: &PatKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HashAt>> {
        self.created_page(after, now, limit).await
    }

    async fn revoked_since(&self, after: &PatKeyset, limit: u32) -> Result<Vec<HashAt>> {
        self.revoked_page(after, limit).await
    }

    async fn jwt_denied_since(
        &self,
        after: &DenyKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DenyEntry>> {
        self.denied_since(after, now, limit).await
    }

    async fn mark_logout(&self, mark: &LogoutMark) -> Result<()> {
        self.put_logout_mark(mark, None).await
    }

    async fn mark_logout_by(
        &self,
        mark: &LogoutMark,
        claims: &LogoutClaims,
        cause: &Cause,
    ) -> Result<()> {
        let event = super::events::logged_out_event(mark, claims, cause, mark.changed_at);
        self.put_logout_mark(mark, Some(event)).await
    }

    async fn logout_marks_since(
        &self,
        after: &LogoutKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LogoutMark>> {
        self.marks_since(after, now, limit).await
    }

    async fn logout_marks_for(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LogoutMark>> {
        self.marks_for(issuer, sid, sub, now).await
    }

    async fn purge_logout_marks(&self, now: DateTime<Utc>) -> Result<u64> {
        self.purge_marks(now).await
    }

    async fn active_owners(&self, issuer: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
        self.active_owners_sql(issuer, now).await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.take_lease_sql(name, holder, now, lease_until).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.release_lease_sql(name, holder).await
    }

    async fn put_owner(&self, owner: &OwnerRecord) -> Result<bool> {
        self.put_owner_events_sql(owner).await
    }

    async fn owners_changed_since(
        &self,
        after: &OwnerKeyset,
        limit: u32,
    ) -> Result<Vec<OwnerRecord>> {
        self.owners_since_sql(after, limit).await
    }

    async fn owner(&self, issuer: &str, user_id: &str) -> Result<Option<OwnerRecord>> {
        self.owner_sql(issuer, user_id).await
    }

    async fn revoke_hashes(
        &self,
        hashes: &[TokenHash],
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.revoke_hashes_sql(hashes.to_vec(), now, cause.clone())
            .await
    }

    async fn expiry_notices(&self, now: DateTime<Utc>, thresholds: &[i64]) -> Result<usize> {
        self.expiry_notices_sql(now, thresholds.to_vec()).await
    }

    async fn fan_out(
        &self,
        hooks: &[HookFilter],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize> {
        self.fan_out_sql(hooks.to_vec(), now, since, limit).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        hooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        self.claim_sql(owner.to_owned(), hooks, now, lease_until, limit)
            .await
    }

    async fn finish_delivery(
        &self,
        id: Uuid,
        owner: &str,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.finish_sql(id, owner.to_owned(), outcome.clone(), now)
            .await
    }

    async fn expire_deliveries(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.expire_deliveries_sql(older_than, now).await
    }

    async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        self.deliveries_sql(q.clone()).await
    }

    async fn delivery_counts(&self) -> Result<DeliveryCounts> {
        self.delivery_counts_sql().await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        self.events_sql(q.clone()).await
    }

    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge_events_sql(before).await
    }

    async fn tokens(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>> {
        self.tokens_sql(q.clone()).await
    }

    async fn touch_usage(&self, batch: &[Usage], new_ip: bool) -> Result<u64> {
        self.touch_usage_sql(batch.to_vec(), new_ip).await
    }
}
