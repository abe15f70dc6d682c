//! `api:` configuration: who may manage tokens through the REST/gRPC API.

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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            manage_scope: "tokens:manage".into(),
            admin_scope: "tokens:admin".into(),
            manage_kinds: vec![CredentialKind::Jwt],
            ui: true,
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
