//! `api:` configuration: who may manage tokens through the REST/gRPC API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Serve the token-management web page at `/ui`. Default true.
    pub ui: bool,
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
    pub resource_metadata: crate::api::metadata::ResourceMetadataConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            manage_scope: "tokens:manage".into(),
            admin_scope: "tokens:admin".into(),
            manage_kinds: vec![CredentialKind::Jwt],
            ui: true,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_body_bytes: 16 * 1024,
            resource_metadata: Default::default(),
        }
    }
}

impl ApiConfig {
    /// Checks the values; messages name the offending key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, s) in [
            ("api.manage_scope", &self.manage_scope),
            ("api.admin_scope", &self.admin_scope),
        ] {
            scope::validate(s, ScopeRole::Required)
                .map_err(|e| format!("{key}: {e} (a concrete resource:action is required)"))?;
        }
        if self.manage_kinds.is_empty() {
            return Err("api.manage_kinds: must list at least one of jwt, service_account".into());
        }
        if self.manage_kinds.contains(&CredentialKind::Pat) {
            return Err(
                "api.manage_kinds: pat is not accepted; a personal access token may only read itself (GET /api/v1/tokens/self) and rotate itself"
                    .into(),
            );
        }
        crate::api::limits::validate(self)?;
        self.resource_metadata.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_each_bad_key_is_named() {
        assert_eq!(ApiConfig::default().validate(), Ok(()));
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
            let err = cfg.validate().unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
        let c: ApiConfig =
            serde_json::from_str(r#"{"manage_kinds":["jwt","service_account"]}"#).unwrap();
        assert_eq!(c.manage_kinds.len(), 2);
        assert!(serde_json::from_str::<ApiConfig>(r#"{"manage":"x:y"}"#).is_err());
    }
}
