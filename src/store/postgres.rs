//! Postgres backend: deadpool-postgres pool over tokio-postgres (NoTls).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::events::{
    AttemptOutcome, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord, EventQuery,
    EventRecord, HookFilter, LogoutClaims,
};
use super::row::{self, COLS, Columns, Param, hash32, sort_newest_first};
use super::{
    Cause, DenyEntry, DenyKeyset, DenylistKind, HashAt, LogoutKeyset, LogoutMark, MIGRATIONS,
    NewToken, OwnerKeyset, OwnerRecord, PatKeyset, Result, StoreError, TokenHash, TokenQuery,
    TokenRecord, TokenStore, Usage,
};

#[path = "postgres_deny.rs"]
mod deny;
#[path = "postgres_errors.rs"]
mod errors;
#[path = "postgres_inventory.rs"]
mod inventory;
#[path = "postgres_outbox.rs"]
mod outbox;
#[path = "postgres_owners.rs"]
mod owners;
#[path = "postgres_resync.rs"]
mod resync;
#[path = "postgres_writes.rs"]
mod writes;
use errors::{pg_err, pool_err};

/// Advisory lock key serialising concurrent `migrate()` calls across replicas.
const MIGRATE_LOCK: i64 = 0x706f_7274_6375_6c6c; // "portcull"

pub(super) struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub(super) fn new(url: &str, pool_size: usize, timeout: Duration) -> Result<PgStore> {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|_| {
            StoreError::Other("store.url: not a valid postgres connection URL".into())
        })?;
        cfg.connect_timeout(timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("portcullis");
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Other(format!("postgres pool: {e}")))?;
        Ok(PgStore { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn query_records(
        &self,
        sql: &str,
        p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<TokenRecord>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
        let rows = c.query(&stmt, p).await.map_err(pg_err)?;
        rows.iter().map(record).collect()
    }

    async fn query_opt(
        &self,
        sql: &str,
        p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<TokenRecord>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
        c.query_opt(&stmt, p)
            .await
            .map_err(pg_err)?
            .as_ref()
            .map(record)
            .transpose()
    }
}

fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::Other(format!("postgres column {idx}: {e}")))
}

/// Postgres column types map one to one: `uuid`, `text[]`, `timestamptz`.
impl Columns for Row {
    type Error = StoreError;

    fn uuid(&self, i: usize) -> Result<Uuid> {
        col(self, i)
    }

    fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>> {
        col(self, i)
    }

    fn text(&self, i: usize) -> Result<String> {
        col(self, i)
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        col(self, i)
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        col(self, i)
    }

    fn scopes(&self, i: usize) -> Result<Vec<String>> {
        col(self, i)
    }

    fn time(&self, i: usize) -> Result<DateTime<Utc>> {
        col(self, i)
    }

    fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>> {
        col(self, i)
    }

    fn small_int(&self, i: usize) -> Result<i16> {
        col(self, i)
    }

    fn invalid(&self, _: usize, what: &'static str) -> StoreError {
        StoreError::Other(what.into())
    }
}

fn record(row: &Row) -> Result<TokenRecord> {
    row::decode(row)
}

/// An insert value as a Postgres parameter.
fn bind<'a>(p: &'a Param<'_>) -> &'a (dyn ToSql + Sync) {
    match p {
        Param::Uuid(v) => v,
        Param::OptUuid(v) => v,
        Param::Text(v) => v,
        Param::OptText(v) => v,
        Param::Bytes(v) => v,
        Param::Scopes(v) => v,
        Param::Time(v) => v,
        Param::OptTime(v) => v,
        Param::SmallInt(v) => v,
    }
}

/// Inserts `t` on `c` (a client or a transaction) and returns the row.
async fn insert_token(
    c: &impl deadpool_postgres::GenericClient,
    t: &NewToken,
) -> Result<TokenRecord> {
    let values = row::insert_values(t);
    let params: Vec<_> = values.iter().map(bind).collect();
    let stmt = c
        .prepare_cached(&row::insert_sql('$'))
        .await
        .map_err(pg_err)?;
    let row = c.query_one(&stmt, &params).await.map_err(pg_err)?;
    record(&row)
}

