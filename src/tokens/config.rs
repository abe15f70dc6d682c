//! `api:` configuration: who may manage tokens through the REST/gRPC API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, Problems};
use crate::identity::CredentialKind;
use crate::scope::{self, ScopeRole};

/// `api:` config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Scope a login token needs to create, list, revoke and rotate its
    /// owner's tokens. Default `tokens:manage`.
    pub manage_scope: String,
    /// Scope needed for `/api/v1/admin/...` (any user's tokens). Default `tokens:admin`.
    pub admin_scope: String,
    /// Credential kinds that may manage tokens. Default `[jwt]` (user login
    /// tokens); `service_account` may be added; `pat` never.
    pub manage_kinds: Vec<CredentialKind>,
    /// The token-management web page at `/ui`: `true` (default), `false`,
    /// or `{enabled, oidc}` to sign users in through Keycloak
    /// ([`super::UiConfig`]).
    pub ui: super::UiConfig,
    /// HTTP port (`listen.http`): a client must send a request's headers
    /// within this time, or the connection is closed; also bounds how long an
    /// idle keep-alive connection is kept. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// HTTP port: a whole request (body read and answer) must finish within
    /// this time, or it is answered 408. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTP port: at most this many connections are open at once; a new one
    /// beyond it is closed at once. Default 512.
    pub max_connections: usize,
    /// HTTP port: largest request body accepted (read only after the caller
    /// is authenticated); a larger one is answered 413. Default 16384.
    pub max_body_bytes: usize,
    /// RFC 9728 protected resource metadata on the HTTP port
    /// (`/.well-known/oauth-protected-resource`), and the
    /// `resource_metadata` parameter of Check's 401 challenges. Off while
    /// `resource` is unset.
    pub resource_metadata: super::resource_metadata::ResourceMetadataConfig,
    /// Shared secret a secret scanner sends (`x-portcullis-leak-secret`)
    /// to `POST /api/v1/tokens/revoke-leaked` instead of an admin login
    /// token; at least 32 bytes. Unset: only `api.admin_scope` callers may
    /// report leaks. Prefer `PORTCULLIS__API__LEAK_REPORT_SECRET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_report_secret: Option<LeakSecret>,
    /// `revoke-leaked` answers no sooner than this after the request came
    /// in, found tokens or not, so its timing does not tell whether a
    /// token existed. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub leak_report_floor: Duration,
    /// Most tokens one leak report may carry. Default 100.
    pub leak_report_max_tokens: usize,
}

/// `api.leak_report_secret`; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct LeakSecret(pub String);

impl std::fmt::Debug for LeakSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            manage_scope: "tokens:manage".into(),
            admin_scope: "tokens:admin".into(),
            manage_kinds: vec![CredentialKind::Jwt],
            ui: Default::default(),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_body_bytes: 16 * 1024,
            resource_metadata: Default::default(),
            leak_report_secret: None,
            leak_report_floor: Duration::from_millis(250),
            leak_report_max_tokens: 100,
        }
    }
}

/// Bounds of the HTTP port's limits: beyond them a limit no longer
/// protects anything.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_CONNECTIONS: usize = 100_000;
const MIN_BODY: usize = 1024;
const MAX_BODY: usize = 1024 * 1024;

impl ApiConfig {
    /// Checks the values; each problem names its key.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        for (key, s) in [
            ("api.manage_scope", &self.manage_scope),
            ("api.admin_scope", &self.admin_scope),
        ] {
            if let Err(e) = scope::validate(s, ScopeRole::Required) {
                p.push(key, format!("{e} (a concrete resource:action is required)"));
            }
        }
        p.check(!self.manage_kinds.is_empty(), "api.manage_kinds", || {
            "must list at least one of jwt, service_account".into()
        });
        p.check(
            !self.manage_kinds.contains(&CredentialKind::Pat),
            "api.manage_kinds",
            || "pat is not accepted; a personal access token may only read itself (GET /api/v1/tokens/self) and rotate itself".into(),
        );
        self.validate_limits(&mut p);
        if let Some(s) = &self.leak_report_secret {
            // Never echo it.
            p.check(s.0.len() >= 32, "api.leak_report_secret", || {
                format!("is {} bytes; at least 32 required", s.0.len())
            });
        }
        p.check(
            self.leak_report_floor <= Duration::from_secs(10),
            "api.leak_report_floor",
            || "must be at most 10s".into(),
        );
        p.check(
            (1..=1000).contains(&self.leak_report_max_tokens),
            "api.leak_report_max_tokens",
            || "must be between 1 and 1000".into(),
        );
        p.extend(self.resource_metadata.validate());
        p.into_vec()
    }

    /// Range checks of the HTTP port's limits.
    fn validate_limits(&self, p: &mut Problems) {
        for (key, d) in [
            ("api.header_read_timeout", self.header_read_timeout),
            ("api.request_timeout", self.request_timeout),
        ] {
            p.check((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d), key, || {
                format!(
                    "{} is out of range; accepted: 10ms to 10m",
                    humantime::format_duration(d)
                )
            });
        }
        p.check(
            (1..=MAX_CONNECTIONS).contains(&self.max_connections),
            "api.max_connections",
            || {
                format!(
                    "{} is out of range; accepted: 1 to {MAX_CONNECTIONS}",
                    self.max_connections
                )
            },
        );
        p.check(
            (MIN_BODY..=MAX_BODY).contains(&self.max_body_bytes),
            "api.max_body_bytes",
            || {
                format!(
                    "{} is out of range; accepted: {MIN_BODY} to {MAX_BODY}",
                    self.max_body_bytes
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_each_bad_key_is_named() {
        assert_eq!(ApiConfig::default().validate(), vec![]);
        let bad = [
            (
                ApiConfig {
                    manage_scope: "tokens".into(),
                    ..ApiConfig::default()
                },
                "api.manage_scope",
            ),
            (
                ApiConfig {
                    admin_scope: "tokens:*".into(),
                    ..ApiConfig::default()
                },
                "api.admin_scope",
            ),
            (
                ApiConfig {
                    manage_kinds: vec![],
                    ..ApiConfig::default()
                },
                "api.manage_kinds",
            ),
            (
                ApiConfig {
                    manage_kinds: vec![CredentialKind::Jwt, CredentialKind::Pat],
                    ..ApiConfig::default()
                },
                "api.manage_kinds",
            ),
        ];
        for (cfg, key) in bad {
            let errs = cfg.validate();
            assert!(
                !errs.is_empty() && errs.iter().all(|e| e.key == key),
                "{errs:?}"
            );
        }
        let c: ApiConfig =
            serde_json::from_str(r#"{"manage_kinds":["jwt","service_account"]}"#).unwrap();
        assert_eq!(c.manage_kinds.len(), 2);
        assert!(serde_json::from_str::<ApiConfig>(r#"{"manage":"x:y"}"#).is_err());
    }
}
