//! Personal access tokens: format, creation rules, cached validation and
//! batched `last_used_at` tracking.

pub mod exchanged;
pub mod format;
pub mod hasher;
pub mod known;
pub mod local_jwt;
pub mod rules;
pub mod usage;
pub mod validator;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::scope::{self, ScopeRole};
use crate::store::{HashVersion, NewToken, Store, StoreError, TokenKind, TokenRecord};

pub use format::{Malformed, TokenHash};
pub use hasher::TokenHasher;
pub use rules::{CreateRequest, RuleError, check_new};
pub use usage::UsageTracker;
pub use validator::{CacheStats, PatOutcome, PatValidator};

/// Largest accepted `pat.max_lifetime_days` (100 years).
pub const MAX_LIFETIME_DAYS_LIMIT: u32 = 36_500;

/// Largest accepted `pat.cache_ttl`.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// `pat:` configuration. `Debug` redacts `local_jwt_key` and `hash_key`.
#[derive(Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatConfig {
    /// Token prefix, e.g. `pat_` (1–32 chars of `[A-Za-z0-9_-]`).
    pub prefix: String,
    /// Lifetime in days when a creation request gives no `expires_at`.
    pub default_lifetime_days: u32,
    /// Longest lifetime in days a token may be created with.
    pub max_lifetime_days: u32,
    /// Most active (neither revoked nor expired) tokens one user may hold.
    pub max_active_per_user: u32,
    /// Granted scopes a PAT's scopes must lie within (`tokens:*` is never grantable).
    pub grantable_scopes: Vec<String>,
    /// How long a valid (or revoked) lookup stays cached, e.g. `5m`.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long an unknown-token lookup stays cached, e.g. `30s`.
    #[serde(with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// Maximum number of cached lookups.
    pub cache_capacity: u64,
    /// How often batched `last_used_at` updates are written, e.g. `60s`.
    #[serde(with = "humantime_serde")]
    pub last_used_flush: Duration,
    /// Who mints PATs: `opaque` (default), `keycloak-exchange` or `local-jwt` (dev only).
    pub issuer: PatIssuerKind,
    /// RFC 8693 token exchange settings, for `issuer: keycloak-exchange`.
    pub exchange: ExchangeConfig,
    /// The claim that marks an IdP-signed JWT as a PAT (default `token_use` = `pat`).
    pub jwt_marker: JwtMarker,
    /// HS256 key for `issuer: local-jwt` (development only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_jwt_key: Option<String>,
    /// Server-side pepper (at least 32 bytes; prefer
    /// `PORTCULLIS__PAT__HASH_KEY`): opaque PATs are stored as
    /// HMAC-SHA256(key, token), so write access to the database alone
    /// cannot plant a usable token. Unset: plain SHA-256, with a warning at
    /// start. Every replica must use the same key; changing it invalidates
    /// tokens created or upgraded under the old one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
}

