//! The no-op server of Envoy's *HTTP* ext_authz mode (`http_service`): any
//! request gets `200` with the shape's identity headers, at once.
//!
//! portcullis speaks gRPC ext_authz only. This server answers the question
//! issue 20 asked before building an HTTP mode: is Envoy's side of the hop
//! cheaper over HTTP? `scripts/bench-envoy` sets it against the gRPC no-op
//! of the same shape (`noop-http`, `noop-http-shaped`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::noop::NoopCheck;

/// The headers an allow of `check`'s shape sets, as HTTP response headers
/// (Envoy copies them upstream by `allowed_upstream_headers`).
pub fn headers_of(check: &NoopCheck) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let Some(HttpResponse::OkResponse(ok)) = &check.answer().http_response else {
        anyhow::bail!("the no-op answer is not an OK response");
    };
    for h in ok.headers.iter().filter_map(|o| o.header.as_ref()) {
        let value = if h.raw_value.is_empty() {
            HeaderValue::from_str(&h.value)?
        } else {
            HeaderValue::from_bytes(&h.raw_value)?
        };
        map.insert(HeaderName::from_bytes(h.key.as_bytes())?, value);
    }
    Ok(map)
}

/// Binds `addr` and answers every request with `headers` until `stop`
/// fires. HTTP/1.1, keep-alive (Envoy pools its connections).
pub async fn start(
    addr: SocketAddr,
    headers: HeaderMap,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the no-op HTTP server on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let headers = Arc::new(headers);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let headers = headers.clone();
            let svc = service_fn(move |_req| {
                let mut resp = Response::new(Empty::<Bytes>::new());
                *resp.headers_mut() = HeaderMap::clone(&headers);
                async move { Ok::<_, Infallible>(resp) }
            });
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "no-op HTTP connection ended");
                }
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noop::Shape;

    #[test]
    fn the_shaped_answer_carries_the_seven_identity_headers() {
        let one = headers_of(&NoopCheck::new(Shape::Single)).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one["x-auth-subject"], "bench");
        let seven = headers_of(&NoopCheck::new(Shape::Identity)).unwrap();
        assert_eq!(seven.len(), 7, "{seven:?}");
        assert!(seven.keys().all(|k| k.as_str().starts_with("x-auth-")));
    }
}
