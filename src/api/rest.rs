//! REST JSON token API on the HTTP port (`/api/v1/...`). Handlers only
//! translate HTTP ↔ [`TokenService`]; every rule lives there.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tokens::{ApiError, Caller, CreateInput, RotateInput, TokenService};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

/// The `/api/v1` routes.
pub fn routes(svc: TokenService) -> Router {
    Router::new()
        .route("/api/v1/meta", get(meta))
        .route("/api/v1/tokens", post(create).get(list))
        // The seeds' name for token creation; same handler and rules.
        .route("/api/v1/users/tokens", post(create).get(list))
        .route("/api/v1/tokens/self", get(get_self))
        .route("/api/v1/tokens/{id}", get(get_one).delete(revoke))
        .route("/api/v1/tokens/{id}/rotate", post(rotate))
        .route(
            "/api/v1/admin/users/{sub}/tokens",
            get(admin_list).delete(admin_revoke),
        )
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

async fn caller(svc: &TokenService, h: &HeaderMap) -> Result<Caller, ErrorResponse> {
    Ok(svc.caller(authorization(h)).await?)
}

/// JSON body → `T`; an empty body is `T::default()`. Errors are 400.
fn body<T: DeserializeOwned + Default>(b: &Bytes) -> Result<T, ErrorResponse> {
    if b.len() > MAX_BODY {
        return Err(ApiError::invalid_request("request body too large").into());
    }
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| ApiError::invalid_request(format!("request body: {e}")).into())
}

async fn meta(State(svc): State<TokenService>, h: HeaderMap) -> ApiResult {
    let c = match authorization(&h) {
        None => None,
        Some(_) => Some(caller(&svc, &h).await?),
    };
    ok(StatusCode::OK, svc.meta(c.as_ref()))
}

async fn create(State(svc): State<TokenService>, h: HeaderMap, b: Bytes) -> ApiResult {
    let c = caller(&svc, &h).await?;
    let input: CreateInput = body(&b)?;
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
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(StatusCode::OK, svc.revoke(&c, &id).await?)
}

async fn rotate(
    State(svc): State<TokenService>,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    let input: RotateInput = body(&b)?;
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
    h: HeaderMap,
) -> ApiResult {
    let c = caller(&svc, &h).await?;
    ok(
        StatusCode::OK,
        svc.admin_revoke(&c, &sub, q.issuer.as_deref()).await?,
    )
}
