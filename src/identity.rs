//! Who the caller is, once a credential has been verified. Every credential
//! path (login JWT, service account, PAT) produces an [`Identity`]; policy
//! decides on it and the response builder turns it into `x-auth-*` headers.

use std::sync::Arc;

pub use crate::policy::CredentialKind;

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
    /// Issuer (`x-auth-issuer`): `iss`, or a PAT owner's issuer.
    pub issuer: Option<Arc<str>>,
    /// Expiry as Unix seconds.
    pub expires_at: i64,
    /// Claims named in `identity_headers.claims`, as (claim, value); only
    /// JWTs carry them.
    pub claims: Vec<(Arc<str>, String)>,
    /// Identity headers and metadata rendered for this identity (filled on
    /// its first allow; empty in a clone, ignored by `==`).
    pub rendered: crate::authz::headers::RenderCache,
}
