//! The no-op Check server: the same tonic stack as `serve` (health and
//! reflection services beside `Authorization`, the same listener setup),
//! answering OK at once. It is the floor any ext_authz server stands on.

use std::net::SocketAddr;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use portcullis::authz::response::overwrite;

/// Allows everything, without looking at the request. With
/// `identity_headers`, the allow carries the six fixed `x-auth-*` headers a
/// portcullis JWT allow carries, to tell Envoy's cost of applying them from
/// portcullis' own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopCheck {
    pub identity_headers: bool,
}

#[tonic::async_trait]
impl Authorization for NoopCheck {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let http_response = self.identity_headers.then(|| {
            let fixed = [
                ("x-auth-subject", "bench"),
                ("x-auth-username", "bench"),
                ("x-auth-email", "bench@example.org"),
                ("x-auth-client", "portcullis-dev"),
                ("x-auth-scopes", "bench:read"),
                ("x-auth-method", "jwt"),
            ];
            HttpResponse::OkResponse(OkHttpResponse {
                headers: fixed.iter().map(|(k, v)| overwrite(k, v)).collect(),
                ..Default::default()
            })
        });
        Ok(Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            http_response,
            ..Default::default()
        }))
    }
}

/// Binds `addr` and serves on the current runtime until `stop` fires.
pub async fn start(
    addr: SocketAddr,
    check: NoopCheck,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the no-op server on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthorizationServer<NoopCheck>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(portcullis::server::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AuthorizationServer::new(check))
            .serve_with_incoming_shutdown(
                portcullis::server::grpc_incoming(listener),
                stop.cancelled_owned(),
            )
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "no-op gRPC server failed");
        }
    });
    Ok(local)
}
