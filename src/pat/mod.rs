//! Personal access tokens: format, creation rules, cached validation and
//! batched `last_used_at` tracking.

pub mod config;
pub mod exchanged;
pub mod format;
pub mod grant;
pub mod hasher;
pub mod known;
pub mod local_jwt;
pub mod owners;
pub mod rules;
pub mod usage;
pub mod validator;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{Cause, HashVersion, NewToken, Store, StoreError, TokenKind, TokenRecord};

pub use config::{
    ExchangeConfig, JwtMarker, MAX_CACHE_TTL, MAX_LIFETIME_DAYS_LIMIT, PatConfig, PatIssuerKind,
};
pub use format::{Malformed, TokenHash};
pub use grant::PatGrant;
pub use hasher::TokenHasher;
pub use owners::{Owner, OwnerStates, OwnerSyncConfig};
pub use rules::{CreateRequest, RuleError, check_new};
pub use usage::UsageTracker;
pub use validator::{CacheStats, PatOutcome, PatRejection, PatValidator};

/// Why [`create`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// A creation rule was violated (answer 400/409/422).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// `rotated_from` names no token of this user.
    #[error("token to rotate not found")]
    NotFound,
    /// The store failed (answer 503 when `Unavailable`).
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => CreateError::NotFound,
            other => CreateError::Store(other),
        }
    }
}

/// A creation request that passed the rules: what will be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub req: CreateRequest,
    /// Trimmed name.
    pub name: String,
    /// De-duplicated scopes.
    pub scopes: Vec<String>,
    /// Effective expiry (a minted JWT may shorten it, see [`Minted`]).
    pub expires_at: DateTime<Utc>,
}

/// A freshly minted token, not yet stored. The raw token is shown once.
pub struct Minted {
    pub raw: String,
    pub kind: TokenKind,
    pub jti: Option<String>,
    pub display_hint: String,
    /// Shortens [`Prepared::expires_at`] (an exchanged JWT's `exp`): the
    /// stored expiry is the earlier of the two.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("kind", &self.kind)
            .field("jti", &self.jti)
            .field("display_hint", &self.display_hint)
            .finish_non_exhaustive()
    }
}

/// Applies the creation rules (and, for a rotation, checks that the old token
/// is this user's). Nothing is written.
///
/// The active-token limit is checked here, before the insert, so concurrent
/// creations by one user may overshoot it by the number of racing requests.
pub async fn prepare(
    store: &Store,
    cfg: &PatConfig,
    req: CreateRequest,
    now: DateTime<Utc>,
) -> Result<Prepared, CreateError> {
    let mut active = store
        .count_active(&req.user_issuer, &req.user_id, now)
        .await?;
    if let Some(old) = req.rotated_from {
        match store.get(old).await? {
            Some(rec) if rec.user_id == req.user_id && rec.user_issuer == req.user_issuer => {
                // The rotated token is revoked in the same transaction.
                if rec.is_active(now) {
                    active = active.saturating_sub(1);
                }
            }
            _ => return Err(CreateError::NotFound),
        }
    }
    let (name, scopes, expires_at) = check_new(cfg, &req, active, now)?;
    Ok(Prepared {
        req,
        name,
        scopes,
        expires_at,
    })
}

/// Stores a prepared token's hash (rotating `rotated_from` in the same
/// transaction when given), with its events recording `cause`. Returns the
/// raw token and the record.
pub async fn store_minted(
    store: &Store,
    hasher: &TokenHasher,
    p: Prepared,
    minted: Minted,
    now: DateTime<Utc>,
    cause: &Cause,
) -> Result<(String, TokenRecord), CreateError> {
    // Opaque PATs are peppered when a key is set; JWT-kind PATs stay on
    // SHA-256 (signed, and also found by `jti`; see `pat::hasher`).
    let (token_hash, hash_version) = match minted.kind {
        TokenKind::Opaque => hasher.primary(&minted.raw),
        TokenKind::Jwt => (format::hash(&minted.raw), HashVersion::Sha256),
    };
    let new = NewToken {
        id: Uuid::new_v4(),
        user_id: p.req.user_id,
        user_issuer: p.req.user_issuer,
        username: p.req.username,
        name: p.name,
        description: p.req.description.filter(|d| !d.trim().is_empty()),
        token_hash,
        display_hint: minted.display_hint,
        scopes: p.scopes,
        created_at: now,
        // A minted token may only shorten the checked expiry, never extend it.
        expires_at: minted
            .expires_at
            .map_or(p.expires_at, |at| at.min(p.expires_at)),
        rotated_from: None,
        kind: minted.kind,
        jti: minted.jti,
        hash_version,
    };
    let rec = match p.req.rotated_from {
        Some(old) => store.rotate_by(old, new, now, cause).await?,
        None => store.insert_by(new, cause).await?,
    };
    tracing::info!(
        token_id = %rec.id,
        hash = %format::hash_prefix(&rec.token_hash),
        user = %rec.user_id,
        kind = rec.kind.as_str(),
        rotated_from = ?rec.rotated_from,
        "personal access token created"
    );
    Ok((minted.raw, rec))
}

/// Applies the creation rules, generates an opaque token, and stores its hash
/// (rotating `req.rotated_from` in the same transaction when given). Returns
/// the raw token, which is shown once and never stored or logged.
pub async fn create(
    store: &Store,
    cfg: &PatConfig,
    req: CreateRequest,
    now: DateTime<Utc>,
) -> Result<(String, TokenRecord), CreateError> {
    create_by(store, cfg, req, now, &Cause::unspecified()).await
}

/// [`create`], recording `cause` with the token's events.
pub async fn create_by(
    store: &Store,
    cfg: &PatConfig,
    req: CreateRequest,
    now: DateTime<Utc>,
    cause: &Cause,
) -> Result<(String, TokenRecord), CreateError> {
    let p = prepare(store, cfg, req, now).await?;
    let raw = format::generate(&cfg.prefix);
    let minted = Minted {
        display_hint: format::display_hint(&cfg.prefix, &raw),
        raw,
        kind: TokenKind::Opaque,
        jti: None,
        expires_at: None,
    };
    let hasher = TokenHasher::new(cfg.hash_key.as_deref());
    store_minted(store, &hasher, p, minted, now, cause).await
}
