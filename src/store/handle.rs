//! [`Store`]: the handle callers hold. It bounds every backend call by
//! `store.timeout` and counts queries.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use tokio::sync::Notify;

use super::{
    Cause, DenylistKind, LogoutMark, NewToken, OwnerRecord, Result, StoreConfig, StoreError,
    StoreKind, TokenHash, TokenRecord, TokenStore, postgres, sqlite,
};

/// Handle on the token store: cheap to clone, every call bounded by
/// `store.timeout` (migrations by at least 30 s).
#[derive(Clone)]
pub struct Store {
    pub(super) backend: Arc<dyn TokenStore>,
    timeout: Duration,
    queries: Arc<AtomicU64>,
    /// Token lookups only (`find_by_hash`, `find_by_jti`): what the Check
    /// path costs, without background work such as resync or flushes.
    lookups: Arc<AtomicU64>,
    /// Signalled after every write that stored events through this handle
    /// (or a clone): this replica's webhook dispatcher starts at once
    /// instead of at its next poll.
    pub(super) events_written: Arc<Notify>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend.name())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Store {
    /// Opens the configured backend. SQLite opens (and creates) the file;
    /// Postgres only builds the pool, so an unreachable server surfaces as
    /// `Unavailable` on the first call (e.g. [`Store::migrate`]).
    pub async fn connect(cfg: &StoreConfig, data_dir: &Path) -> Result<Store> {
        if let Some(e) = cfg.validate().into_iter().next() {
            return Err(StoreError::Other(e.to_string()));
        }
        let backend: Arc<dyn TokenStore> = match cfg.kind {
            StoreKind::Sqlite => {
                let path = cfg.sqlite_path(data_dir);
                let open = sqlite::SqliteStore::open(path, cfg.timeout);
                Arc::new(bounded(cfg.timeout.max(Duration::from_secs(5)), open).await?)
            }
            StoreKind::Postgres => {
                let url = cfg.url.as_deref().unwrap_or_default();
                Arc::new(postgres::PgStore::new(url, cfg.pool_size, cfg.timeout)?)
            }
        };
        Ok(Store::from_backend(backend, cfg.timeout))
    }

    /// Wraps any backend (tests, fakes).
    pub fn from_backend(backend: Arc<dyn TokenStore>, timeout: Duration) -> Store {
        Store {
            backend,
            timeout,
            queries: Arc::new(AtomicU64::new(0)),
            lookups: Arc::new(AtomicU64::new(0)),
            events_written: Arc::new(Notify::new()),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Number of backend calls made through this store (and its clones).
    pub fn query_count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Number of token lookups (the Check path's store queries).
    pub fn lookup_count(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub(super) async fn call<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        bounded(self.timeout, fut).await
    }

    /// Applies pending migrations (idempotent); returns versions applied now.
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let limit = self.timeout.max(Duration::from_secs(30));
        bounded(limit, self.backend.migrate()).await
    }

    pub async fn ping(&self) -> Result<()> {
        self.call(self.backend.ping()).await
    }

    /// Inserts a token (and its `token.created` event, cause
    /// [`Cause::unspecified`]); a duplicate hash or jti is
    /// [`StoreError::Conflict`].
    pub async fn insert(&self, token: NewToken) -> Result<TokenRecord> {
        self.insert_by(token, &Cause::unspecified()).await
    }

    /// [`Store::insert`] recording `cause` with the event.
    pub async fn insert_by(&self, token: NewToken, cause: &Cause) -> Result<TokenRecord> {
        self.wrote(self.call(self.backend.insert(token, cause)).await)
    }

    pub async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.call(self.backend.find_by_hash(hash)).await
    }

    pub async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.call(self.backend.find_by_jti(jti)).await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        self.call(self.backend.get(id)).await
    }

    /// All of a user's tokens (active, expired, revoked), newest first. A
    /// user is (`issuer`, `sub`).
    pub async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>> {
        self.call(self.backend.list_for_user(issuer, user_id)).await
    }

    /// A user's tokens neither revoked nor expired at `now`.
    pub async fn count_active(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.call(self.backend.count_active(issuer, user_id, now))
            .await
    }

    /// Gives every row without an owner issuer (created before migration 4)
    /// to `issuer`. Called at start-up only when exactly one issuer is
    /// configured: then those rows can only have come from it. With several
    /// issuers they stay unowned and match no caller (list, get, revoke,
    /// rotate and JWT-PAT ownership all compare the issuer), so a same-`sub`
    /// user of another issuer can never take them over.
    pub async fn claim_unowned(&self, issuer: &str) -> Result<u64> {
        self.call(self.backend.claim_unowned(issuer)).await
    }

    /// Revokes one token (idempotent: keeps the first `revoked_at`). Returns the
    /// record, hash included, so the caller can evict/publish; `None` if unknown.
    pub async fn revoke(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<TokenRecord>> {
        self.revoke_by(id, now, &Cause::unspecified()).await
    }

    /// [`Store::revoke`] recording `cause` with its `token.revoked` event.
    pub async fn revoke_by(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>> {
        self.wrote(self.call(self.backend.revoke(id, now, cause)).await)
    }

    /// Revokes every not-yet-revoked token of a user; returns those revoked now.
    pub async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>> {
        self.revoke_all_for_user_by(issuer, user_id, now, &Cause::unspecified())
            .await
    }

    /// [`Store::revoke_all_for_user`] recording `cause` with its events.
    pub async fn revoke_all_for_user_by(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        let r = self
            .call(
                self.backend
                    .revoke_all_for_user(issuer, user_id, now, cause),
            )
            .await;
        self.wrote(r)
    }

    /// In one transaction: revokes `old_id` and inserts `new` with
    /// `rotated_from = old_id`. `NotFound` if the old token does not exist or
    /// belongs to another owner (issuer, sub); `Conflict` if it is already revoked.
    pub async fn rotate(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
    ) -> Result<TokenRecord> {
        self.rotate_by(old_id, new, now, &Cause::unspecified())
            .await
    }

    /// [`Store::rotate`] recording `cause` with its events.
    pub async fn rotate_by(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<TokenRecord> {
        self.wrote(
            self.call(self.backend.rotate(old_id, new, now, cause))
                .await,
        )
    }

    /// Revokes every token linked to `id` through `rotated_from`, in both
    /// directions (refresh-reuse detection). Returns the whole chain.
    pub async fn revoke_chain(&self, id: Uuid, now: DateTime<Utc>) -> Result<Vec<TokenRecord>> {
        self.revoke_chain_by(id, now, &Cause::system("reuse_detected"))
            .await
    }

    /// [`Store::revoke_chain`] recording `cause` with its events.
    pub async fn revoke_chain_by(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.wrote(self.call(self.backend.revoke_chain(id, now, cause)).await)
    }

    /// Moves `last_used_at` forward (never back) for a batch, in ONE backend
    /// statement. Duplicate ids are collapsed to their latest time. Returns
    /// the number of rows updated.
    pub async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut latest: std::collections::HashMap<Uuid, DateTime<Utc>> = Default::default();
        for &(id, at) in batch {
            let e = latest.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
        let dedup: Vec<_> = latest.into_iter().collect();
        self.call(self.backend.touch_last_used(&dedup)).await
    }

    /// Denies JWTs by `jti` or `sid` until `expires_at` (upsert; keeps the
    /// later expiry, and moves `created_at` to now when it extends it, so
    /// [`Store::jwt_denied_since`] sees the change).
    pub async fn deny_jwt(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let now = Utc::now();
        self.call(self.backend.deny_jwt(kind, value, expires_at, now))
            .await
    }

    /// [`Store::deny_jwt`], recording its `jwt.revoked` event with `cause`.
    pub async fn deny_jwt_by(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        cause: &super::Cause,
    ) -> Result<()> {
        let now = Utc::now();
        let write = self
            .backend
            .deny_jwt_by(kind, value, expires_at, now, cause);
        self.wrote(self.call(write).await)
    }

    /// Is there an unexpired deny-list entry for this `jti` or `sid`?
    pub async fn is_jwt_denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if jti.is_none() && sid.is_none() {
            return Ok(false);
        }
        self.call(self.backend.is_jwt_denied(jti, sid, now)).await
    }

    /// Deletes deny-list entries expired at `now`; returns how many.
    pub async fn purge_jwt_denylist(&self, now: DateTime<Utc>) -> Result<u64> {
        self.call(self.backend.purge_jwt_denylist(now)).await
    }

    /// `created_at` of the first token of `id`'s rotation chain.
    pub async fn chain_origin(&self, id: Uuid) -> Result<Option<DateTime<Utc>>> {
        self.call(self.backend.chain_origin(id)).await
    }

    /// Owners of active PATs of `issuer` (owner sync reads only these).
    pub async fn active_owners(&self, issuer: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
        self.call(self.backend.active_owners(issuer, now)).await
    }

    /// Writes an owner's state; true when state or scopes changed (with
    /// `owner.suspended` / `owner.reinstated` when it moved between
    /// enabled and disabled).
    pub async fn put_owner(&self, owner: &OwnerRecord) -> Result<bool> {
        self.wrote(self.call(self.backend.put_owner(owner)).await)
    }

    /// Takes or renews a lease (see [`TokenStore::take_lease`]): true when
    /// `holder` holds `name` until `lease_until` (Postgres: its own clock).
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        self.call(self.backend.take_lease(name, holder, now, lease_until))
            .await
    }

    /// Ends `holder`'s lease `name`, if it still holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.call(self.backend.release_lease(name, holder)).await
    }

    /// One owner's stored state.
    pub async fn owner(&self, issuer: &str, user_id: &str) -> Result<Option<OwnerRecord>> {
        self.call(self.backend.owner(issuer, user_id)).await
    }

    /// Writes a back-channel logout mark (upsert; see [`LogoutMark`]).
    pub async fn mark_logout(&self, mark: &LogoutMark) -> Result<()> {
        self.call(self.backend.mark_logout(mark)).await
    }

    /// [`Store::mark_logout`], recording its `jwt.logged_out` event (what
    /// the logout token said in `claims`, who sent it in `cause`).
    pub async fn mark_logout_by(
        &self,
        mark: &LogoutMark,
        claims: &super::events::LogoutClaims,
        cause: &super::Cause,
    ) -> Result<()> {
        let write = self.backend.mark_logout_by(mark, claims, cause);
        self.wrote(self.call(write).await)
    }

    /// Unexpired logout marks of `issuer` naming this `sid` or `sub`.
    pub async fn logout_marks_for(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LogoutMark>> {
        self.call(self.backend.logout_marks_for(issuer, sid, sub, now))
            .await
    }

    /// Deletes logout marks expired at `now`; returns how many.
    pub async fn purge_logout_marks(&self, now: DateTime<Utc>) -> Result<u64> {
        self.call(self.backend.purge_logout_marks(now)).await
    }
}

async fn bounded<T>(limit: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "store call timed out after {limit:?}"
        ))),
    }
}
