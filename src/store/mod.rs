//! Token store: personal access tokens and the JWT deny-list, on SQLite or
//! Postgres.
//!
//! Both backends run the same versioned migrations ([`MIGRATIONS`]); the SQL
//! differs per dialect but versions move in lock-step. Column conventions:
//!
//! | column | Postgres | SQLite |
//! | --- | --- | --- |
//! | `id`, `rotated_from` | `uuid` | `TEXT` (lowercase hyphenated) |
//! | `token_hash` | `bytea` (32 bytes, unique) | `BLOB` (32 bytes, unique) |
//! | `scopes` | `text[]` | `TEXT` holding a JSON array of strings |
//! | timestamps | `timestamptz` | `INTEGER` unix microseconds, UTC |
//!
//! Every call through [`Store`] is bounded by `store.timeout`; a timeout or a
//! lost connection is [`StoreError::Unavailable`], which callers must turn
//! into a 503, never an allow.

mod config;
mod known;
mod postgres;
mod sqlite;

pub use config::{StoreConfig, StoreKind, redact_url};

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

/// SHA-256 of a token (see `pat::format::hash`).
pub type TokenHash = [u8; 32];

/// `(version, name, sqlite sql, postgres sql)`, applied in order.
pub const MIGRATIONS: &[(u32, &str, &str, &str)] = &[
    (
        1,
        "personal_access_tokens",
        include_str!("migrations/sqlite/0001_personal_access_tokens.sql"),
        include_str!("migrations/postgres/0001_personal_access_tokens.sql"),
    ),
    (
        2,
        "jwt_denylist",
        include_str!("migrations/sqlite/0002_jwt_denylist.sql"),
        include_str!("migrations/postgres/0002_jwt_denylist.sql"),
    ),
    (
        3,
        "token_hash_version",
        include_str!("migrations/sqlite/0003_token_hash_version.sql"),
        include_str!("migrations/postgres/0003_token_hash_version.sql"),
    ),
    (
        4,
        "token_owner_issuer",
        include_str!("migrations/sqlite/0004_token_owner_issuer.sql"),
        include_str!("migrations/postgres/0004_token_owner_issuer.sql"),
    ),
];

/// How a row's `token_hash` was computed (`hash_version` column, migration
/// 0003; see `pat::hasher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashVersion {
    /// SHA-256 of the token: rows from before 0003, JWT-kind PATs, and
    /// opaque PATs created without `pat.hash_key`.
    #[default]
    Sha256,
    /// HMAC-SHA256(`pat.hash_key`, token).
    Hmac,
}

impl HashVersion {
    /// Column value.
    pub fn as_i16(self) -> i16 {
        match self {
            HashVersion::Sha256 => 1,
            HashVersion::Hmac => 2,
        }
    }

    /// Parses a column value.
    pub fn from_i16(v: i16) -> Option<Self> {
        match v {
            1 => Some(HashVersion::Sha256),
            2 => Some(HashVersion::Hmac),
            _ => None,
        }
    }
}

/// Store failures. Display never includes a raw token (the store never sees one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Connection failure, pool exhaustion or timeout: answer 503.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or state conflict (duplicate hash/jti, rotating a revoked token).
    #[error("token store conflict: {0}")]
    Conflict(String),
    /// The referenced token does not exist.
    #[error("token not found")]
    NotFound,
    /// Anything else (bad data, SQL error).
    #[error("token store error: {0}")]
    Other(String),
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How a token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// `<prefix><body><checksum>`, looked up by hash.
    #[default]
    Opaque,
    /// A self-contained JWT, tracked by `jti`.
    Jwt,
}

impl TokenKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Opaque => "opaque",
            TokenKind::Jwt => "jwt",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "opaque" => Some(TokenKind::Opaque),
            "jwt" => Some(TokenKind::Jwt),
            _ => None,
        }
    }
}

/// Deny-list entry kind for revoked JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyKind {
    /// A single JWT by its `jti` claim.
    Jti,
    /// Every JWT of a session by its `sid` claim.
    Sid,
}

impl DenyKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyKind::Jti => "jti",
            DenyKind::Sid => "sid",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(DenyKind::Jti),
            "sid" => Some(DenyKind::Sid),
            _ => None,
        }
    }
}

/// A JWT deny-list row, for loading and resyncing in-memory deny sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyEntry {
    pub kind: DenyKind,
    pub value: String,
    pub expires_at: DateTime<Utc>,
    /// When the entry was written or its expiry last extended (the resync watermark).
    pub changed_at: DateTime<Utc>,
}

