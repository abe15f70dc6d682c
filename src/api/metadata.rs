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

use crate::authz::Engine;
pub use crate::tokens::ResourceMetadataConfig;
pub use crate::tokens::resource_metadata::WELL_KNOWN;

/// The metadata document for the live engine.
pub fn document(cfg: &ResourceMetadataConfig, engine: &Engine) -> Option<serde_json::Value> {
    let resource = cfg.resource.as_deref()?;
    let servers: Vec<String> = match &cfg.authorization_servers {
        Some(s) => s.clone(),
        None => {
            let set: BTreeSet<&str> = engine.verifier().issuer_names().collect();
            set.into_iter().map(str::to_owned).collect()
        }
    };
    let scopes: Vec<String> = match &cfg.scopes_supported {
        Some(s) => s.clone(),
        None => {
            let set: BTreeSet<&str> = engine
                .policy()
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

    /// The first problem as `key: message`, as `config check` prints it.
    fn first(c: &ResourceMetadataConfig) -> Option<String> {
        c.validate().first().map(ToString::to_string)
    }

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
            let e = first(&cfg(r)).expect("a problem");
            assert!(e.starts_with(&format!("{key}: ")), "{r}: {e}");
            assert!(e.contains("accepted"), "{r}: {e}");
        }
        for ok in [
            "https://api.example.org",
            "https://api.example.org/uploads",
            "http://127.0.0.1:10000",
            "http://localhost:8080",
        ] {
            assert_eq!(first(&cfg(ok)), None, "{ok}");
        }
        assert_eq!(first(&ResourceMetadataConfig::default()), None);
        let orphan = ResourceMetadataConfig {
            resource_name: Some("x".into()),
            ..Default::default()
        };
        assert!(
            first(&orphan)
                .expect("a problem")
                .starts_with("api.resource_metadata.resource: ")
        );
        let mut c = cfg("https://api.example.org");
        c.scopes_supported = Some(vec!["a:read".into(), "bad scope".into()]);
        assert!(
            first(&c)
                .expect("a problem")
                .starts_with("api.resource_metadata.scopes_supported[1]: ")
        );
        let mut c = cfg("https://api.example.org");
        c.authorization_servers = Some(vec!["kc.example.org".into()]);
        assert!(
            first(&c)
                .expect("a problem")
                .starts_with("api.resource_metadata.authorization_servers[0]: ")
        );
    }
}
