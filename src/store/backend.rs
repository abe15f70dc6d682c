//! [`TokenStore`]: what a storage backend implements (SQLite, Postgres, and
//! test doubles); [`super::Store`] wraps it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    DenyEntry, DenylistKind, LogoutMark, NewToken, OwnerRecord, Result, StoreError, TokenHash,
    TokenRecord,
};

/// A storage backend. [`Store`](super::Store) adds timeouts and query counting on top;
/// implement this for test doubles.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Backend name for logs: `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// Applies pending migrations; returns the versions applied now.
    async fn migrate(&self) -> Result<Vec<u32>>;
    async fn ping(&self) -> Result<()>;
    async fn insert(&self, token: NewToken) -> Result<TokenRecord>;
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>>;
    async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>>;
    async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>>;
    async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>>;
    async fn count_active(&self, issuer: &str, user_id: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Gives rows with an empty `user_issuer` to `issuer`; returns how many.
    async fn claim_unowned(&self, issuer: &str) -> Result<u64>;
    async fn revoke(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<TokenRecord>>;
    async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>>;
    async fn rotate(&self, old_id: Uuid, new: NewToken, now: DateTime<Utc>) -> Result<TokenRecord>;
    async fn revoke_chain(&self, id: Uuid, now: DateTime<Utc>) -> Result<Vec<TokenRecord>>;
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
    async fn revoked_since(
        &self,
        watermark: DateTime<Utc>,
    ) -> Result<Vec<(TokenHash, DateTime<Utc>)>>;
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
    /// Hashes of tokens neither revoked nor expired at `now` (the known-hash
    /// set). The default refuses, so a test double without it keeps every
    /// lookup going to the store, as before the set existed.
    async fn active_hashes(&self, _now: DateTime<Utc>) -> Result<Vec<TokenHash>> {
        Err(StoreError::Other(
            "this store does not support active_hashes".into(),
        ))
    }
    /// Hashes and `created_at` of tokens created after `watermark` and
    /// neither revoked nor expired at `now`, oldest first. Default refuses.
    async fn created_since(
        &self,
        _watermark: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<Vec<(TokenHash, DateTime<Utc>)>> {
        Err(StoreError::Other(
            "this store does not support created_since".into(),
        ))
    }
    /// Unexpired deny-list entries changed after `watermark`, oldest first.
    /// The default refuses, so a test double without a deny-list fails
    /// closed (the deny set never reports itself loaded).
    async fn jwt_denied_since(
        &self,
        _watermark: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<Vec<DenyEntry>> {
        Err(StoreError::Other(
            "this store does not support jwt_denied_since".into(),
        ))
    }
    /// Writes a back-channel logout mark (upsert keeping the later
    /// `not_before` and `expires_at`). The default refuses.
    async fn mark_logout(&self, _mark: &LogoutMark) -> Result<()> {
        Err(StoreError::Other(
            "this store does not support mark_logout".into(),
        ))
    }
    /// Unexpired logout marks changed after `watermark`, oldest first. The
    /// default refuses, so a test double fails closed (marks never load).
    async fn logout_marks_since(
        &self,
        _watermark: DateTime<Utc>,
        _now: DateTime<Utc>,
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
    /// (a new owner counts as changed). The default refuses.
    async fn put_owner(&self, _owner: &OwnerRecord) -> Result<bool> {
        Err(StoreError::Other(
            "this store does not support put_owner".into(),
        ))
    }
    /// Owners whose state or scopes changed after `watermark`, oldest
    /// first. The default refuses (no owner state is applied).
    async fn owners_changed_since(&self, _watermark: DateTime<Utc>) -> Result<Vec<OwnerRecord>> {
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
}