#[async_trait::async_trait]
impl TokenStore for PgStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<Vec<u32>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_err)?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| col(r, 0))
            .collect::<Result<_>>()?;
        let mut applied = Vec::new();
        for &(version, name, _, sql) in MIGRATIONS {
            let v = i32::try_from(version)
                .map_err(|_| StoreError::Other("migration version".into()))?;
            if done.contains(&v) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&v, &name],
            )
            .await
            .map_err(pg_err)?;
            applied.push(version);
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(applied)
    }

    async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await.map_err(pg_err).map(|_| ())
    }

    async fn insert(&self, t: NewToken, cause: &Cause) -> Result<TokenRecord> {
        self.insert_sql(&t, cause).await
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE token_hash = $1");
        self.query_opt(&sql, &[&&hash[..]]).await
    }

    async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE jti = $1");
        self.query_opt(&sql, &[&jti]).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = $1");
        self.query_opt(&sql, &[&id]).await
    }

    async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM personal_access_tokens WHERE user_issuer = $1 AND user_id = $2"
        );
        let mut v = self.query_records(&sql, &[&issuer, &user_id]).await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    async fn count_active(&self, issuer: &str, user_id: &str, now: DateTime<Utc>) -> Result<u64> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT COUNT(*) FROM personal_access_tokens \
                 WHERE user_issuer = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
            )
            .await
            .map_err(pg_err)?;
        let row = c
            .query_one(&stmt, &[&issuer, &user_id, &now])
            .await
            .map_err(pg_err)?;
        Ok(col::<i64>(&row, 0)?.max(0).unsigned_abs())
    }

    async fn claim_unowned(&self, issuer: &str) -> Result<u64> {
        let c = self.client().await?;
        c.execute(
            "UPDATE personal_access_tokens SET user_issuer = $1 WHERE user_issuer = ''",
            &[&issuer],
        )
        .await
        .map_err(pg_err)
    }

    async fn revoke(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>> {
        self.revoke_sql(id, now, cause).await
    }

    async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.revoke_all_sql(issuer, user_id, now, cause).await
    }

    async fn rotate(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<TokenRecord> {
        self.rotate_sql(old_id, new, now, cause).await
    }

    async fn revoke_chain(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.revoke_chain_sql(id, now, cause).await
    }

    async fn chain_origin(&self, id: Uuid) -> Result<Option<DateTime<Utc>>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&row::chain_origin_sql('$'))
            .await
            .map_err(pg_err)?;
        let r = c.query_one(&stmt, &[&id]).await.map_err(pg_err)?;
        col(&r, 0)
    }

    async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64> {
        let ids: Vec<Uuid> = batch.iter().map(|b| b.0).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|b| b.1).collect();
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE personal_access_tokens AS t SET last_used_at = u.at \
                 FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
                 WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
            )
            .await
            .map_err(pg_err)?;
        c.execute(&stmt, &[&ids, &ats]).await.map_err(pg_err)
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
        self.deny_jwt_sql(kind, value, expires_at, now, Some(&event))
            .await
    }

    async fn is_jwt_denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.is_denied_sql(jti, sid, now).await
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
        let sql = format!(
            "UPDATE personal_access_tokens SET token_hash = $3, hash_version = 2 \
             WHERE id = $1 AND token_hash = $2 AND hash_version = 1 RETURNING {COLS}"
        );
        self.query_opt(&sql, &[&id, &&old[..], &&new[..]]).await
    }

    async fn legacy_opaque_hashes(&self) -> Result<Vec<(Uuid, TokenHash)>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, token_hash FROM personal_access_tokens \
                 WHERE hash_version = 1 AND kind = 'opaque'",
            )
            .await
            .map_err(pg_err)?;
        let rows = c.query(&stmt, &[]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((col(r, 0)?, hash32(col(r, 1)?)?)))
            .collect()
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
        self.denied_since_sql(after, now, limit).await
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
        self.put_logout_mark(mark, Some(&event)).await
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
        self.revoke_hashes_sql(hashes, now, cause).await
    }

    async fn expiry_notices(&self, now: DateTime<Utc>, thresholds: &[i64]) -> Result<usize> {
        self.expiry_notices_sql(now, thresholds).await
    }

    async fn fan_out(
        &self,
        hooks: &[HookFilter],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize> {
        self.fan_out_sql(hooks, now, since, limit).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        hooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        self.claim_sql(owner, hooks, now, lease_until, limit).await
    }

    async fn finish_delivery(
        &self,
        id: Uuid,
        owner: &str,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.finish_sql(id, owner, outcome, now).await
    }

    async fn expire_deliveries(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.expire_deliveries_sql(older_than, now).await
    }

    async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        self.deliveries_sql(q).await
    }

    async fn delivery_counts(&self) -> Result<DeliveryCounts> {
        self.delivery_counts_sql().await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        self.events_sql(q).await
    }

    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge_events_sql(before).await
    }

    async fn tokens(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>> {
        self.tokens_sql(q).await
    }

    async fn touch_usage(&self, batch: &[Usage], new_ip: bool) -> Result<u64> {
        self.touch_usage_sql(batch, new_ip).await
    }
}
