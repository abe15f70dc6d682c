//! `pat:` configuration: token format, lifetimes, caches, the issuer kind
//! and the hash key.

use std::time::Duration;

use serde::Deserialize;

use crate::config_error::{ConfigError, Problems};
use crate::scope::{self, ScopeRole};

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
    /// PATs follow their owner in Keycloak (off unless set; see `pat::owners`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_sync: Option<super::owners::OwnerSyncConfig>,
    /// Write `token.new_ip` when a PAT is used from a network (/24 IPv4,
    /// /48 IPv6) it was not used from before (its first network is not
    /// new). Checked once per `last_used_flush` with the latest address.
    /// Default false.
    pub new_ip_events: bool,
    /// Owner issuers PATs may belong to besides `issuers[].issuer` (and the
    /// dev issuer): for PATs created with `admin token create --issuer X`
    /// where no JWT issuer X is configured (a PAT-only deployment). A PAT
    /// whose owner's issuer is in neither list is refused (401 `token
    /// owner's issuer is no longer trusted`), so removing an issuer cuts
    /// off its users' PATs. Default empty.
    pub owner_issuers: Vec<String>,
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
            .field("owner_sync", &self.owner_sync)
            .field("new_ip_events", &self.new_ip_events)
            .field("owner_issuers", &self.owner_issuers)
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
            owner_sync: None,
            new_ip_events: false,
            owner_issuers: Vec::new(),
        }
    }
}

impl PatConfig {
    /// Checks the values; each problem names its key.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        let prefix = &self.prefix;
        p.check(
            !prefix.is_empty()
                && prefix.len() <= 32
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "pat.prefix",
            || format!("must be 1-32 characters of [A-Za-z0-9_-], got {prefix:?}"),
        );
        p.check(
            self.default_lifetime_days > 0,
            "pat.default_lifetime_days",
            || "must be >= 1".into(),
        );
        p.check(
            self.max_lifetime_days >= self.default_lifetime_days,
            "pat.max_lifetime_days",
            || {
                format!(
                    "must be >= default_lifetime_days ({})",
                    self.default_lifetime_days
                )
            },
        );
        // Bounded so `now + max_lifetime_days` always stays a valid date.
        p.check(
            self.max_lifetime_days <= MAX_LIFETIME_DAYS_LIMIT,
            "pat.max_lifetime_days",
            || {
                format!(
                    "must be <= {MAX_LIFETIME_DAYS_LIMIT} (100 years), got {}",
                    self.max_lifetime_days
                )
            },
        );
        p.check(
            self.max_active_per_user > 0,
            "pat.max_active_per_user",
            || "must be >= 1".into(),
        );
        p.check(
            !self.grantable_scopes.is_empty(),
            "pat.grantable_scopes",
            || "must list at least one scope".into(),
        );
        for s in &self.grantable_scopes {
            if let Err(e) = scope::validate(s, ScopeRole::Granted) {
                p.push("pat.grantable_scopes", e.to_string());
            } else if scope::never_grantable(s) {
                p.push(
                    "pat.grantable_scopes",
                    format!("{s:?} names the tokens resource, which is never grantable"),
                );
            }
        }
        self.validate_caches(&mut p);
        if let Some(k) = &self.hash_key {
            p.check(k.len() >= 32, "pat.hash_key", || {
                format!(
                    "must be at least 32 bytes (a random secret, e.g. `openssl rand -base64 48`), got {}",
                    k.len()
                )
            });
        }
        self.validate_issuer(&mut p);
        for i in &self.owner_issuers {
            p.check(!i.trim().is_empty(), "pat.owner_issuers", || {
                "entries must not be empty; accepted: an issuer (`iss`) string".into()
            });
        }
        if let Some(o) = &self.owner_sync {
            o.validate(&mut p);
        }
        p.into_vec()
    }

    fn validate_caches(&self, p: &mut Problems) {
        p.check(!self.cache_ttl.is_zero(), "pat.cache_ttl", || {
            "must be > 0".into()
        });
        // Bounds how long a missed revocation message can leave a token
        // valid here, and keeps moka's caches (which refuse time-to-live
        // values over 1000 years by panicking) buildable.
        p.check(self.cache_ttl <= MAX_CACHE_TTL, "pat.cache_ttl", || {
            format!(
                "must be at most 24h, got {}",
                humantime::format_duration(self.cache_ttl)
            )
        });
        p.check(
            self.negative_cache_ttl <= self.cache_ttl,
            "pat.negative_cache_ttl",
            || "must be <= cache_ttl".into(),
        );
        p.check(self.cache_capacity > 0, "pat.cache_capacity", || {
            "must be >= 1".into()
        });
        p.check(
            !self.last_used_flush.is_zero(),
            "pat.last_used_flush",
            || "must be > 0".into(),
        );
    }

    /// The keys `pat.issuer` needs.
    fn validate_issuer(&self, p: &mut Problems) {
        match self.issuer {
            PatIssuerKind::Opaque => {}
            PatIssuerKind::LocalJwt => p.check(
                self.local_jwt_key.as_deref().is_some_and(|k| k.len() >= 32),
                "pat.local_jwt_key",
                || "required with pat.issuer local-jwt, at least 32 bytes".into(),
            ),
            PatIssuerKind::KeycloakExchange => {
                let x = &self.exchange;
                let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
                for (key, v) in [
                    ("token_url", &x.token_url),
                    ("client_id", &x.client_id),
                    ("client_secret", &x.client_secret),
                ] {
                    p.check(set(v), &format!("pat.exchange.{key}"), || {
                        "required with pat.issuer keycloak-exchange".into()
                    });
                }
                if let Some(url) = x.token_url.as_deref().filter(|u| !u.trim().is_empty()) {
                    p.check(
                        url.starts_with("https://") || url.starts_with("http://"),
                        "pat.exchange.token_url",
                        || format!("{url:?} is not an http(s) URL"),
                    );
                }
            }
        }
    }
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
        assert_eq!(c.validate(), vec![]);
        let bad = PatConfig {
            max_lifetime_days: 10,
            ..PatConfig::default()
        };
        assert_eq!(
            bad.validate(),
            vec![ConfigError::new(
                "pat.max_lifetime_days",
                "must be >= default_lifetime_days (30)"
            )]
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
            let errs = cfg.validate();
            assert!(
                !errs.is_empty() && errs.iter().all(|e| e.key == key),
                "{errs:?}"
            );
        }
    }
}
