//! `GET /ui`: the token-management page. Plain HTML, CSS and JS embedded in
//! the binary; the page talks to the REST API with the login token the user
//! pastes (or, in `--dev`, mints through `POST /ui/dev-login`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::rest::ErrorResponse;
use crate::dev::{DevIssuer, DevTokenSpec};
use crate::scope::{self, ScopeRole};
use crate::tokens::ApiError;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Content-Security-Policy: only our own files, no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes; `dev` adds `POST /ui/dev-login`.
pub fn routes(dev: Option<Arc<DevIssuer>>) -> Router {
    let mut r = Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style));
    if let Some(d) = dev {
        r = r.route("/ui/dev-login", post(dev_login).with_state(d));
    }
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevLogin {
    sub: String,
    /// Space-separated.
    #[serde(default)]
    scopes: String,
}

/// `--dev` only: mints a one-hour login token for the chosen user.
async fn dev_login(State(dev): State<Arc<DevIssuer>>, b: Bytes) -> Result<Response, ErrorResponse> {
    let req: DevLogin = serde_json::from_slice(&b)
        .map_err(|e| ApiError::invalid_request(format!("request body: {e}")))?;
    let sub = req.sub.trim();
    if sub.is_empty()
        || sub.len() > 100
        || !sub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return Err(ApiError::invalid_request("sub: 1-100 characters of [A-Za-z0-9._@-]").into());
    }
    let scopes: Vec<String> = req.scopes.split_whitespace().map(str::to_owned).collect();
    for s in &scopes {
        scope::validate(s, ScopeRole::Granted)
            .map_err(|e| ApiError::invalid_request(format!("scopes: {e}")))?;
    }
    let token = dev
        .mint(&DevTokenSpec {
            sub: sub.to_owned(),
            username: Some(sub.to_owned()),
            email: None,
            scopes,
            expires_in: Duration::from_secs(3600),
            client: "portcullis-ui".into(),
        })
        .map_err(|e| ApiError::internal(format!("minting a dev token failed: {e}")))?;
    tracing::info!(sub = %sub, "dev login token minted for the web page");
    let mut resp = Json(serde_json::json!({ "token": token })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
