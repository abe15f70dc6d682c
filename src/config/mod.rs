//! Configuration: one serde struct tree, loaded in layers (defaults → YAML
//! file → `PORTCULLIS__SECTION__KEY` environment variables) and checked by a
//! separate [`Config::validate`] so `portcullis config check` and `serve`
//! report the same errors.
//!
//! Durations are strings such as `500ms`, `5s` or `10m` unless the key names
//! its unit (`leeway_seconds`).

mod load;

pub use load::{EnvSource, MapEnv, ProcessEnv};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::config_error::ConfigError;
pub use crate::jwt::config::{IssuerConfig, JwtConfig, ScopeSourceConfig};
pub use crate::telemetry::{LogConfig, LogFormat};

use crate::pat::PatConfig;
use crate::policy::PolicyConfig;
use crate::revocation::RevocationConfig;
use crate::store::StoreConfig;
use crate::tokens::ApiConfig;

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
    /// How DPoP proofs are checked (`issuers[].dpop` turns DPoP on).
    pub dpop: crate::dpop::DpopConfig,
    /// Token event webhooks and expiry notices.
    pub notify: crate::notify::NotifyConfig,
    /// The audit trail: retention, client addresses behind proxies.
    pub audit: crate::audit::AuditConfig,
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
            dpop: Default::default(),
            notify: Default::default(),
            audit: Default::default(),
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// gRPC: Envoy's `Authorization/Check`, health, reflection, TokenService.
    /// `HOST:PORT`, or `unix:/path` for a Unix socket shared with Envoy
    /// (an Envoy `pipe` address).
    pub grpc: crate::listen::GrpcListen,
    /// HTTP: `/healthz`, `/readyz`, the REST API and (in `--dev`) the dev issuer.
    pub http: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            grpc: SocketAddr::from(([127, 0, 0, 1], 9191)).into(),
            http: SocketAddr::from(([127, 0, 0, 1], 9192)),
        }
    }
}

// === impl Config ===

impl Config {
    /// Checks everything serde cannot: cross-field rules and value ranges.
    /// Returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = crate::jwt::config::validate_issuers(&self.issuers);
        errs.extend(self.jwt.validate());
        errs.extend(self.pat.validate());
        self.validate_exchange_audience(&mut errs);
        self.validate_owner_sync_issuer(&mut errs);
        errs.extend(self.store.validate());
        errs.extend(self.revocation.validate());
        errs.extend(self.api.validate());
        let issuers: Vec<&str> = self.issuers.iter().map(|i| i.issuer.as_str()).collect();
        errs.extend(self.api.ui.validate(&issuers));
        errs.extend(self.policy.validate());
        errs.extend(self.credentials.validate());
        errs.extend(self.identity_headers.validate());
        errs.extend(self.assertion.validate());
        errs.extend(self.dpop.validate());
        errs.extend(self.notify.validate());
        errs.extend(self.audit.validate());
        errs.extend(self.audit.validate_with(self.notify.delivery.max_age));
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

    /// Valid settings that are probably mistakes: `config check` prints
    /// them as warnings and `serve` logs them.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut w = crate::jwt::config::issuer_warnings(&self.issuers);
        w.extend(self.notify.warnings());
        w
    }

    /// `pat.owner_sync.issuer` must be a configured issuer: its scope
    /// mapping turns the owner's roles into scopes.
    fn validate_owner_sync_issuer(&self, errs: &mut Vec<ConfigError>) {
        let Some(o) = &self.pat.owner_sync else {
            return;
        };
        if !self.issuers.iter().any(|i| i.issuer == o.issuer) {
            let known: Vec<&str> = self.issuers.iter().map(|i| i.issuer.as_str()).collect();
            errs.push(ConfigError::new(
                "pat.owner_sync.issuer",
                format!(
                    "{:?} is not a configured issuer; accepted: one of issuers[].issuer ({})",
                    o.issuer,
                    known.join(", ")
                ),
            ));
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

    /// `--dev` defaults: data in the data dir, and (without a config file) a
    /// policy that admits any valid token so dev tokens work out of the box.
    pub fn apply_dev_defaults(&mut self, has_file: bool) {
        if !has_file {
            self.store.kind = crate::store::StoreKind::Sqlite;
            self.policy.default = crate::policy::DefaultAction::Authenticated;
        }
    }

    /// The sections an `authz::Engine` is built from.
    pub fn engine(&self) -> crate::authz::EngineConfig<'_> {
        crate::authz::EngineConfig {
            issuers: &self.issuers,
            jwt: &self.jwt,
            pat: &self.pat,
            policy: &self.policy,
            jwt_denylist_capacity: self.revocation.jwt_denylist_capacity,
            credentials: &self.credentials,
            identity_headers: &self.identity_headers,
            assertion: &self.assertion,
            data_dir: &self.data_dir,
            dpop: &self.dpop,
            audit: &self.audit,
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
