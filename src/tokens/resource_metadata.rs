//! `api.resource_metadata`: the RFC 9728 protected resource metadata
//! document `api::metadata` serves, and the `resource_metadata` parameter
//! of Check's 401 challenges.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config_error::ConfigError;

/// The well-known path segment (RFC 9728 §3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// `api.resource_metadata:` config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceMetadataConfig {
    /// The protected resource's identifier: the public https URL clients
    /// call (e.g. `https://api.example.org`). Unset: no metadata document
    /// and no `resource_metadata` in `WWW-Authenticate`.
    pub resource: Option<String>,
    /// Human-readable name (`resource_name`).
    pub resource_name: Option<String>,
    /// A page documenting the resource (`resource_documentation`).
    pub resource_documentation: Option<String>,
    /// `authorization_servers`; default: every configured issuer.
    pub authorization_servers: Option<Vec<String>>,
    /// `scopes_supported`; default: every scope the policy requires.
    pub scopes_supported: Option<Vec<String>>,
}

/// Is `host` a loopback name or address (http is allowed there)?
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// Checks an http(s) URL field; `https_only` refuses http except on loopback.
pub(super) fn check_url(key: &str, raw: &str, https_only: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| {
        ConfigError::new(key, format!("{raw:?} is not a URL ({e}); accepted: an absolute https URL such as https://api.example.org"))
    })?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => !https_only || is_loopback(&url),
        _ => false,
    };
    if !scheme_ok || url.host().is_none() {
        return Err(ConfigError::new(
            key,
            format!(
                "{raw:?} is not accepted; accepted: an https URL with a host{}",
                if https_only {
                    " (http only for localhost, 127.0.0.1 or [::1])"
                } else {
                    ""
                }
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{raw:?} carries credentials; accepted: a URL without user:password@"),
        ));
    }
    if url.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{raw:?} has a #fragment; accepted: a URL without one"),
        ));
    }
    Ok(url)
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
pub(super) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl ResourceMetadataConfig {
    /// Checks the values; messages name the offending key, what is wrong
    /// and what is accepted.
    pub fn validate(&self) -> Vec<ConfigError> {
        self.first_problem().err().into_iter().collect()
    }

    /// The first problem found (the checks depend on each other: a bad
    /// `resource` makes the rest moot).
    fn first_problem(&self) -> Result<(), ConfigError> {
        const K: &str = "api.resource_metadata";
        let set_without_resource = self.resource_name.is_some()
            || self.resource_documentation.is_some()
            || self.authorization_servers.is_some()
            || self.scopes_supported.is_some();
        let Some(raw) = &self.resource else {
            if set_without_resource {
                return Err(ConfigError::new(
                    format!("{K}.resource"),
                    format!(
                        "not set, so the other {K} keys have no effect; accepted: the resource's public https URL, or remove the section"
                    ),
                ));
            }
            return Ok(());
        };
        let url = check_url(&format!("{K}.resource"), raw, true)?;
        if url.query().is_some() {
            return Err(ConfigError::new(
                format!("{K}.resource"),
                format!("{raw:?} has a ?query; accepted: a URL without one (RFC 8707)"),
            ));
        }
        if let Some(name) = &self.resource_name
            && (name.trim().is_empty() || name.chars().any(char::is_control))
        {
            return Err(ConfigError::new(
                format!("{K}.resource_name"),
                format!(
                    "{name:?} is empty or has control characters; accepted: a short display name"
                ),
            ));
        }
        if let Some(doc) = &self.resource_documentation {
            check_url(&format!("{K}.resource_documentation"), doc, false)?;
        }
        if let Some(servers) = &self.authorization_servers {
            if servers.is_empty() {
                return Err(ConfigError::new(
                    format!("{K}.authorization_servers"),
                    "empty; accepted: issuer URLs, or omit the key to list the configured issuers",
                ));
            }
            for (i, s) in servers.iter().enumerate() {
                check_url(&format!("{K}.authorization_servers[{i}]"), s, false)?;
            }
        }
        if let Some(scopes) = &self.scopes_supported {
            for (i, s) in scopes.iter().enumerate() {
                if !is_scope_token(s) {
                    return Err(ConfigError::new(
                        format!("{K}.scopes_supported[{i}]"),
                        format!(
                            "{s:?} is not an OAuth scope; accepted: printable ASCII without spaces, quotes or backslashes"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where the metadata document is published (RFC 9728 §3.1: the
    /// well-known segment goes between the host and the resource's path),
    /// or `None` when `resource` is unset or invalid.
    pub fn url(&self) -> Option<String> {
        let mut url = Url::parse(self.resource.as_deref()?).ok()?;
        url.set_path(&self.well_known_path()?);
        url.set_query(None);
        url.set_fragment(None);
        Some(url.to_string())
    }

    /// The path part of [`ResourceMetadataConfig::url`].
    pub fn well_known_path(&self) -> Option<String> {
        let url = Url::parse(self.resource.as_deref()?).ok()?;
        let path = url.path().trim_end_matches('/');
        Some(format!("{WELL_KNOWN}{path}"))
    }
}