impl std::fmt::Debug for PatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatConfig")
            .field("prefix", &self.prefix)
            .field("default_lifetime_days", &self.default_lifetime_days)
            .field("max_lifetime_days", &self.max_lifetime_days)
            .field("max_active_per_user", &self.max_active_per_user)
            .field("grantable_scopes", &self.grantable_scopes)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("last_used_flush", &self.last_used_flush)
            .field("issuer", &self.issuer)
            .field("exchange", &self.exchange)
            .field("jwt_marker", &self.jwt_marker)
            .field(
                "local_jwt_key",
                &self.local_jwt_key.as_ref().map(|_| "<redacted>"),
            )
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `pat.issuer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatIssuerKind {
    /// Random opaque tokens (`<prefix><body><checksum>`).
    #[default]
    Opaque,
    /// Keycloak-signed JWTs obtained by RFC 8693 token exchange.
    KeycloakExchange,
    /// HS256 JWTs signed by `pat.local_jwt_key`; refused outside `--dev`.
    LocalJwt,
}

/// `pat.exchange`: the confidential client that exchanges a user's token.
#[derive(Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Keycloak token endpoint, `{issuer}/protocol/openid-connect/token`.
    pub token_url: Option<String>,
    /// The PAT-issuer client id.
    pub client_id: Option<String>,
    /// Its secret; prefer `PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET`.
    pub client_secret: Option<String>,
    /// `audience` requested (optional); exchanged tokens carrying it are
    /// PATs, so it must never be an audience login tokens carry: it may not
    /// equal any `issuers[].audiences` entry (checked by `Config::validate`).
    /// Without it the PAT keeps the subject token's `aud` and is recognised
    /// by `jwt_marker` alone.
    pub audience: Option<String>,
    /// Optional `scope` requested.
    pub scope: Option<String>,
}

/// The client secret is never printed.
impl std::fmt::Debug for ExchangeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeConfig")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .finish()
    }
}

/// `pat.jwt_marker`: `claim` = `value` marks an IdP-signed JWT as a PAT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtMarker {
    /// Claim name. Default `token_use`.
    pub claim: String,
    /// Claim value. Default `pat`.
    pub value: String,
}

impl Default for JwtMarker {
    fn default() -> Self {
        JwtMarker {
            claim: "token_use".into(),
            value: "pat".into(),
        }
    }
}

impl Default for PatConfig {
    fn default() -> Self {
        Self {
            prefix: "pat_".into(),
            default_lifetime_days: 30,
            max_lifetime_days: 365,
            max_active_per_user: 100,
            grantable_scopes: vec!["*:*".into()],
            cache_ttl: Duration::from_secs(300),
            negative_cache_ttl: Duration::from_secs(30),
            cache_capacity: 100_000,
            last_used_flush: Duration::from_secs(60),
            issuer: PatIssuerKind::Opaque,
            exchange: ExchangeConfig::default(),
            jwt_marker: JwtMarker::default(),
            local_jwt_key: None,
            hash_key: None,
        }
    }
}

impl PatConfig {
    /// Checks the values; messages name the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.prefix;
        if p.is_empty()
            || p.len() > 32
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "pat.prefix: must be 1-32 characters of [A-Za-z0-9_-], got {p:?}"
            ));
        }
        if self.default_lifetime_days == 0 {
            return Err("pat.default_lifetime_days: must be >= 1".into());
        }
        if self.max_lifetime_days < self.default_lifetime_days {
            return Err(format!(
                "pat.max_lifetime_days: must be >= default_lifetime_days ({})",
                self.default_lifetime_days
            ));
        }
        // Bounded so `now + max_lifetime_days` always stays a valid date.
        if self.max_lifetime_days > MAX_LIFETIME_DAYS_LIMIT {
            return Err(format!(
                "pat.max_lifetime_days: must be <= {MAX_LIFETIME_DAYS_LIMIT} (100 years), got {}",
                self.max_lifetime_days
            ));
        }
        if self.max_active_per_user == 0 {
            return Err("pat.max_active_per_user: must be >= 1".into());
        }
        if self.grantable_scopes.is_empty() {
            return Err("pat.grantable_scopes: must list at least one scope".into());
        }
        for s in &self.grantable_scopes {
            scope::validate(s, ScopeRole::Granted)
                .map_err(|e| format!("pat.grantable_scopes: {e}"))?;
            if scope::never_grantable(s) {
                return Err(format!(
                    "pat.grantable_scopes: {s:?} names the tokens resource, which is never grantable"
                ));
            }
        }
        if self.cache_ttl.is_zero() {
            return Err("pat.cache_ttl: must be > 0".into());
        }
        // Bounds how long a missed revocation message can leave a token
        // valid here, and keeps moka's caches (which refuse time-to-live
        // values over 1000 years by panicking) buildable.
        if self.cache_ttl > MAX_CACHE_TTL {
            return Err(format!(
                "pat.cache_ttl: must be at most 24h, got {}",
                humantime::format_duration(self.cache_ttl)
            ));
        }
        if self.negative_cache_ttl > self.cache_ttl {
            return Err("pat.negative_cache_ttl: must be <= cache_ttl".into());
        }
        if self.cache_capacity == 0 {
            return Err("pat.cache_capacity: must be >= 1".into());
        }
        if self.last_used_flush.is_zero() {
            return Err("pat.last_used_flush: must be > 0".into());
        }
        if let Some(k) = &self.hash_key
            && k.len() < 32
        {
            return Err(format!(
                "pat.hash_key: must be at least 32 bytes (a random secret, e.g. `openssl rand -base64 48`), got {}",
                k.len()
            ));
        }
        self.validate_issuer()
    }

    /// The keys `pat.issuer` needs.
    fn validate_issuer(&self) -> Result<(), String> {
        match self.issuer {
            PatIssuerKind::Opaque => Ok(()),
            PatIssuerKind::LocalJwt => match self.local_jwt_key.as_deref() {
                Some(k) if k.len() >= 32 => Ok(()),
                _ => Err(
                    "pat.local_jwt_key: required with pat.issuer local-jwt, at least 32 bytes"
                        .into(),
                ),
            },
            PatIssuerKind::KeycloakExchange => {
                let x = &self.exchange;
                let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
                for (key, v) in [
                    ("token_url", &x.token_url),
                    ("client_id", &x.client_id),
                    ("client_secret", &x.client_secret),
                ] {
                    if !set(v) {
                        return Err(format!(
                            "pat.exchange.{key}: required with pat.issuer keycloak-exchange"
                        ));
                    }
                }
                let url = x.token_url.as_deref().unwrap_or_default();
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(format!(
                        "pat.exchange.token_url: {url:?} is not an http(s) URL"
                    ));
                }
                Ok(())
            }
        }
    }
}

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
/// transaction when given). Returns the raw token and the record.
pub async fn store_minted(
    store: &Store,
    hasher: &TokenHasher,
    p: Prepared,
    minted: Minted,
    now: DateTime<Utc>,
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
        Some(old) => store.rotate(old, new, now).await?,
        None => store.insert(new).await?,
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
    store_minted(store, &hasher, p, minted, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_humantime_and_rejects_unknown_keys() {
        let c: PatConfig = serde_json::from_str(
            r#"{"prefix":"acme_","cache_ttl":"10m","negative_cache_ttl":"5s","last_used_flush":"1m 30s"}"#,
        )
        .unwrap();
        assert_eq!(c.prefix, "acme_");
        assert_eq!(c.cache_ttl, Duration::from_secs(600));
        assert_eq!(c.negative_cache_ttl, Duration::from_secs(5));
        assert_eq!(c.last_used_flush, Duration::from_secs(90));
        assert_eq!(c.max_lifetime_days, 365);
        let keyed: PatConfig = serde_json::from_str(r#"{"hash_key":"v4lue-xyz"}"#).unwrap();
        assert!(
            !format!("{keyed:?}").contains("v4lue-xyz"),
            "hash_key is redacted"
        );
        let err = serde_json::from_str::<PatConfig>(r#"{"cache_tll":"5m"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let s: crate::store::StoreConfig = serde_json::from_str(
            r#"{"kind":"postgres","url":"postgres://x@h/db","timeout":"250ms"}"#,
        )
        .unwrap();
        assert_eq!(s.kind, crate::store::StoreKind::Postgres);
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.pool_size, 16);
        assert!(serde_json::from_str::<crate::store::StoreConfig>(r#"{"kind":"mysql"}"#).is_err());
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = PatConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let bad = PatConfig {
            max_lifetime_days: 10,
            ..PatConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err("pat.max_lifetime_days: must be >= default_lifetime_days (30)".into())
        );
        for (cfg, key) in [
            (
                PatConfig {
                    prefix: String::new(),
                    ..c.clone()
                },
                "pat.prefix",
            ),
            (
                PatConfig {
                    prefix: "pa t".into(),
                    ..c.clone()
                },
                "pat.prefix",
            ),
            (
                PatConfig {
                    grantable_scopes: vec!["tokens:*".into()],
                    ..c.clone()
                },
                "pat.grantable_scopes",
            ),
            (
                PatConfig {
                    grantable_scopes: vec!["bad".into()],
                    ..c.clone()
                },
                "pat.grantable_scopes",
            ),
            (
                PatConfig {
                    grantable_scopes: vec![],
                    ..c.clone()
                },
                "pat.grantable_scopes",
            ),
            (
                PatConfig {
                    max_lifetime_days: MAX_LIFETIME_DAYS_LIMIT + 1,
                    ..c.clone()
                },
                "pat.max_lifetime_days",
            ),
            (
                PatConfig {
                    max_active_per_user: 0,
                    ..c.clone()
                },
                "pat.max_active_per_user",
            ),
            (
                PatConfig {
                    last_used_flush: Duration::ZERO,
                    ..c.clone()
                },
                "pat.last_used_flush",
            ),
            (
                PatConfig {
                    hash_key: Some("too-short".into()),
                    ..c.clone()
                },
                "pat.hash_key",
            ),
            (
                PatConfig {
                    cache_ttl: MAX_CACHE_TTL + Duration::from_secs(1),
                    ..c.clone()
                },
                "pat.cache_ttl",
            ),
        ] {
            let err = cfg.validate().unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
    }
}
