//! Compile-time (config) errors. Every message starts with the config key path.

use crate::config_error::ConfigError;
use crate::scope::ScopeError;

/// Why a policy config was rejected. `Display` is `key.path: what is wrong; what is accepted`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A route has an empty (or all-whitespace) name.
    #[error("{key}: route name must not be empty")]
    EmptyName { key: String },
    /// Two routes share a name.
    #[error(
        "{key}: duplicate route name {name:?} (already used by policy.routes[{first}]); names must be unique"
    )]
    DuplicateName {
        key: String,
        name: String,
        first: usize,
    },
    /// A required scope is malformed or uses a wildcard.
    #[error("{key}: {error}")]
    Scope { key: String, error: ScopeError },
    /// `credentials: []`.
    #[error(
        "{key}: must list at least one of jwt, service_account, pat (omit the key to accept all three)"
    )]
    EmptyCredentials { key: String },
    /// `hosts: []` or `methods: []`.
    #[error("{key}: must not be empty (omit the key to match any {what})")]
    EmptyList { key: String, what: &'static str },
    /// A public route (`auth: none`) that also lists required scopes.
    #[error(
        "{key}: a route with `auth: none` cannot require scopes; remove `require` or use `auth: required`"
    )]
    PublicWithScopes { key: String },
    /// Bad host pattern.
    #[error(
        "{key}: invalid host pattern {host:?}: {reason}; accepted: an exact host like \"api.example.org\" or one leading wildcard label like \"*.example.org\" (no port)"
    )]
    Host {
        key: String,
        host: String,
        reason: &'static str,
    },
    /// Bad HTTP method token.
    #[error(
        "{key}: invalid HTTP method {method:?}; accepted: a method token such as GET, POST or PURGE"
    )]
    Method { key: String, method: String },
    /// Bad `exact` / `prefix` path.
    #[error(
        "{key}: invalid path {path:?}: {reason}; accepted: a decoded, normalised absolute path like \"/api/v1/\""
    )]
    Path {
        key: String,
        path: String,
        reason: &'static str,
    },
    /// Bad `template`.
    #[error(
        "{key}: invalid template {template:?}: {reason}; accepted: \"/literal/{{name}}/...\" segments with an optional final \"{{*rest}}\""
    )]
    Template {
        key: String,
        template: String,
        reason: String,
    },
}

impl PolicyError {
    /// The config key path the error is about, e.g. `policy.routes[2].require.all_of[0]`.
    pub fn key(&self) -> &str {
        match self {
            PolicyError::EmptyName { key }
            | PolicyError::DuplicateName { key, .. }
            | PolicyError::Scope { key, .. }
            | PolicyError::EmptyCredentials { key }
            | PolicyError::EmptyList { key, .. }
            | PolicyError::PublicWithScopes { key }
            | PolicyError::Host { key, .. }
            | PolicyError::Method { key, .. }
            | PolicyError::Path { key, .. }
            | PolicyError::Template { key, .. } => key,
        }
    }
}

/// `config check` reports policy problems like any other section's.
impl From<PolicyError> for ConfigError {
    fn from(e: PolicyError) -> Self {
        let text = e.to_string();
        let message = text
            .strip_prefix(e.key())
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&text);
        ConfigError::new(e.key(), message)
    }
}
