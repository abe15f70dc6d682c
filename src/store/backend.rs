//! [`TokenStore`]: what a storage backend implements (SQLite, Postgres, and
//! test doubles); [`super::Store`] wraps it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::{
    AttemptOutcome, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord, EventQuery,
    EventRecord, HookFilter, LogoutClaims,
};
use super::{
    Cause, DenyEntry, DenyKeyset, DenylistKind, HashAt, LogoutKeyset, LogoutMark, NewToken,
    OwnerKeyset, OwnerRecord, PatKeyset, Result, StoreError, TokenHash, TokenQuery, TokenRecord,
    Usage,
};

fn unsupported<T>(what: &str) -> Result<T> {
    Err(StoreError::Other(format!(
        "this store does not support {what}"
    )))
}

/// A storage backend. [`Store`](super::Store) adds timeouts and query counting on top;
/// implement this for test doubles.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Backend name for logs: `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// Applies pending migrations; returns the versions applied now.
    async fn migrate(&self) -> Result<Vec<u32>>;
    async fn ping(&self) -> Result<()>;
    /// Inserts a token and its `token.created` event (one transaction).
    async fn insert(&self, token: NewToken, cause: &Cause) -> Result<TokenRecord>;
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>>;
    async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>>;
    async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>>;
    async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>>;
    async fn count_active(&self, issuer: &str, user_id: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Gives rows with an empty `user_issuer` to `issuer`; returns how many.
    async fn claim_unowned(&self, issuer: &str) -> Result<u64>;
    /// Revokes one token with its `token.revoked` event (none when it was
    /// already revoked).
    async fn revoke(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>>;
    /// Revokes a user's active tokens, one `token.revoked` event each.
    async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>>;
    /// Rotation with its `token.rotated` and `token.created` events.
    async fn rotate(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<TokenRecord>;
    /// Revokes a rotation chain with `token.reuse_detected` (about `id`)
    /// and a `token.revoked` event per token revoked now.
    async fn revoke_chain(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>>;
    /// `created_at` of the first token of `id`'s rotation chain (`id`'s own
    /// when it was never rotated into); `None` when `id` does not exist.
    /// The default refuses (rotating itself then answers 503).
    async fn chain_origin(&self, _id: Uuid) -> Result<Option<DateTime<Utc>>> {
        Err(StoreError::Other(
            "this store does not support chain_origin".into(),
        ))
    }
    /// One statement for the whole batch; `ids` are distinct.
    async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64>;
    async fn deny_jwt(
        &self,
        kind: DenylistKind,
        value: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn is_jwt_denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn purge_jwt_denylist(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Up to `limit` revoked tokens after `after` in `(revoked_at, id)`
    /// order (one page of the resync loop's read, `store::page`).
    async fn revoked_since(&self, after: &PatKeyset, limit: u32) -> Result<Vec<HashAt>>;
    /// Moves a legacy row (`id`, SHA-256 `old`, version 1) to `new`
    /// (HMAC, version 2). Returns the row as it now is (revoked or not),
    /// `None` when it no longer matches (already upgraded or gone). The
    /// default refuses (a lookup needing it answers 503).
    async fn upgrade_hash(
        &self,
        _id: Uuid,
        _old: &TokenHash,
        _new: &TokenHash,
    ) -> Result<Option<TokenRecord>> {
        Err(StoreError::Other(
            "this store does not support upgrade_hash".into(),
        ))
    }
    /// `(id, token_hash)` of every opaque row still hashed as version 1
    /// (for `portcullis token rekey`). The default refuses.
    async fn legacy_opaque_hashes(&self) -> Result<Vec<(Uuid, TokenHash)>> {
        Err(StoreError::Other(
            "this store does not support legacy_opaque_hashes".into(),
        ))
    }
    /// Up to `limit` `(id, hash)` of tokens neither revoked nor expired at
    /// `now` with an id above `after`, by id (a page of the known-hash
    /// set's full load). The default refuses, so a test double without it
    /// keeps every lookup going to the store, as before the set existed.
    async fn active_hashes(
        &self,
        _after: Uuid,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Vec<(Uuid, TokenHash)>> {
        Err(StoreError::Other(
            "this store does not support active_hashes".into(),
        ))
    }
    /// Up to `limit` tokens neither revoked nor expired at `now`, after
    /// `after` in `(created_at, id)` order. Default refuses.
    async fn created_since(
        &self,
        _after: &PatKeyset,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Vec<HashAt>> {
        Err(StoreError::Other(
            "this store does not support created_since".into(),
        ))
    }
    /// Up to `limit` unexpired deny-list entries after `after` in
    /// `(changed_at, kind, value)` order. The default refuses, so a test
    /// double without a deny-list fails closed (the deny set never reports
    /// itself loaded).
    async fn jwt_denied_since(
        &self,
        _after: &DenyKeyset,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Vec<DenyEntry>> {
        Err(StoreError::Other(
            "this store does not support jwt_denied_since".into(),
        ))
    }
    /// [`TokenStore::deny_jwt`] and its `jwt.revoked` event, in one
    /// transaction. The default refuses.
    async fn deny_jwt_by(
        &self,
        _kind: DenylistKind,
        _value: &str,
        _expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
        _cause: &Cause,
    ) -> Result<()> {
        unsupported("deny_jwt_by")
    }
    /// [`TokenStore::mark_logout`] and its `jwt.logged_out` event, in one
    /// transaction. The default refuses.
    async fn mark_logout_by(
        &self,
        _mark: &LogoutMark,
        _claims: &LogoutClaims,
        _cause: &Cause,
    ) -> Result<()> {
        unsupported("mark_logout_by")
    }
    /// Writes a back-channel logout mark (upsert keeping the later
    /// `not_before` and `expires_at`). The default refuses.
    async fn mark_logout(&self, _mark: &LogoutMark) -> Result<()> {
        Err(StoreError::Other(
            "this store does not support mark_logout".into(),
        ))
    }
    /// Up to `limit` unexpired logout marks after `after` in
    /// `(changed_at, issuer, kind, value)` order. The default refuses, so a
    /// test double fails closed (marks never load).
    async fn logout_marks_since(
        &self,
        _after: &LogoutKeyset,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Vec<LogoutMark>> {
        Err(StoreError::Other(
            "this store does not support logout_marks_since".into(),
        ))
    }
    /// Unexpired marks of `issuer` naming this `sid` or `sub` (the Check
    /// fallback while the in-memory marks are not loaded). Default refuses.
    async fn logout_marks_for(
        &self,
        _issuer: &str,
        _sid: Option<&str>,
        _sub: &str,
        _now: DateTime<Utc>,
    ) -> Result<Vec<LogoutMark>> {
        Err(StoreError::Other(
            "this store does not support logout_marks_for".into(),
        ))
    }
    /// Deletes marks expired at `now`; returns how many.
    async fn purge_logout_marks(&self, _now: DateTime<Utc>) -> Result<u64> {
        Ok(0)
    }
    /// Owners of active (unrevoked, unexpired) PATs of `issuer`. The
    /// default refuses (owner sync then skips the pass).
    async fn active_owners(&self, _issuer: &str, _now: DateTime<Utc>) -> Result<Vec<String>> {
        Err(StoreError::Other(
            "this store does not support active_owners".into(),
        ))
    }
    /// Writes an owner's state; returns whether state or scopes changed
    /// (a new owner counts as changed). A move to disabled writes
    /// `owner.suspended`, back to enabled `owner.reinstated`, in the same
    /// transaction. The default refuses.
    /// Takes or renews the lease `name` for `holder` until `lease_until`,
    /// when it is free, run out (by `now`) or already `holder`'s; true when
    /// `holder` holds it afterwards. Postgres takes only the length
    /// (`lease_until - now`) and sets and compares on its own clock; SQLite
    /// is one host and uses `now`.
    async fn take_lease(
        &self,
        _name: &str,
        _holder: &str,
        _now: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        Err(StoreError::Other(
            "this store does not support take_lease".into(),
        ))
    }
    /// Ends `holder`'s lease `name` at once (a replica shutting down), so
    /// another replica need not wait for it to run out.
    async fn release_lease(&self, _name: &str, _holder: &str) -> Result<()> {
        Err(StoreError::Other(
            "this store does not support release_lease".into(),
        ))
    }
    async fn put_owner(&self, _owner: &OwnerRecord) -> Result<bool> {
        Err(StoreError::Other(
            "this store does not support put_owner".into(),
        ))
    }
    /// Up to `limit` owners after `after` in `(changed_at, issuer,
    /// user_id)` order (`changed_at` moves when state or scopes change).
    /// The default refuses (no owner state is applied).
    async fn owners_changed_since(
        &self,
        _after: &OwnerKeyset,
        _limit: u32,
    ) -> Result<Vec<OwnerRecord>> {
        Err(StoreError::Other(
            "this store does not support owners_changed_since".into(),
        ))
    }
    /// One owner's stored state. The default refuses.
    async fn owner(&self, _issuer: &str, _user_id: &str) -> Result<Option<OwnerRecord>> {
        Err(StoreError::Other(
            "this store does not support owner".into(),
        ))
    }

    /// Revokes the tokens stored under any of `hashes` (a leak report):
    /// `token.leaked` for each found, `token.revoked` for those revoked now,
    /// one transaction. Returns the tokens found (as they now are). The
    /// same statements run for every hash, found or not.
    async fn revoke_hashes(
        &self,
        _hashes: &[TokenHash],
        _now: DateTime<Utc>,
        _cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        unsupported("revoke_hashes")
    }
    /// Writes the due `token.expiring` notices (thresholds in seconds, at
    /// most one notice per token and threshold; only the most urgent one
    /// when several are due) and `token.expired`. Returns how many.
    async fn expiry_notices(&self, _now: DateTime<Utc>, _thresholds: &[i64]) -> Result<usize> {
        unsupported("expiry_notices")
    }
    /// Advances each of `hooks` by up to `limit` events from its own
    /// cursor (created at the webhook's first sighting: the events written
    /// since `since`), creating a delivery for each event it wants; returns
    /// the most events any webhook advanced by.
    async fn fan_out(
        &self,
        _hooks: &[HookFilter],
        _now: DateTime<Utc>,
        _since: DateTime<Utc>,
        _limit: u32,
    ) -> Result<usize> {
        unsupported("fan_out")
    }
    /// Leases up to `limit` due deliveries of `hooks` to `owner` until
    /// `lease_until` (each claimed by one caller only), counting an attempt.
    /// Due: `next_attempt_at <= now` and no lease running. Postgres takes
    /// only the lease's length (`lease_until - now`) and sets and compares
    /// leases on its own clock (replicas' clocks may disagree); SQLite is
    /// one host and uses `now`.
    async fn claim_deliveries(
        &self,
        _owner: &str,
        _hooks: &[String],
        _now: DateTime<Utc>,
        _lease_until: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        unsupported("claim_deliveries")
    }
    /// Records an attempt's outcome, if `owner` still holds the lease.
    async fn finish_delivery(
        &self,
        _id: Uuid,
        _owner: &str,
        _outcome: &AttemptOutcome,
        _now: DateTime<Utc>,
    ) -> Result<bool> {
        unsupported("finish_delivery")
    }
    /// Dead-letters pending, unleased deliveries of events older than
    /// `older_than`; returns how many. (Unleased: as in
    /// [`TokenStore::claim_deliveries`], on Postgres's clock there.)
    async fn expire_deliveries(
        &self,
        _older_than: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<u64> {
        unsupported("expire_deliveries")
    }
    /// Deliveries, newest event first.
    async fn deliveries(&self, _q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        unsupported("deliveries")
    }
    /// Pending and dead deliveries.
    async fn delivery_counts(&self) -> Result<DeliveryCounts> {
        unsupported("delivery_counts")
    }
    /// Events, newest first.
    async fn events(&self, _q: &EventQuery) -> Result<Vec<EventRecord>> {
        unsupported("events")
    }
    /// Deletes events (and their deliveries) older than `before`.
    async fn purge_events(&self, _before: DateTime<Utc>) -> Result<u64> {
        unsupported("purge_events")
    }
    /// The admin inventory: tokens matching `q`, newest first.
    async fn tokens(&self, _q: &TokenQuery) -> Result<Vec<TokenRecord>> {
        unsupported("tokens")
    }
    /// A usage flush: `last_used_at` forward (never back) with the
    /// client address and user agent of that use, one transaction; with
    /// `new_ip`, a use from a network the token was not used from before
    /// writes `token.new_ip` (the first network of a token is not new).
    /// The default writes only `last_used_at`.
    async fn touch_usage(&self, batch: &[Usage], _new_ip: bool) -> Result<u64> {
        let at: Vec<(Uuid, DateTime<Utc>)> = batch.iter().map(|u| (u.id, u.at)).collect();
        self.touch_last_used(&at).await
    }
}
