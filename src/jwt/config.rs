//! `issuers:` and `jwt:` configuration: the sections the JWT verifier owns.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value (`https://kc.example.org/realms/main`; no normalisation).
    pub issuer: String,
    /// JWKS URL; when absent it comes from `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The token's `aud` must contain one of these. Required, non-empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values (asymmetric only). Default `[RS256]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`, in seconds. Default 30.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Accepted values of Keycloak's `typ` claim. Default `[Bearer]`.
    #[serde(default = "default_token_types")]
    pub token_types: Vec<String>,
    /// How often keys are refreshed in the background. Default `5m`.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// At most one on-demand refetch (unknown `kid`) per this interval. Default `10s`.
    #[serde(default = "default_refetch", with = "humantime_serde")]
    pub refetch_min_interval: Duration,
    /// Timeout of one discovery or JWKS HTTP request. Default `2s`.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// How long a Check waits for an unknown-`kid` refetch before answering 503. Default `150ms`.
    #[serde(default = "default_kid_wait", with = "humantime_serde")]
    pub unknown_kid_wait: Duration,
    /// How scopes are derived from this issuer's tokens.
    #[serde(default)]
    pub scopes: ScopeSourceConfig,
    /// DPoP (RFC 9449) for this issuer's tokens: `off` (default),
    /// `allowed` or `required`. A token carrying `cnf.jkt` always needs its
    /// proof, whatever the setting.
    #[serde(default)]
    pub dpop: DpopMode,
    /// OpenID Connect Back-Channel Logout (`POST /backchannel-logout`);
    /// off unless set.
    #[serde(default)]
    pub backchannel_logout: Option<BackchannelLogoutConfig>,
    /// The longest an access token of this issuer lives (the realm's
    /// access token lifespan, or longer): a logged-out session stays
    /// deny-listed this long. Default `1h`.
    #[serde(default = "default_max_token_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
}

/// `issuers[].dpop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopMode {
    /// `Authorization: DPoP` is refused for this issuer's tokens (a bound
    /// token is then unusable: it is refused as a bearer token too).
    #[default]
    Off,
    /// Bearer or DPoP.
    Allowed,
    /// Every token must be DPoP-bound and come with a proof.
    Required,
}

/// `issuers[].backchannel_logout`: whose logout tokens are accepted, and
/// what a logout refuses.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackchannelLogoutConfig {
    /// Client ids whose logout tokens are accepted (the token's `aud` must
    /// contain one). Required, non-empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Also refuse the user's PATs: Keycloak-exchanged ones carrying the
    /// logged-out `sid`, and (a logout naming only `sub`) every PAT of that
    /// subject created before it. Default `false`: PATs have their own
    /// lifecycle.
    #[serde(default)]
    pub include_pats: bool,
}

/// Keycloak's default access token lifespan (`accessTokenLifespan`, 5 min).
pub const KEYCLOAK_DEFAULT_TOKEN_LIFESPAN: Duration = Duration::from_secs(300);

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}
fn default_leeway() -> u64 {
    30
}
fn default_token_types() -> Vec<String> {
    vec!["Bearer".to_owned()]
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_refetch() -> Duration {
    Duration::from_secs(10)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_kid_wait() -> Duration {
    Duration::from_millis(150)
}
fn default_max_token_lifetime() -> Duration {
    Duration::from_secs(3600)
}

impl IssuerConfig {
    /// An issuer entry with every default, for `--dev` and tests.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            jwks_uri: None,
            audiences: vec![audience.into()],
            algorithms: default_algorithms(),
            leeway_seconds: default_leeway(),
            token_types: default_token_types(),
            refresh_interval: default_refresh(),
            refetch_min_interval: default_refetch(),
            fetch_timeout: default_fetch_timeout(),
            unknown_kid_wait: default_kid_wait(),
            scopes: ScopeSourceConfig::default(),
            dpop: DpopMode::Off,
            backchannel_logout: None,
            max_token_lifetime: default_max_token_lifetime(),
        }
    }
}

