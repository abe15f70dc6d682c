//! `GET /ui`: the token-management page. Plain HTML, CSS and JS embedded in
//! the binary; the page talks to the REST API with a bearer login token:
//! with `api.ui.oidc`, one it obtained by signing the user in at Keycloak
//! (authorization code + PKCE, `oidc.js`; held in the page's memory only);
//! otherwise one the user pastes (or, in `--dev`, mints through
//! `POST /ui/dev-login`). `GET /ui/config.json` tells the page which.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::limits::{BodyLimit, read_body};
use super::rest::ErrorResponse;
use crate::dev::{DevIssuer, DevTokenSpec};
use crate::scope::{self, ScopeRole};
use crate::tokens::{ApiError, UiConfig, UiOidcConfig};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const OIDC_JS: &str = include_str!("oidc.js");
const STYLE: &str = include_str!("style.css");

/// Content-Security-Policy: only our own files, no inline code; the page
/// may connect to itself and, with `api.ui.oidc`, to the issuer's origin
/// (discovery, token endpoint), nothing else.
fn csp(ui: &UiConfig) -> String {
    let issuer = ui
        .oidc
        .as_ref()
        .and_then(|o| o.issuer_origin())
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'{issuer}; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// What `GET /ui/config.json` tells the page.
#[derive(Debug, Serialize)]
struct PageConfig<'a> {
    /// How to sign in; absent: paste a token (or the dev login).
    oidc: Option<&'a UiOidcConfig>,
}

/// The page's routes; `dev` adds `POST /ui/dev-login`, answering only
/// requests addressed to loopback on `http_addr`'s port; bodies are limited
/// to `max_body` bytes.
pub fn routes(
    ui: &UiConfig,
    dev: Option<Arc<DevIssuer>>,
    http_addr: SocketAddr,
    max_body: usize,
) -> Router {
    let csp: Arc<str> = csp(ui).into();
    let config: Arc<str> = serde_json::to_string(&PageConfig {
        oidc: ui.oidc.as_ref(),
    })
    .unwrap_or_else(|_| "{}".into())
    .into();
    let page = |ct: &'static str, body: &'static str| {
        let csp = csp.clone();
        get(move || async move { asset(ct, body, &csp) })
    };
    let mut r = Router::new()
        .route("/ui", page(HTML, INDEX))
        .route("/ui/", page(HTML, INDEX))
        .route("/ui/app.js", page(JS, APP_JS))
        .route("/ui/oidc.js", page(JS, OIDC_JS))
        .route("/ui/style.css", page("text/css; charset=utf-8", STYLE));
    let c = csp.clone();
    r = r.route(
        "/ui/config.json",
        get(move || async move {
            let mut resp = asset("application/json", config.to_string(), &c);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }),
    );
    if let Some(dev) = dev {
        let st = DevLoginState {
            dev,
            port: http_addr.port(),
            limit: BodyLimit(max_body),
        };
        r = r.route("/ui/dev-login", post(dev_login).with_state(st));
    }
    r
}

#[derive(Clone)]
struct DevLoginState {
    dev: Arc<DevIssuer>,
    /// The port we listen on: the only one a loopback `Host` may name.
    port: u16,
    limit: BodyLimit,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

fn asset(content_type: &'static str, body: impl Into<Body>, csp: &str) -> Response {
    let mut resp = (StatusCode::OK, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The issuer origin was checked as a URL by `config check`; a value
    // that still is no header value leaves the strictest policy.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(csp).unwrap_or_else(|_| {
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
        }),
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevLogin {
    sub: String,
    /// Space-separated.
    #[serde(default)]
    scopes: String,
}

/// `Host` is one of `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` (the
/// port may be left out only when it is 80, as browsers do).
fn is_loopback_authority(authority: &str, port: u16) -> bool {
    let (host, p) = match authority.rsplit_once(':') {
        // `[::1]` alone: the colon found is inside the brackets.
        Some((h, p)) if !p.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port_ok = match p {
        Some(p) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse() == Ok(port),
        None => port == 80,
    };
    port_ok && (host == "127.0.0.1" || host == "[::1]" || host.eq_ignore_ascii_case("localhost"))
}

/// DNS rebinding: a page on `evil.example` whose name later resolves to
/// 127.0.0.1 can POST here from the victim's browser; the browser then sends
/// `Host: evil.example:PORT` and `Origin: http://evil.example:PORT`. So the
/// login answers only when both name loopback on our port.
fn check_loopback(h: &HeaderMap, port: u16) -> Result<(), ApiError> {
    let refused = |what: &str| ApiError {
        status: 403,
        error: "access_denied",
        description: format!(
            "dev login: {what} must be http://127.0.0.1:{port}, http://localhost:{port} or http://[::1]:{port}"
        ),
        upstream_error: None,
        cause: None,
    };
    let mut hosts = h.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    };
    if !host.is_some_and(|v| is_loopback_authority(v, port)) {
        return Err(refused("Host"));
    }
    let mut origins = h.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => Ok(()),
        (Some(v), None)
            if v.to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|a| is_loopback_authority(a, port)) =>
        {
            Ok(())
        }
        _ => Err(refused("Origin")),
    }
}

/// `--dev` only: mints a one-hour login token for the chosen user.
async fn dev_login(
    State(st): State<DevLoginState>,
    h: HeaderMap,
    b: Body,
) -> Result<Response, ErrorResponse> {
    check_loopback(&h, st.port)?;
    let b = read_body(&h, b, st.limit).await?;
    let dev = &st.dev;
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
