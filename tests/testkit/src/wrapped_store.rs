//! A [`TokenStore`] wrapping a real store (SQLite or Postgres through
//! [`Store`]) that counts every backend call and can hold a token lookup at
//! a gate: the lookup reads the real store, signals `read`, then waits for
//! `release` before returning what it read (a load racing a revocation).
//! It can also run a task just before the next `rotate` (something that
//! happens on another request while a rotation is under way).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use portcullis::store::{
    AttemptOutcome, Cause, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord,
    DenyEntry, DenyKeyset, DenylistKind, EventQuery, EventRecord, HashAt, HookFilter, LogoutClaims,
    LogoutKeyset, LogoutMark, NewToken, OwnerKeyset, OwnerRecord, PatKeyset, Result, Store,
    TokenHash, TokenRecord, TokenStore,
};
use tokio::sync::Notify;
use uuid::Uuid;

pub struct WrappedStore {
    inner: Store,
    /// Every backend call.
    pub calls: AtomicU64,
    /// `find_by_hash` / `find_by_jti` calls.
    pub lookups: AtomicU64,
    /// The next `find_by_hash` stops at the gate.
    armed: AtomicBool,
    /// Notified (one permit) when a gated lookup has read the store.
    pub read: Notify,
    /// Lets the gated lookup return.
    pub release: Notify,
    /// Awaited (once) at the start of the next `rotate`.
    before_rotate: Mutex<Option<Hook>>,
    /// Time each row of a resync read costs on top of the real query
    /// (microseconds; 0: none): a big table's transfer time on a small
    /// test database, so a read of many rows outlasts `store.timeout`.
    row_cost_us: AtomicU64,
    /// `jwt_denied_since` calls, and a task run (once) before call number N.
    pub denied_calls: AtomicU64,
    before_denied: Mutex<Option<(u64, Hook)>>,
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

impl std::fmt::Debug for WrappedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl WrappedStore {
    pub fn new(inner: Store) -> Arc<Self> {
        Arc::new(WrappedStore {
            inner,
            calls: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            read: Notify::new(),
            release: Notify::new(),
            before_rotate: Mutex::new(None),
            row_cost_us: AtomicU64::new(0),
            denied_calls: AtomicU64::new(0),
            before_denied: Mutex::new(None),
        })
    }

    /// Every row returned by a resync read (`*_since`, `active_hashes`)
    /// then costs `cost` more, as if the table were far bigger.
    pub fn set_row_cost(&self, cost: std::time::Duration) {
        let us = u64::try_from(cost.as_micros()).unwrap_or(u64::MAX);
        self.row_cost_us.store(us, Ordering::SeqCst);
    }

    async fn priced<T>(&self, rows: Result<Vec<T>>) -> Result<Vec<T>> {
        let us = self.row_cost_us.load(Ordering::SeqCst);
        if let (Ok(r), true) = (&rows, us > 0) {
            let n = u64::try_from(r.len()).unwrap_or(u64::MAX);
            tokio::time::sleep(std::time::Duration::from_micros(us.saturating_mul(n))).await;
        }
        rows
    }

    /// Runs `task` at the start of the next `rotate`, before the rotation
    /// reaches the real store.
    pub fn before_next_rotate(&self, task: impl Future<Output = ()> + Send + 'static) {
        *self.before_rotate.lock().unwrap() = Some(Box::pin(task));
    }

    /// Runs `task` just before the `n`th (1-based) `jwt_denied_since` call.
    pub fn before_denied_since(&self, n: u64, task: impl Future<Output = ()> + Send + 'static) {
        *self.before_denied.lock().unwrap() = Some((n, Box::pin(task)));
    }