/// Where a login token's scopes come from (`issuers[].scopes`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeSourceConfig {
    /// Sources: `claim:scope`, `realm_roles`, `client_roles:<client-id>`. Default `[claim:scope]`.
    pub from: Vec<String>,
    /// Renames a role or scope to one or more of our scopes; unmapped values pass through.
    pub map: std::collections::BTreeMap<String, Vec<String>>,
    /// Scopes every valid login token gets.
    pub default: Vec<String>,
}

impl Default for ScopeSourceConfig {
    fn default() -> Self {
        ScopeSourceConfig {
            from: vec!["claim:scope".to_owned()],
            map: Default::default(),
            default: Vec::new(),
        }
    }
}

/// Settings shared by all issuers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Maximum number of verified tokens cached (keyed by SHA-256). Default 100000.
    pub cache_capacity: u64,
    /// Bearer tokens longer than this many bytes are denied unparsed. Default 8192.
    pub max_token_bytes: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            cache_capacity: 100_000,
            max_token_bytes: 8 * 1024,
        }
    }
}

/// The asymmetric signature algorithms (never a shared secret).
pub const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

// === impl JwtConfig ===

impl JwtConfig {
    /// Range checks of `jwt.*`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if self.max_token_bytes < 256 || self.max_token_bytes > 64 * 1024 {
            errs.push(ConfigError::new(
                "jwt.max_token_bytes",
                format!(
                    "{} is out of range; accepted: 256 to 65536",
                    self.max_token_bytes
                ),
            ));
        }
        if self.cache_capacity == 0 {
            errs.push(ConfigError::new(
                "jwt.cache_capacity",
                "must be at least 1 (it bounds memory, it cannot disable the cache)",
            ));
        }
        errs
    }
}

/// Checks every `issuers[i]` entry, and that no issuer is listed twice.
pub fn validate_issuers(issuers: &[IssuerConfig]) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, iss) in issuers.iter().enumerate() {
        validate_issuer(i, iss, &mut errs);
        if !seen.insert(iss.issuer.as_str()) {
            errs.push(ConfigError::new(
                format!("issuers[{i}].issuer"),
                format!(
                    "{:?} is listed twice; each issuer may appear once",
                    iss.issuer
                ),
            ));
        }
    }
    errs
}

fn validate_issuer(i: usize, iss: &IssuerConfig, errs: &mut Vec<ConfigError>) {
    let key = |k: &str| format!("issuers[{i}].{k}");
    if !(iss.issuer.starts_with("https://") || iss.issuer.starts_with("http://")) {
        errs.push(ConfigError::new(
            key("issuer"),
            format!("{:?} is not an http(s) URL", iss.issuer),
        ));
    }
    if let Some(u) = &iss.jwks_uri
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        errs.push(ConfigError::new(
            key("jwks_uri"),
            format!("{u:?} is not an http(s) URL"),
        ));
    }
    if iss.audiences.is_empty() || iss.audiences.iter().any(|a| a.is_empty()) {
        errs.push(ConfigError::new(
            key("audiences"),
            "must list at least one non-empty audience (RFC 8725 §3.9: a token for another service must not be accepted)",
        ));
    }
    if iss.algorithms.is_empty() {
        errs.push(ConfigError::new(
            key("algorithms"),
            "must not be empty; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
        ));
    }
    for (j, alg) in iss.algorithms.iter().enumerate() {
        if !ASYMMETRIC.contains(alg) {
            errs.push(ConfigError::new(
                format!("issuers[{i}].algorithms[{j}]"),
                format!(
                    "{alg:?} is a shared-secret algorithm and is never accepted from an issuer; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
                ),
            ));
        }
    }
    if iss.leeway_seconds > 300 {
        errs.push(ConfigError::new(
            key("leeway_seconds"),
            format!("{} is too large; accepted: 0 to 300", iss.leeway_seconds),
        ));
    }
    if iss.token_types.is_empty() {
        errs.push(ConfigError::new(
            key("token_types"),
            "must not be empty; Keycloak access tokens have typ \"Bearer\"",
        ));
    }
    if iss.refresh_interval < Duration::from_secs(1) {
        errs.push(ConfigError::new(
            key("refresh_interval"),
            "must be at least 1s",
        ));
    }
    if iss.fetch_timeout.is_zero() || iss.unknown_kid_wait.is_zero() {
        errs.push(ConfigError::new(
            key("fetch_timeout"),
            "fetch_timeout and unknown_kid_wait must be greater than zero",
        ));
    }
    validate_scope_source(i, &iss.scopes, errs);
    validate_logout(i, iss, errs);
}

