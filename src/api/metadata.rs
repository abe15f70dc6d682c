//! RFC 9728 OAuth 2.0 Protected Resource Metadata: what an OAuth client
//! (MCP clients, for one) fetches to learn which authorization servers
//! issue tokens for the protected resource and which scopes it uses.
//!
//! Configured by `api.resource_metadata` (off while its `resource` is
//! unset). The document is served on the HTTP port at
//! `/.well-known/oauth-protected-resource` (plus the resource's path, if it
//! has one, as RFC 9728 §3.1 builds the URL), and Check's 401 challenges
//! point to it with `resource_metadata="<url>"` ([`ResourceMetadataConfig::url`],
//! added in `authz::response`). The issuers and the scopes are read from the
//! live engine on every request, so a policy reload shows at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::authz::Engine;

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
fn check_url(key: &str, raw: &str, https_only: bool) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| {
        format!("{key}: {raw:?} is not a URL ({e}); accepted: an absolute https URL such as https://api.example.org")
    })?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => !https_only || is_loopback(&url),
        _ => false,
    };
    if !scheme_ok || url.host().is_none() {
        return Err(format!(
            "{key}: {raw:?} is not accepted; accepted: an https URL with a host{}",
            if https_only {
                " (http only for localhost, 127.0.0.1 or [::1])"
            } else {
                ""
            }
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key}: {raw:?} carries credentials; accepted: a URL without user:password@"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!(
            "{key}: {raw:?} has a #fragment; accepted: a URL without one"
        ));
    }
    Ok(url)
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl ResourceMetadataConfig {
    /// Checks the values; messages name the offending key, what is wrong
    /// and what is accepted.
    pub fn validate(&self) -> Result<(), String> {
        const K: &str = "api.resource_metadata";
        let set_without_resource = self.resource_name.is_some()
            || self.resource_documentation.is_some()
            || self.authorization_servers.is_some()
            || self.scopes_supported.is_some();
        let Some(raw) = &self.resource else {
            if set_without_resource {
                return Err(format!(
                    "{K}.resource: not set, so the other {K} keys have no effect; accepted: the resource's public https URL, or remove the section"
                ));
            }
            return Ok(());
        };
        let url = check_url(&format!("{K}.resource"), raw, true)?;
        if url.query().is_some() {
            return Err(format!(
                "{K}.resource: {raw:?} has a ?query; accepted: a URL without one (RFC 8707)"
            ));
        }
        if let Some(name) = &self.resource_name
            && (name.trim().is_empty() || name.chars().any(char::is_control))
        {
            return Err(format!(
                "{K}.resource_name: {name:?} is empty or has control characters; accepted: a short display name"
            ));
        }
        if let Some(doc) = &self.resource_documentation {
            check_url(&format!("{K}.resource_documentation"), doc, false)?;
        }
        if let Some(servers) = &self.authorization_servers {
            if servers.is_empty() {
                return Err(format!(
                    "{K}.authorization_servers: empty; accepted: issuer URLs, or omit the key to list the configured issuers"
                ));
            }
            for (i, s) in servers.iter().enumerate() {
                check_url(&format!("{K}.authorization_servers[{i}]"), s, false)?;
            }
        }
        if let Some(scopes) = &self.scopes_supported {
            for (i, s) in scopes.iter().enumerate() {
                if !is_scope_token(s) {
                    return Err(format!(
                        "{K}.scopes_supported[{i}]: {s:?} is not an OAuth scope; accepted: printable ASCII without spaces, quotes or backslashes"
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

/// The metadata document for the live engine.
pub fn document(cfg: &ResourceMetadataConfig, engine: &Engine) -> Option<serde_json::Value> {
    let resource = cfg.resource.as_deref()?;
    let servers: Vec<String> = match &cfg.authorization_servers {
        Some(s) => s.clone(),
        None => {
            let set: BTreeSet<&str> = engine.verifier.issuer_names().collect();
            set.into_iter().map(str::to_owned).collect()
        }
    };
    let scopes: Vec<String> = match &cfg.scopes_supported {
        Some(s) => s.clone(),
        None => {
            let set: BTreeSet<&str> = engine
                .policy
                .routes()
                .iter()
                .flat_map(|r| r.all_of.iter().chain(&r.any_of))
                .map(String::as_str)
                .collect();
            set.into_iter().map(str::to_owned).collect()
        }
    };
    let mut doc = serde_json::json!({
        "resource": resource,
        "authorization_servers": servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    });
    if let Some(obj) = doc.as_object_mut() {
        if let Some(n) = &cfg.resource_name {
            obj.insert("resource_name".into(), n.clone().into());
        }
        if let Some(d) = &cfg.resource_documentation {
            obj.insert("resource_documentation".into(), d.clone().into());
        }
    }
    Some(doc)
}

#[derive(Clone)]
struct MetadataState {
    engine: Arc<ArcSwap<Engine>>,
    cfg: Arc<ResourceMetadataConfig>,
    path: Option<Arc<str>>,
}

/// `GET /.well-known/oauth-protected-resource[/…]`: the document at the
/// configured resource's well-known path, 404 elsewhere or when unset.
pub fn routes(engine: Arc<ArcSwap<Engine>>, cfg: ResourceMetadataConfig) -> axum::Router {
    let path = cfg.well_known_path().map(Arc::from);
    let state = MetadataState {
        engine,
        cfg: Arc::new(cfg),
        path,
    };
    Router::new()
        .route(WELL_KNOWN, get(serve))
        .route(&format!("{WELL_KNOWN}/{{*rest}}"), get(serve))
        .with_state(state)
}

async fn serve(State(st): State<MetadataState>, req: Request) -> Response {
    let not_found = |why: &str| {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "not_found", "error_description": why})),
        )
            .into_response()
    };
    let Some(path) = st.path.as_deref() else {
        return not_found(
            "no protected resource metadata: api.resource_metadata.resource is not set",
        );
    };
    if req.uri().path() != path {
        return not_found("no protected resource metadata at this path");
    }
    match document(&st.cfg, &st.engine.load()) {
        Some(doc) => ([(header::CACHE_CONTROL, "max-age=60")], Json(doc)).into_response(),
        None => not_found("no protected resource metadata"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(resource: &str) -> ResourceMetadataConfig {
        ResourceMetadataConfig {
            resource: Some(resource.into()),
            ..Default::default()
        }
    }

    #[test]
    fn url_inserts_the_well_known_segment_before_the_path() {
        assert_eq!(
            cfg("https://api.example.org").url().as_deref(),
            Some("https://api.example.org/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            cfg("https://api.example.org/").url().as_deref(),
            Some("https://api.example.org/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            cfg("https://api.example.org:8443/uploads").url().as_deref(),
            Some("https://api.example.org:8443/.well-known/oauth-protected-resource/uploads")
        );
        assert_eq!(ResourceMetadataConfig::default().url(), None);
    }

    #[test]
    fn validation_names_the_key_and_what_is_accepted() {
        let bad = [
            ("ftp://x.example.org", "api.resource_metadata.resource"),
            ("http://api.example.org", "api.resource_metadata.resource"),
            (
                "https://api.example.org/#x",
                "api.resource_metadata.resource",
            ),
            (
                "https://api.example.org/?a=1",
                "api.resource_metadata.resource",
            ),
            (
                "https://u:p@api.example.org",
                "api.resource_metadata.resource",
            ),
            ("not a url", "api.resource_metadata.resource"),
        ];
        for (r, key) in bad {
            let e = cfg(r).validate().unwrap_err();
            assert!(e.starts_with(&format!("{key}: ")), "{r}: {e}");
            assert!(e.contains("accepted"), "{r}: {e}");
        }
        for ok in [
            "https://api.example.org",
            "https://api.example.org/uploads",
            "http://127.0.0.1:10000",
            "http://localhost:8080",
        ] {
            assert_eq!(cfg(ok).validate(), Ok(()), "{ok}");
        }
        assert_eq!(ResourceMetadataConfig::default().validate(), Ok(()));
        let orphan = ResourceMetadataConfig {
            resource_name: Some("x".into()),
            ..Default::default()
        };
        assert!(
            orphan
                .validate()
                .unwrap_err()
                .starts_with("api.resource_metadata.resource: ")
        );
        let mut c = cfg("https://api.example.org");
        c.scopes_supported = Some(vec!["a:read".into(), "bad scope".into()]);
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("api.resource_metadata.scopes_supported[1]: ")
        );
        let mut c = cfg("https://api.example.org");
        c.authorization_servers = Some(vec!["kc.example.org".into()]);
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("api.resource_metadata.authorization_servers[0]: ")
        );
    }
}
