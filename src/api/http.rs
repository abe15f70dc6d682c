//! HTTP routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::authz::Engine;
use crate::dev::{DevIssuer, REALM_PATH};
use crate::revocation::Revoker;

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct HttpState {
    /// The live engine (for readiness: are keys loaded?).
    pub engine: Arc<ArcSwap<Engine>>,
    /// Set when shutdown begins, so `/readyz` fails first and traffic drains.
    pub draining: Arc<AtomicBool>,
    /// The dev issuer, when serving `--dev`.
    pub dev: Option<Arc<DevIssuer>>,
    /// Every token revocation goes through this.
    pub revoker: Revoker,
}

/// Builds the HTTP router.
pub fn router(state: HttpState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(assertion_jwks));
    if state.dev.is_some() {
        r = r
            .route(
                &format!("{REALM_PATH}/.well-known/openid-configuration"),
                get(dev_discovery),
            )
            .route(
                &format!("{REALM_PATH}/protocol/openid-connect/certs"),
                get(dev_certs),
            );
    }
    r.with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::global().encode(),
    )
}

async fn readyz(State(st): State<HttpState>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if st.draining.load(Ordering::Acquire) {
        problems.push("shutting down".to_owned());
    }
    let engine = st.engine.load();
    for km in engine.verifier().key_managers() {
        if !km.is_ready() {
            problems.push(format!("no signing keys loaded for issuer {}", km.issuer()));
        }
    }
    if let Err(e) = engine.pats().store().ping().await {
        problems.push(format!("token store unreachable: {e}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "problems": problems})),
        )
    }
}

async fn dev_discovery(State(st): State<HttpState>) -> impl IntoResponse {
    match &st.dev {
        Some(dev) => Json(dev.discovery()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Public keys of the identity assertions (`x-auth-assertion`); 404 when
/// no route asks for assertions.
async fn assertion_jwks(State(st): State<HttpState>) -> impl IntoResponse {
    match &st.engine.load().surface().assertions {
        Some(a) => Json(a.jwks().clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn dev_certs(State(st): State<HttpState>) -> impl IntoResponse {
    match &st.dev {
        Some(dev) => Json(dev.jwks().clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
