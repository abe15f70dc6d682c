//! Configuration: one serde struct tree, loaded in layers (defaults → YAML
//! file → `PORTCULLIS__SECTION__KEY` environment variables) and checked by a
//! separate [`Config::validate`] so `portcullis config check` and `serve`
//! report the same errors.
//!
//! Durations are strings such as `500ms`, `5s` or `10m` unless the key names
//! its unit (`leeway_seconds`).

mod load;

pub use load::{EnvSource, MapEnv, ProcessEnv};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use crate::pat::PatConfig;
use crate::policy::PolicyConfig;
use crate::revocation::RevocationConfig;
use crate::store::StoreConfig;
use crate::tokens::ApiConfig;

/// A configuration problem: which key, what is wrong, what is accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `issuers[0].algorithms[1]`.
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigError {
    /// From a section validator's `"key.path: message"` text.
    pub fn keyed(section: &str, text: &str) -> Self {
        match text.split_once(": ") {
            Some((k, m)) if k.starts_with(section) => ConfigError::new(k, m),
            _ => ConfigError::new(section, text),
        }
    }

    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the gRPC and HTTP servers listen.
    pub listen: ListenConfig,
    /// Directory for local state: the SQLite store and the dev signing key.
    pub data_dir: PathBuf,
    /// Trusted JWT issuers (Keycloak realms). A token from any other `iss` is denied.
    pub issuers: Vec<IssuerConfig>,
    /// Settings shared by every issuer: verified-token cache and size limits.
    pub jwt: JwtConfig,
    /// Personal access tokens.
    pub pat: PatConfig,
    /// Where PATs and the JWT deny-list live.
    pub store: StoreConfig,
    /// Per-route authorization policy.
    pub policy: PolicyConfig,
    /// How revocations reach every replica.
    pub revocation: RevocationConfig,
    /// Token-management API (REST, gRPC, `/ui`): who may call it.
    pub api: ApiConfig,
    /// Log output.
    pub log: LogConfig,
    /// Where a credential may come from besides `Authorization: Bearer`.
    pub credentials: crate::authz::sources::CredentialsConfig,
    /// Which identity headers an allow sets, their prefix, mapped claims.
    pub identity_headers: crate::authz::headers::IdentityHeadersConfig,
    /// Signed identity assertions for routes with `assertion.audience`.
    pub assertion: crate::authz::assertion::AssertionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ListenConfig::default(),
            data_dir: PathBuf::from(".portcullis"),
            issuers: Vec::new(),
            jwt: JwtConfig::default(),
            pat: PatConfig::default(),
            store: StoreConfig::default(),
            policy: PolicyConfig::default(),
            revocation: RevocationConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            credentials: Default::default(),
            identity_headers: Default::default(),
            assertion: Default::default(),
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// gRPC: Envoy's `Authorization/Check`, health, reflection, TokenService.
    pub grpc: SocketAddr,
    /// HTTP: `/healthz`, `/readyz`, the REST API and (in `--dev`) the dev issuer.
    pub http: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            grpc: SocketAddr::from(([127, 0, 0, 1], 9191)),
            http: SocketAddr::from(([127, 0, 0, 1], 9192)),
        }
    }
}

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
}

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

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`; `--log-format` overrides it.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `portcullis=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

const ASYMMETRIC: &[Algorithm] = &[
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

// === impl Config ===

impl Config {
    /// Checks everything serde cannot: cross-field rules and value ranges.
    /// Returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
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
        if self.jwt.max_token_bytes < 256 || self.jwt.max_token_bytes > 64 * 1024 {
            errs.push(ConfigError::new(
                "jwt.max_token_bytes",
                format!(
                    "{} is out of range; accepted: 256 to 65536",
                    self.jwt.max_token_bytes
                ),
            ));
        }
        if self.jwt.cache_capacity == 0 {
            errs.push(ConfigError::new(
                "jwt.cache_capacity",
                "must be at least 1 (it bounds memory, it cannot disable the cache)",
            ));
        }
        if let Err(e) = self.pat.validate() {
            errs.push(ConfigError::keyed("pat", &e));
        }
        self.validate_exchange_audience(&mut errs);
        if let Err(e) = self.store.validate() {
            errs.push(ConfigError::keyed("store", &e));
        }
        if let Err(e) = self.revocation.validate() {
            errs.push(ConfigError::keyed("revocation", &e));
        }
        if let Err(e) = self.api.validate() {
            errs.push(ConfigError::keyed("api", &e));
        }
        errs.extend(self.credentials.validate());
        errs.extend(self.identity_headers.validate());
        errs.extend(self.assertion.validate());
        for (i, r) in self.policy.routes.iter().enumerate() {
            if let Some(a) = &r.assertion
                && a.audience.trim().is_empty()
            {
                errs.push(ConfigError::new(
                    format!("policy.routes[{i}].assertion.audience"),
                    "must not be empty; accepted: the audience the upstream expects, e.g. orders-api",
                ));
            }
        }
        self.validate_credential_headers(&mut errs);
        for e in crate::policy::Policy::check(&self.policy) {
            let text = e.to_string();
            let msg = text
                .strip_prefix(&format!("{}: ", e.key()))
                .unwrap_or(&text);
            errs.push(ConfigError::new(e.key(), msg));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// A credential header must not be an identity header too: the client's
    /// copy of an identity header is always removed.
    fn validate_credential_headers(&self, errs: &mut Vec<ConfigError>) {
        let ours = crate::authz::headers::IdentityHeaders::compile(&self.identity_headers);
        for (i, h) in self.credentials.headers.iter().enumerate() {
            if ours.owns(h) {
                errs.push(ConfigError::new(
                    format!("credentials.headers[{i}]"),
                    format!("{h:?} is an identity header name (identity_headers.prefix or .claims), whose client copies are removed; accepted: another name such as x-api-key"),
                ));
            }
        }
    }

    /// `pat.exchange.audience` marks every JWT whose `aud` contains it as a
    /// PAT. Login tokens carry the issuer's audiences, so if it equals one of
    /// them every login becomes an unregistered PAT (401).
    fn validate_exchange_audience(&self, errs: &mut Vec<ConfigError>) {
        let Some(aud) = self.pat.exchange.audience.as_deref() else {
            return;
        };
        for (i, iss) in self.issuers.iter().enumerate() {
            for (j, a) in iss.audiences.iter().enumerate() {
                if a == aud {
                    errs.push(ConfigError::new(
                        "pat.exchange.audience",
                        format!(
                            "{aud:?} equals issuers[{i}].audiences[{j}]; login tokens carry that audience, so every login would be treated as a PAT; accepted: an audience no login token carries, or omit it and let pat.jwt_marker (default token_use: pat) mark PATs"
                        ),
                    ));
                }
            }
        }
    }

    /// Settings only allowed with `--dev` (`serve` and `config check --dev`
    /// use this): `pat.issuer: local-jwt` signs PATs with a shared key.
    pub fn validate_mode(&self, dev: bool) -> Result<(), ConfigError> {
        if !dev && self.pat.issuer == crate::pat::PatIssuerKind::LocalJwt {
            return Err(ConfigError::new(
                "pat.issuer",
                "local-jwt is for development only and is refused without --dev; use opaque or keycloak-exchange",
            ));
        }
        Ok(())
    }
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
    for (j, src) in iss.scopes.from.iter().enumerate() {
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
    let granted = iss
        .scopes
        .default
        .iter()
        .enumerate()
        .map(|(j, s)| (format!("issuers[{i}].scopes.default[{j}]"), s))
        .chain(iss.scopes.map.iter().flat_map(|(k, v)| {
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