    /// The next `find_by_hash` waits for [`WrappedStore::release`].
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl TokenStore for WrappedStore {
    fn name(&self) -> &'static str {
        "wrapped"
    }
    async fn migrate(&self) -> Result<Vec<u32>> {
        self.count();
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<()> {
        self.count();
        self.inner.ping().await
    }
    async fn insert(&self, token: NewToken, cause: &Cause) -> Result<TokenRecord> {
        self.count();
        self.inner.insert_by(token, cause).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>> {
        self.count();
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.find_by_hash(hash).await;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.read.notify_one();
            self.release.notified().await;
        }
        r
    }
    async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>> {
        self.count();
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_jti(jti).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        self.count();
        self.inner.get(id).await
    }
    async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>> {
        self.count();
        self.inner.list_for_user(issuer, user_id).await
    }
    async fn count_active(&self, issuer: &str, user_id: &str, now: DateTime<Utc>) -> Result<u64> {
        self.count();
        self.inner.count_active(issuer, user_id, now).await
    }
    async fn claim_unowned(&self, issuer: &str) -> Result<u64> {
        self.count();
        self.inner.claim_unowned(issuer).await
    }
    async fn revoke(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>> {
        self.count();
        self.inner.revoke_by(id, now, cause).await
    }
    async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.count();
        self.inner
            .revoke_all_for_user_by(issuer, user_id, now, cause)
            .await
    }
    async fn rotate(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<TokenRecord> {
        self.count();
        let hook = self.before_rotate.lock().unwrap().take();
        if let Some(task) = hook {
            task.await;
        }
        self.inner.rotate_by(old_id, new, now, cause).await
    }
    async fn revoke_chain(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.count();
        self.inner.revoke_chain_by(id, now, cause).await
    }
    async fn revoke_hashes(
        &self,
        hashes: &[TokenHash],
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.count();
        self.inner.revoke_hashes(hashes, now, cause).await
    }
    async fn expiry_notices(&self, now: DateTime<Utc>, thresholds: &[i64]) -> Result<usize> {
        self.count();
        self.inner.expiry_notices(now, thresholds).await
    }
    async fn fan_out(
        &self,
        hooks: &[HookFilter],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize> {
        self.count();
        self.inner.fan_out(hooks, now, since, limit).await
    }
    async fn claim_deliveries(
        &self,
        owner: &str,
        hooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        self.count();
        self.inner
            .claim_deliveries(owner, hooks, now, lease_until, limit)
            .await
    }
    async fn finish_delivery(
        &self,
        id: Uuid,
        owner: &str,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.count();
        self.inner.finish_delivery(id, owner, outcome, now).await
    }
    async fn expire_deliveries(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.count();
        self.inner.expire_deliveries(older_than, now).await
    }
    async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        self.count();
        self.inner.deliveries(q).await
    }
    async fn delivery_counts(&self) -> Result<DeliveryCounts> {
        self.count();
        self.inner.delivery_counts().await
    }
    async fn events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        self.count();
        self.inner.events(q).await
    }
    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        self.count();
        self.inner.purge_events(before).await
    }
    async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64> {
        self.count();
        self.inner.touch_last_used(batch).await
    }
    async fn deny_jwt(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<()> {
        self.count();
        self.inner.deny_jwt(kind, value, expires_at).await
    }
    async fn is_jwt_denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.count();
        self.inner.is_jwt_denied(jti, sid, now).await
    }
    async fn purge_jwt_denylist(&self, now: DateTime<Utc>) -> Result<u64> {
        self.count();
        self.inner.purge_jwt_denylist(now).await
    }
    async fn revoked_since(&self, after: &PatKeyset, limit: u32) -> Result<Vec<HashAt>> {
        self.count();
        self.priced(self.inner.revoked_since(after, limit).await)
            .await
    }
    async fn upgrade_hash(
        &self,
        id: Uuid,
        old: &TokenHash,
        new: &TokenHash,
    ) -> Result<Option<TokenRecord>> {
        self.count();
        self.inner.upgrade_hash(id, old, new).await
    }
    async fn legacy_opaque_hashes(&self) -> Result<Vec<(Uuid, TokenHash)>> {
        self.count();
        self.inner.legacy_opaque_hashes().await
    }
    async fn active_hashes(
        &self,
        after: Uuid,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Uuid, TokenHash)>> {
        self.count();
        self.priced(self.inner.active_hashes(after, now, limit).await)
            .await
    }
    async fn created_since(
        &self,
        after: &PatKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HashAt>> {
        self.count();
        self.priced(self.inner.created_since(after, now, limit).await)
            .await
    }
    async fn jwt_denied_since(
        &self,
        after: &DenyKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DenyEntry>> {
        self.count();
        let n = self.denied_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let hook = {
            let mut g = self.before_denied.lock().unwrap();
            match g.as_ref() {
                Some((at, _)) if *at == n => g.take().map(|(_, h)| h),
                _ => None,
            }
        };
        if let Some(task) = hook {
            task.await;
        }
        self.priced(self.inner.jwt_denied_since(after, now, limit).await)
            .await
    }
    async fn chain_origin(&self, id: Uuid) -> Result<Option<DateTime<Utc>>> {
        self.count();
        self.inner.chain_origin(id).await
    }
    async fn mark_logout(&self, mark: &LogoutMark) -> Result<()> {
        self.count();
        self.inner.mark_logout(mark).await
    }
    async fn mark_logout_by(
        &self,
        mark: &LogoutMark,
        claims: &LogoutClaims,
        cause: &Cause,
    ) -> Result<()> {
        self.count();
        self.inner.mark_logout_by(mark, claims, cause).await
    }
    async fn deny_jwt_by(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<()> {
        self.count();
        self.inner.deny_jwt_by(kind, value, expires_at, cause).await
    }
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.count();
        self.inner.take_lease(name, holder, now, lease_until).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.count();
        self.inner.release_lease(name, holder).await
    }
    async fn logout_marks_since(
        &self,
        after: &LogoutKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LogoutMark>> {
        self.count();
        self.priced(self.inner.logout_marks_since(after, now, limit).await)
            .await
    }
    async fn logout_marks_for(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LogoutMark>> {
        self.count();
        self.inner.logout_marks_for(issuer, sid, sub, now).await
    }
    async fn purge_logout_marks(&self, now: DateTime<Utc>) -> Result<u64> {
        self.count();
        self.inner.purge_logout_marks(now).await
    }
    async fn active_owners(&self, issuer: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
        self.count();
        self.inner.active_owners(issuer, now).await
    }
    async fn put_owner(&self, owner: &OwnerRecord) -> Result<bool> {
        self.count();
        self.inner.put_owner(owner).await
    }
    async fn owners_changed_since(
        &self,
        after: &OwnerKeyset,
        limit: u32,
    ) -> Result<Vec<OwnerRecord>> {
        self.count();
        self.priced(self.inner.owners_changed_since(after, limit).await)
            .await
    }
    async fn owner(&self, issuer: &str, user_id: &str) -> Result<Option<OwnerRecord>> {
        self.count();
        self.inner.owner(issuer, user_id).await
    }
}
