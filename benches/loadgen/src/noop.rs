//! The no-op Check servers: the same tonic stack as `serve` (health and
//! reflection services beside `Authorization`, the same listener setup),
//! answering OK at once. They are the floor any ext_authz server stands on.
//!
//! Two response shapes, so a comparison can tell the cost of deciding from
//! the cost of the answer's size:
//! - [`Shape::Single`]: OK with one header, the least an allow carries;
//! - [`Shape::Identity`]: OK shaped like a portcullis allow of a dev-issuer
//!   JWT (built by portcullis' own response builder once, at start): the
//!   seven `x-auth-*` identity headers, one client header to remove, and the
//!   identity as dynamic metadata. Each Check clones the prebuilt message,
//!   as a server holding a ready answer would.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use portcullis::authz::Decision;
use portcullis::authz::request::RequestView;
use portcullis::identity::{CredentialKind, Identity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use portcullis::authz::response::overwrite;

/// What the no-op server answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// OK with one `x-auth-subject` header.
    #[default]
    Single,
    /// OK shaped like portcullis' allow of a JWT: seven identity headers,
    /// one header to remove, dynamic metadata.
    Identity,
}

/// Allows everything, without looking at the request.
#[derive(Debug, Clone)]
pub struct NoopCheck {
    answer: Arc<CheckResponse>,
    /// Print what each CheckRequest carries (header names, method, host,
    /// path): to see what an Envoy config sends.
    show: bool,
}

impl Default for NoopCheck {
    fn default() -> Self {
        NoopCheck::new(Shape::Single)
    }
}

impl NoopCheck {
    pub fn new(shape: Shape) -> NoopCheck {
        let answer = match shape {
            Shape::Single => CheckResponse {
                status: Some(RpcStatus {
                    code: 0,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![overwrite("x-auth-subject", "bench")],
                    ..Default::default()
                })),
                ..Default::default()
            },
            Shape::Identity => identity_allow(),
        };
        NoopCheck {
            answer: Arc::new(answer),
            show: false,
        }
    }

    /// Prints each request's header names and HTTP attributes on stderr.
    pub fn showing_requests(mut self) -> NoopCheck {
        self.show = true;
        self
    }

    /// The answer every Check gets.
    pub fn answer(&self) -> &CheckResponse {
        &self.answer
    }
}

/// portcullis' own allow for a dev-issuer JWT of the bench's shape, with
/// a client-sent `x-auth-user` to remove.
fn identity_allow() -> CheckResponse {
    let id = Identity {
        kind: CredentialKind::Jwt,
        subject: "bench-0123abcd-42".into(),
        username: Some("bench42".into()),
        email: Some("bench42@example.org".into()),
        client: Some("portcullis-bench".into()),
        scopes: vec!["bench:read".to_owned(), "bench:write".to_owned()].into(),
        token_id: None,
        issuer: Some(Arc::from("http://127.0.0.1:9192/realms/dev")),
        expires_at: 0,
        claims: Vec::new(),
        rendered: Default::default(),
    };
    let req = portcullis_testkit::Req::get("/bench/items/42?q=1")
        .header("x-auth-user", "spoofed")
        .input();
    portcullis::authz::response::build(&Decision::Allow(Arc::new(id)), &RequestView::new(&req))
}

#[tonic::async_trait]
impl Authorization for NoopCheck {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        if self.show {
            show(request.get_ref());
        }
        Ok(Response::new(CheckResponse::clone(&self.answer)))
    }
}

/// One line per request: the HTTP attributes Envoy filled in and the
/// header names it sent (values never: they carry credentials).
fn show(req: &CheckRequest) {
    let attrs = req.attributes.as_ref();
    let Some(h) = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        eprintln!("check: no http attributes");
        return;
    };
    let mut names: Vec<&str> = h.headers.keys().map(String::as_str).collect();
    if let Some(m) = &h.header_map {
        names.extend(m.headers.iter().map(|v| v.key.as_str()));
    }
    names.sort_unstable();
    eprintln!(
        "check: method={:?} host={:?} path={:?} scheme={:?} protocol={:?} size={} \
         source_cert={} context={:?} headers={names:?}",
        h.method,
        h.host,
        h.path,
        h.scheme,
        h.protocol,
        h.size,
        attrs
            .and_then(|a| a.source.as_ref())
            .is_some_and(|p| !p.certificate.is_empty()),
        attrs.map(|a| a.context_extensions.keys().collect::<Vec<_>>()),
    );
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
