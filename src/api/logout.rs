//! `POST /backchannel-logout`: OpenID Connect Back-Channel Logout 1.0 on the
//! HTTP port, the URL a Keycloak client's "Backchannel logout URL" names.
//!
//! The form field `logout_token` is validated by
//! [`Verifier::verify_logout`](crate::jwt::Verifier::verify_logout) (§2.6),
//! then its `jti` must be new to this replica (a bounded replay cache, kept
//! while the token's `iat` is still acceptable). A valid token records a
//! logout mark through [`Revoker::logout`] (store, this replica, the bus):
//! its `sid` when present, else its `sub` with the token's `iat` as
//! not-before. Answers: 200 (empty), 400 `invalid_request` for anything
//! invalid (nothing changes), 404 while no issuer has `backchannel_logout`,
//! 503 when the keys or the store are unavailable (nothing changes, a retry
//! may pass). Every answer carries `Cache-Control: no-store`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{TimeDelta, Utc};
use moka::sync::Cache;

use super::limits::PeerAddr;
use crate::authz::Engine;
use crate::jwt::{LogoutToken, LogoutTokenError};
use crate::revocation::Revoker;
use crate::store::{Actor, ActorKind, Cause, LogoutClaims, LogoutKind, LogoutMark};

/// The endpoint's path (a public contract).
pub const PATH: &str = "/backchannel-logout";
/// Most logout `jti`s remembered at once.
const REPLAY_CAPACITY: u64 = 100_000;

/// State of the endpoint: the live engine (keys, issuer settings), the
/// revocation path and this replica's replay cache.
#[derive(Clone)]
pub struct LogoutState {
    engine: Arc<ArcSwap<Engine>>,
    revoker: Revoker,
    /// `issuer \n jti` → how long to remember it.
    replay: Cache<String, Duration>,
    max_body: usize,
}

/// Keep each `jti` for its own replay window.
struct ForWindow;

impl moka::Expiry<String, Duration> for ForWindow {
    fn expire_after_create(
        &self,
        _k: &String,
        window: &Duration,
        _now: Instant,
    ) -> Option<Duration> {
        Some(*window)
    }
}

impl LogoutState {
    pub fn new(engine: Arc<ArcSwap<Engine>>, revoker: Revoker, max_body: usize) -> Self {
        LogoutState {
            engine,
            revoker,
            replay: Cache::builder()
                .max_capacity(REPLAY_CAPACITY)
                .expire_after(ForWindow)
                .build(),
            max_body,
        }
    }
}

/// The route, merged into the HTTP router.
pub fn routes(state: LogoutState) -> Router {
    Router::new()
        .route(PATH, post(backchannel_logout))
        .with_state(state)
}

fn no_store(status: StatusCode, body: Option<serde_json::Value>) -> Response {
    let mut resp = match body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    no_store(
        status,
        Some(serde_json::json!({"error": error, "error_description": description})),
    )
}

/// A refused logout token: counted, logged without the token, answered.
fn refused(e: &LogoutTokenError) -> Response {
    crate::metrics::global().logout_token(Some(e.reason()));
    tracing::warn!(reason = e.reason(), error = %e, "back-channel logout token refused");
    match e {
        LogoutTokenError::KeysUnavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "signing keys unavailable; try again",
        ),
        other => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("invalid logout token: {other}"),
        ),
    }
}

fn bad_form(description: &str) -> Response {
    crate::metrics::global().logout_token(Some("request"));
    error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

async fn backchannel_logout(
    State(st): State<LogoutState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let engine = st.engine.load_full();
    if !engine.verifier().accepts_backchannel_logout() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "back-channel logout is not configured",
        );
    }
    let token = match logout_token_field(&headers, body, st.max_body).await {
        Ok(t) => t,
        Err(why) => return bad_form(why),
    };
    let lt = match engine.verifier().verify_logout(&token).await {
        Ok(lt) => lt,
        Err(e) => return refused(&e),
    };
    let key = format!("{}\n{}", lt.issuer, lt.jti);
    // `or_insert_with`: moka's per-key initializer lets one of two
    // concurrent deliveries of the same token through (`or_insert` is a
    // get then an insert, so both could be "fresh").
    if !st
        .replay
        .entry(key.clone())
        .or_insert_with(|| lt.replay_window)
        .is_fresh()
    {
        return refused(&LogoutTokenError::Replayed);
    }
    let Some(mark) = mark_for(&lt) else {
        return refused(&LogoutTokenError::Claims("neither sid nor sub is present"));
    };
    let kind = mark.kind.as_str();
    // Audit: the issuer acted (its verified logout token), from this address.
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cause = Cause {
        actor: Actor {
            kind: ActorKind::Idp,
            issuer: lt.issuer.to_string(),
            client_addr: engine.client_addrs().http(&xff, peer.map(|p| p.0.0)),
            ..Actor::default()
        },
        reason: "backchannel_logout",
    };
    let claims = LogoutClaims {
        sub: lt.sub.clone(),
        sid: lt.sid.clone(),
        jti: Some(lt.jti.clone()),
    };
    if let Err(e) = st.revoker.logout(mark, &claims, &cause).await {
        // Nothing was recorded: let a retry of the same token through.
        st.replay.invalidate(&key);
        tracing::warn!(error = %e, "recording a back-channel logout failed; answering 503");
        crate::metrics::global().backend_error("store");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "token store unavailable; try again",
        );
    }
    crate::metrics::global().logout_token(None);
    tracing::info!(issuer = %lt.issuer, kind, jti = %lt.jti, "back-channel logout accepted");
    no_store(StatusCode::OK, None)
}

/// What a logout refuses: the session when `sid` is present (§2.7), else
/// every token of the subject issued up to the logout token's `iat`; kept
/// until now + `max_token_lifetime`.
fn mark_for(lt: &LogoutToken) -> Option<LogoutMark> {
    let now = Utc::now();
    let keep = TimeDelta::from_std(lt.max_token_lifetime).unwrap_or(TimeDelta::hours(1));
    let iat = chrono::DateTime::from_timestamp(lt.iat, 0).unwrap_or(now);
    let (kind, value) = match (&lt.sid, &lt.sub) {
        (Some(sid), _) => (LogoutKind::Sid, sid.clone()),
        (None, Some(sub)) => (LogoutKind::Sub, sub.clone()),
        (None, None) => return None,
    };
    Some(LogoutMark {
        issuer: lt.issuer.to_string(),
        kind,
        value,
        not_before: iat,
        expires_at: now.max(iat) + keep,
        changed_at: now,
    })
}

/// The one `logout_token` of an `application/x-www-form-urlencoded` body.
async fn logout_token_field(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<String, &'static str> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err("the body must be application/x-www-form-urlencoded");
    }
    let bytes = axum::body::to_bytes(body, max_body)
        .await
        .map_err(|_| "the body is too large or unreadable")?;
    let mut tokens = form_urlencoded::parse(&bytes)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => Ok(t),
        (Some(_), Some(_)) => Err("logout_token is given more than once"),
        _ => Err("missing form parameter logout_token"),
    }
}
