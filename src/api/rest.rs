//! REST JSON token API on the HTTP port (`/api/v1/...`). Handlers only
//! translate HTTP ↔ [`TokenService`]; every rule lives there.

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::limits::{BodyLimit, PeerAddr, read_body};
use crate::tokens::{
    ApiError, AuditParams, Caller, CreateInput, DeliveryParams, InventoryParams, LeakAuth,
    RotateInput, TokenService,
};

/// The `/api/v1` routes; request bodies are limited to `max_body` bytes
/// (`api.max_body_bytes`) and read only after the caller is authenticated.
pub fn routes(svc: TokenService, max_body: usize) -> Router {
    Router::new()
        .route("/api/v1/meta", get(meta))
        .route("/api/v1/tokens", post(create).get(list))
        // The seeds' name for token creation; same handler and rules.
        .route("/api/v1/users/tokens", post(create).get(list))
        .route("/api/v1/tokens/self", get(get_self).delete(revoke_self))
        .route("/api/v1/tokens/revoke-leaked", post(revoke_leaked))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/admin/webhooks/deliveries", get(deliveries))
        .route("/api/v1/admin/tokens", get(inventory))
        .route("/api/v1/tokens/{id}", get(get_one).delete(revoke))
        .route("/api/v1/tokens/{id}/rotate", post(rotate))
        .route(
            "/api/v1/admin/users/{sub}/tokens",
            get(admin_list).delete(admin_revoke),
        )
        .layer(Extension(BodyLimit(max_body)))
        .with_state(svc)
}

/// An error as JSON `{error, error_description}`.
pub struct ErrorResponse(pub ApiError);

impl From<ApiError> for ErrorResponse {
    fn from(e: ApiError) -> Self {
        ErrorResponse(e)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let e = self.0;
        e.log();
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut resp = (status, Json(e.body())).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if e.status == 401 {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\", error=\"invalid_token\""),
            );
        }
        resp
    }
}

type ApiResult = Result<Response, ErrorResponse>;

fn ok<T: Serialize>(status: StatusCode, body: T) -> ApiResult {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn authorization(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// The client address of the call (`audit.trusted_proxies`,
/// `audit.trusted_proxy_hops`).
fn client_addr(svc: &TokenService, h: &HeaderMap, peer: Option<&PeerAddr>) -> Option<String> {
    let xff: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    svc.client_addr(&xff, peer.map(|p| p.0))
}

async fn caller(svc: &TokenService, h: &HeaderMap) -> Result<Caller, ErrorResponse> {
    Ok(svc.caller(authorization(h)).await?)
}

/// [`caller`] with its client address, for calls that change something.
async fn acting(
    svc: &TokenService,
    h: &HeaderMap,
    peer: Option<&PeerAddr>,
) -> Result<Caller, ErrorResponse> {
    Ok(caller(svc, h)
        .await?
        .with_client_addr(client_addr(svc, h, peer)))
}

/// JSON body → `T`; an empty body is `T::default()`. Errors are 400, or 413
/// over the limit. Called after [`caller`], so an unauthenticated request is
/// answered without its body being read.
async fn body<T: DeserializeOwned + Default>(
    h: &HeaderMap,
    b: Body,
    limit: BodyLimit,
) -> Result<T, ErrorResponse> {
    body_with(h, b, limit, |e| format!("request body: {e}")).await
}

/// [`body`] with the 400's text made by `describe` (serde's own message
/// quotes the offending input, which may be a secret).
async fn body_with<T: DeserializeOwned + Default>(
    h: &HeaderMap,
    b: Body,
    limit: BodyLimit,
    describe: fn(&serde_json::Error) -> String,
) -> Result<T, ErrorResponse> {
    let b: Bytes = read_body(h, b, limit).await?;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&b).map_err(|e| ApiError::invalid_request(describe(&e)).into())
}

async fn meta(State(svc): State<TokenService>, h: HeaderMap) -> ApiResult {
    let c = match authorization(&h) {
        None => None,
        Some(_) => Some(caller(&svc, &h).await?),
    };
    ok(StatusCode::OK, svc.meta(c.as_ref()))
}

async fn create(
    State(svc): State<TokenService>,
    Extension(limit): Extension<BodyLimit>,
    peer: Option<Extension<PeerAddr>>,
    h: HeaderMap,
    b: Body,
) -> ApiResult {
    let c = acting(&svc, &h, peer.as_deref()).await?;
    let input: CreateInput = body(&h, b, limit).await?;
    ok(StatusCode::CREATED, svc.create(&c, input).await?)
}

async fn list(State(svc): State<TokenService>, h: HeaderMap) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.list(&c).await?)
}

