//! Who the caller is, once a credential has been verified. Every credential
//! path (login JWT, service account, PAT) produces an [`Identity`]; policy
//! decides on it and the response builder turns it into `x-auth-*` headers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The kind of credential presented; routes accept a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A user's login token from a trusted issuer.
    Jwt,
    /// A client_credentials token (`preferred_username: service-account-…`).
    ServiceAccount,
    /// A personal access token (opaque, or a registered IdP-signed one).
    Pat,
}

impl CredentialKind {
    /// The value of `x-auth-method` and of `credentials:` in config.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ServiceAccount => "service_account",
            CredentialKind::Pat => "pat",
        }
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified caller. Shared (`Arc`) so a cached verification costs no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Credential kind, reported as `x-auth-method`.
    pub kind: CredentialKind,
    /// `sub` of the token or the PAT's owner (`x-auth-subject`).
    pub subject: String,
    /// `preferred_username` (`x-auth-username`).
    pub username: Option<String>,
    /// `email` (`x-auth-email`).
    pub email: Option<String>,
    /// `azp`, the OAuth client (`x-auth-client`).
    pub client: Option<String>,
    /// Effective scopes after mapping (`x-auth-scopes`).
    pub scopes: Vec<String>,
    /// PAT id (`x-auth-token-id`), never the token itself.
    pub token_id: Option<String>,
    /// Issuer, for logs.
    pub issuer: Option<Arc<str>>,
    /// Expiry as Unix seconds.
    pub expires_at: i64,
}