/// A stored token (never the raw token: only its hash).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    /// Owner's `sub`.
    pub user_id: String,
    pub username: String,
    pub name: String,
    pub description: Option<String>,
    pub token_hash: TokenHash,
    pub display_hint: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rotated_from: Option<Uuid>,
    pub kind: TokenKind,
    pub jti: Option<String>,
    /// Owner's issuer (`iss`); the owner is (`user_issuer`, `user_id`).
    /// Empty for rows older than migration 4 not yet claimed at start-up:
    /// such a row belongs to no caller (see [`Store::claim_unowned`]).
    pub user_issuer: String,
    /// How `token_hash` was computed.
    pub hash_version: HashVersion,
}

impl TokenRecord {
    /// Not revoked and not expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

fn short_hash(h: &TokenHash) -> String {
    hex::encode(&h[..4])
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("name", &self.name)
            .field("description", &self.description)
            .field(
                "token_hash",
                &format_args!("{}…", short_hash(&self.token_hash)),
            )
            .field("display_hint", &self.display_hint)
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &self.revoked_at)
            .field("rotated_from", &self.rotated_from)
            .field("kind", &self.kind)
            .field("jti", &self.jti)
            .field("user_issuer", &self.user_issuer)
            .field("hash_version", &self.hash_version)
            .finish()
    }
}

/// A token to insert.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: Uuid,
    pub user_id: String,
    pub username: String,
    pub name: String,
    pub description: Option<String>,
    pub token_hash: TokenHash,
    pub display_hint: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Ignored by [`Store::rotate`], which sets it to the old id.
    pub rotated_from: Option<Uuid>,
    pub kind: TokenKind,
    pub jti: Option<String>,
    /// Owner's issuer (`iss`).
    pub user_issuer: String,
    /// How `token_hash` was computed.
    pub hash_version: HashVersion,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("user_issuer", &self.user_issuer)
            .field("name", &self.name)
            .field(
                "token_hash",
                &format_args!("{}…", short_hash(&self.token_hash)),
            )
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("rotated_from", &self.rotated_from)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A storage backend. [`Store`] adds timeouts and query counting on top;
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
    /// One statement for the whole batch; `ids` are distinct.
    async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64>;
    async fn deny_jwt(
        &self,
        kind: DenyKind,
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
}

/// Handle on the token store: cheap to clone, every call bounded by
/// `store.timeout` (migrations by at least 30 s).
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn TokenStore>,
    timeout: Duration,
    queries: Arc<AtomicU64>,
    /// Token lookups only (`find_by_hash`, `find_by_jti`): what the Check
    /// path costs, without background work such as resync or flushes.
    lookups: Arc<AtomicU64>,
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
        cfg.validate().map_err(StoreError::Other)?;
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

    async fn call<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
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

    /// Inserts a token; a duplicate hash or jti is [`StoreError::Conflict`].
    pub async fn insert(&self, token: NewToken) -> Result<TokenRecord> {
        self.call(self.backend.insert(token)).await
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
        self.call(self.backend.revoke(id, now)).await
    }

    /// Revokes every not-yet-revoked token of a user; returns those revoked now.
    pub async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>> {
        self.call(self.backend.revoke_all_for_user(issuer, user_id, now))
            .await
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
        self.call(self.backend.rotate(old_id, new, now)).await
    }

    /// Revokes every token linked to `id` through `rotated_from`, in both
    /// directions (refresh-reuse detection). Returns the whole chain.
    pub async fn revoke_chain(&self, id: Uuid, now: DateTime<Utc>) -> Result<Vec<TokenRecord>> {
        self.call(self.backend.revoke_chain(id, now)).await
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
        kind: DenyKind,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let now = Utc::now();
        self.call(self.backend.deny_jwt(kind, value, expires_at, now))
            .await
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

    /// Deny-list entries unexpired at `now` whose `created_at` (write or
    /// last extension) is after `watermark`, ordered by it.
    pub async fn jwt_denied_since(
        &self,
        watermark: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<DenyEntry>> {
        self.call(self.backend.jwt_denied_since(watermark, now))
            .await
    }

    /// Hashes of tokens with `revoked_at > watermark`, ordered by
    /// `(revoked_at, id)`, for cross-replica cache resync.
    pub async fn revoked_since(
        &self,
        watermark: DateTime<Utc>,
    ) -> Result<Vec<(TokenHash, DateTime<Utc>)>> {
        self.call(self.backend.revoked_since(watermark)).await
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

/// Sorts a chain/list the same way on both backends: newest first.
fn sort_newest_first(v: &mut [TokenRecord]) {
    v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
}