async fn get_self(State(svc): State<TokenService>, h: HeaderMap) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.get_self(&c).await?)
}

async fn get_one(
    State(svc): State<TokenService>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.get(&c, &id).await?)
}

async fn revoke(
    State(svc): State<TokenService>,
    Path(id): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    h: HeaderMap,
) -> ApiResult {
    let c = acting(&svc, &h, peer.as_deref()).await?;
    ok(StatusCode::OK, svc.revoke(&c, &id).await?)
}

async fn rotate(
    State(svc): State<TokenService>,
    Path(id): Path<String>,
    Extension(limit): Extension<BodyLimit>,
    peer: Option<Extension<PeerAddr>>,
    h: HeaderMap,
    b: Body,
) -> ApiResult {
    let c = acting(&svc, &h, peer.as_deref()).await?;
    let input: RotateInput = body(&h, b, limit).await?;
    ok(StatusCode::CREATED, svc.rotate(&c, &id, input).await?)
}

/// `?issuer=` of the admin calls: which issuer's `sub` is meant.
#[derive(Debug, Deserialize)]
struct AdminQuery {
    issuer: Option<String>,
}

async fn admin_list(
    State(svc): State<TokenService>,
    Path(sub): Path<String>,
    Query(q): Query<AdminQuery>,
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(
        StatusCode::OK,
        svc.admin_list(&c, &sub, q.issuer.as_deref()).await?,
    )
}

async fn admin_revoke(
    State(svc): State<TokenService>,
    Path(sub): Path<String>,
    Query(q): Query<AdminQuery>,
    peer: Option<Extension<PeerAddr>>,
    h: HeaderMap,
) -> ApiResult {
    let c = acting(&svc, &h, peer.as_deref()).await?;
    ok(
        StatusCode::OK,
        svc.admin_revoke(&c, &sub, q.issuer.as_deref()).await?,
    )
}

async fn revoke_self(
    State(svc): State<TokenService>,
    peer: Option<Extension<PeerAddr>>,
    h: HeaderMap,
) -> ApiResult {
    let c = acting(&svc, &h, peer.as_deref()).await?;
    ok(StatusCode::OK, svc.revoke_self(&c).await?)
}

async fn audit(
    State(svc): State<TokenService>,
    Query(q): Query<AuditParams>,
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.audit(&c, q).await?)
}

async fn deliveries(
    State(svc): State<TokenService>,
    Query(q): Query<DeliveryParams>,
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.deliveries(&c, q).await?)
}

/// Header a secret scanner sends instead of an admin login token.
pub const LEAK_SECRET_HEADER: &str = "x-portcullis-leak-secret";

/// `POST /api/v1/tokens/revoke-leaked` body: `{"tokens": ["pat_…", …]}`.
/// Its `Debug` prints how many tokens, never them.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakBody {
    #[serde(default)]
    tokens: Vec<String>,
}

impl std::fmt::Debug for LeakBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakBody")
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

/// The 400 for a malformed leak report: where, never what (serde would
/// quote the reported token).
fn leak_body_error(e: &serde_json::Error) -> String {
    format!(
        "request body: expected {{\"tokens\": [\"<token>\", ...]}}; not valid at line {}, column {}",
        e.line(),
        e.column()
    )
}

async fn revoke_leaked(
    State(svc): State<TokenService>,
    Extension(limit): Extension<BodyLimit>,
    peer: Option<Extension<PeerAddr>>,
    h: HeaderMap,
    b: Body,
) -> ApiResult {
    let started = std::time::Instant::now();
    let work = async {
        let auth = match h.get(LEAK_SECRET_HEADER) {
            Some(v) => LeakAuth::Secret {
                presented: v.to_str().unwrap_or_default().to_owned(),
                client_addr: client_addr(&svc, &h, peer.as_deref()),
            },
            None => LeakAuth::Caller(acting(&svc, &h, peer.as_deref()).await?),
        };
        let reporter = svc.leak_reporter(auth)?;
        let input: LeakBody = body_with(&h, b, limit, leak_body_error).await?;
        ok(
            StatusCode::ACCEPTED,
            svc.revoke_leaked(&reporter, input.tokens).await?,
        )
    };
    svc.leak_padded(started, work).await
}

async fn inventory(
    State(svc): State<TokenService>,
    Query(q): Query<InventoryParams>,
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.inventory(&c, q).await?)
}
