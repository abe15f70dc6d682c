//! Protection of the HTTP port (`listen.http`): header-read and whole-request
//! timeouts, a cap on open connections, and a body limit applied only after
//! the caller is known.
//!
//! `axum::serve` runs hyper without a timer, so a client that sends half a
//! request line holds a connection (and a task) forever; and axum's `Bytes`
//! extractor reads up to 2 MiB before the handler can look at
//! `Authorization`. This module replaces both: [`serve`] is our own accept
//! loop over hyper's HTTP/1 connection with `header_read_timeout`, and
//! [`read_body`] is what handlers call once they have authenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::tokens::{ApiConfig, ApiError};

/// The TCP peer of an HTTP request (a request extension), for the client
/// address recorded in the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The HTTP port's limits, from `api.*`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
}

impl From<&ApiConfig> for HttpLimits {
    fn from(c: &ApiConfig) -> Self {
        HttpLimits {
            header_read_timeout: c.header_read_timeout,
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
            max_body_bytes: c.max_body_bytes,
        }
    }
}

/// The body limit, as a request extension for handlers that read a body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: 413,
        error: "invalid_request",
        description: format!("request body larger than {limit} bytes"),
        upstream_error: None,
        cause: None,
    }
}

/// Reads a request body of at most `limit` bytes. Call it only after the
/// caller is authenticated: an unauthenticated client must not make us read
/// (or buffer) anything. A declared `Content-Length` over the limit is
/// refused before a byte is read.
pub async fn read_body(h: &HeaderMap, body: Body, limit: BodyLimit) -> Result<Bytes, ApiError> {
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.0 as u64) {
        return Err(too_large(limit.0));
    }
    match Limited::new(body, limit.0).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit.0)),
        Err(e) => Err(ApiError::invalid_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Answers 408 when a request (its body read included) outlasts `limit`.
async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = (StatusCode::REQUEST_TIMEOUT, "request timeout\n").into_response();
            // The rest of the request may still be on the wire: do not
            // reuse the connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then waits for open
/// connections to finish their current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let app = app.layer(middleware::from_fn_with_state(
        limits.request_timeout,
        request_timeout,
    ));
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        // Over the cap, close at once rather than queue: a queued socket
        // would still hold a file descriptor and the kernel backlog.
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "HTTP connection cap reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone().layer(axum::Extension(PeerAddr(peer))));
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, svc, limits, shutdown).await;
        });
    }
    // Free the port now (a restart may bind it while we drain).
    drop(listener);
    // Every connection holds a permit until it ends: taking them all back
    // waits for in-flight requests (each bounded by request_timeout).
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = conns.acquire_many(all).await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    svc: TowerToHyperService<Router>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        // Timeouts and clients hanging up are routine.
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