/// `issuers[i].backchannel_logout` and `issuers[i].max_token_lifetime`.
fn validate_logout(i: usize, iss: &IssuerConfig, errs: &mut Vec<ConfigError>) {
    let max = Duration::from_secs(30 * 24 * 3600);
    if iss.max_token_lifetime < Duration::from_secs(1) || iss.max_token_lifetime > max {
        errs.push(ConfigError::new(
            format!("issuers[{i}].max_token_lifetime"),
            format!(
                "{} is out of range; accepted: 1s to 30d (at least the realm's access token lifespan)",
                humantime::format_duration(iss.max_token_lifetime)
            ),
        ));
    }
    if let Some(bcl) = &iss.backchannel_logout
        && (bcl.audiences.is_empty() || bcl.audiences.iter().any(|a| a.is_empty()))
    {
        errs.push(ConfigError::new(
            format!("issuers[{i}].backchannel_logout.audiences"),
            "must list at least one non-empty client id (the Keycloak client whose \"Backchannel logout URL\" points here); accepted: e.g. [portcullis]",
        ));
    }
}

/// Settings that are valid but probably wrong (`config check` prints them,
/// `serve` logs them): a `max_token_lifetime` below Keycloak's default
/// access token lifespan lets a logged-out session's tokens outlive its
/// deny-list entry.
pub fn issuer_warnings(issuers: &[IssuerConfig]) -> Vec<ConfigError> {
    issuers
        .iter()
        .enumerate()
        .filter(|(_, iss)| iss.max_token_lifetime < KEYCLOAK_DEFAULT_TOKEN_LIFESPAN)
        .map(|(i, iss)| {
            ConfigError::new(
                format!("issuers[{i}].max_token_lifetime"),
                format!(
                    "{} is shorter than Keycloak's default access token lifespan (5m): tokens of a logged-out session would work again once their deny-list entry lapses; set it to at least the realm's access token lifespan",
                    humantime::format_duration(iss.max_token_lifetime)
                ),
            )
        })
        .collect()
}

/// `issuers[i].scopes`: known sources, valid granted scopes.
fn validate_scope_source(i: usize, scopes: &ScopeSourceConfig, errs: &mut Vec<ConfigError>) {
    for (j, src) in scopes.from.iter().enumerate() {
        let ok = src == "claim:scope"
            || src == "realm_roles"
            || src
                .strip_prefix("client_roles:")
                .is_some_and(|c| !c.is_empty());
        if !ok {
            errs.push(ConfigError::new(
                format!("issuers[{i}].scopes.from[{j}]"),
                format!(
                    "{src:?} is not a scope source; accepted: claim:scope, realm_roles, client_roles:<client-id>"
                ),
            ));
        }
    }
    let granted = scopes
        .default
        .iter()
        .enumerate()
        .map(|(j, s)| (format!("issuers[{i}].scopes.default[{j}]"), s))
        .chain(scopes.map.iter().flat_map(|(k, v)| {
            v.iter()
                .enumerate()
                .map(move |(j, s)| (format!("issuers[{i}].scopes.map.{k}[{j}]"), s))
        }));
    for (k, s) in granted {
        if let Err(e) = crate::scope::validate(s, crate::scope::ScopeRole::Granted) {
            errs.push(ConfigError::new(k, e.to_string()));
        }
    }
}
