//! HTTP side of the stand-in: a dedicated thread + Tokio runtime, an accept
//! loop that can close and re-open the same port, connections that can be
//! killed, and the discovery / JWKS handlers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{Failure, Inner, Shared};
use crate::wait::poll_until;

enum Cmd {
    Down(std::sync::mpsc::Sender<Result<(), String>>),
    Up(std::sync::mpsc::Sender<Result<(), String>>),
}

/// Control handle of the server thread; dropping it stops the server.
pub(super) struct Handle {
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl Handle {
    pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> Handle {
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on listener");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("fake-keycloak".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("FakeKeycloak runtime");
                rt.block_on(run(listener, shared, rx));
            })
            .expect("spawn FakeKeycloak thread");
        Handle { cmd: tx }
    }

    fn request(&self, make: impl FnOnce(std::sync::mpsc::Sender<Result<(), String>>) -> Cmd) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        self.cmd
            .send(make(ack_tx))
            .expect("FakeKeycloak server thread is gone");
        match ack_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("FakeKeycloak: {e}"),
            Err(e) => panic!("FakeKeycloak server did not answer: {e}"),
        }
    }

    pub fn go_down(&self) {
        self.request(Cmd::Down);
    }

    pub fn go_up(&self) {
        self.request(Cmd::Up);
    }
}

async fn run(
    std_listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let addr = std_listener.local_addr().expect("local_addr");
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let app = router(shared);
    tokio::spawn(async move {
        let _ = axum::serve(ChanListener { rx: conn_rx, addr }, app).await;
    });
    let mut listener = Some(TcpListener::from_std(std_listener).expect("tokio listener"));
    let mut generation = CancellationToken::new();
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Down(ack)) => {
                    listener = None;
                    generation.cancel();
                    generation = CancellationToken::new();
                    let _ = ack.send(Ok(()));
                }
                Some(Cmd::Up(ack)) => {
                    let res = if listener.is_none() {
                        rebind(addr).await.map(|l| listener = Some(l))
                    } else {
                        Ok(())
                    };
                    let _ = ack.send(res);
                }
                None => {
                    generation.cancel();
                    return;
                }
            },
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let io = KillableStream::new(stream, generation.clone());
                    if conn_tx.send((io, peer)).await.is_err() {
                        return;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn accept(l: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn rebind(addr: SocketAddr) -> Result<TcpListener, String> {
    // std sets SO_REUSEADDR on Unix, so TIME_WAIT sockets do not block us.
    let l = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || std::net::TcpListener::bind(addr),
    )
    .await
    .map_err(|last| format!("could not re-bind {addr}: {last}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpListener::from_std(l).map_err(|e| e.to_string())
}

/// Feeds connections accepted by `run` into `axum::serve`.
struct ChanListener {
    rx: mpsc::Receiver<(KillableStream, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for ChanListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A TCP stream that fails every operation once its generation is cancelled
/// (`Failure::Down`), so hyper drops it and the client sees the connection
/// close even if it was idle in a keep-alive pool.
struct KillableStream {
    inner: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    dead: bool,
}

impl KillableStream {
    fn new(inner: TcpStream, token: CancellationToken) -> Self {
        KillableStream {
            inner,
            killed: Box::pin(token.cancelled_owned()),
            dead: false,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
            // Best effort: make the peer see a reset rather than a clean EOF.
            let _ = self.inner.set_zero_linger();
        }
        if self.dead {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "FakeKeycloak is down",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/realms/{realm}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/realms/{realm}/protocol/openid-connect/certs", get(certs))
        .route("/realms/{realm}/protocol/openid-connect/token", post(token))
        .with_state(shared)
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, must-revalidate, max-age=0"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Applies the injected failure; `Some(response)` short-circuits.
async fn gate(shared: &Shared) -> Option<Response> {
    let failure = shared.lock().failure.clone();
    match failure {
        Failure::None => None,
        Failure::Status500 => Some(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "unknown_error", "error_description": "injected failure"}),
        )),
        Failure::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        // Only reachable in a race with set_failure(Down).
        Failure::Down => Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
    }
}

fn realm_not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({
            "error": "Realm does not exist",
            "error_description": "For more on this error consult the server log."
        }),
    )
}

async fn discovery(State(shared): State<Arc<Shared>>, Path(realm): Path<String>) -> Response {
    shared
        .discovery_fetches
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Some(r) = gate(&shared).await {
        return r;
    }
    if realm != shared.realm {
        return realm_not_found();
    }
    json_response(StatusCode::OK, &discovery_doc(&shared))
}

async fn certs(State(shared): State<Arc<Shared>>, Path(realm): Path<String>) -> Response {
    shared
        .jwks_fetches
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Some(r) = gate(&shared).await {
        return r;
    }
    if realm != shared.realm {
        return realm_not_found();
    }
    let doc = jwks_doc(&shared.lock());
    json_response(StatusCode::OK, &doc)
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared
        .token_requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Some(r) = gate(&shared).await {
        return r;
    }
    if realm != shared.realm {
        return realm_not_found();
    }
    super::token::handle(&shared, &headers, &body)
}

pub(super) fn jwks_doc(inner: &Inner) -> Value {
    let keys: Vec<Value> = inner
        .sig_keys
        .iter()
        .chain(inner.enc_key.iter())
        .chain(inner.oct_key.iter())
        .map(|k| k.jwk.clone())
        .collect();
    json!({ "keys": keys })
}

fn discovery_doc(shared: &Shared) -> Value {
    let iss = shared.issuer();
    let oidc = format!("{iss}/protocol/openid-connect");
    let signing = [
        "PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512",
        "PS256", "PS512", "RS512",
    ];
    let asym = [
        "PS384", "RS384", "EdDSA", "ES384", "ES256", "RS256", "ES512", "PS256", "PS512", "RS512",
    ];
    let enc_algs = [
        "ECDH-ES+A256KW",
        "ECDH-ES+A192KW",
        "ECDH-ES+A128KW",
        "RSA-OAEP",
        "RSA-OAEP-256",
        "RSA1_5",
        "ECDH-ES",
    ];
    let enc_enc = [
        "A256GCM",
        "A192GCM",
        "A128GCM",
        "A128CBC-HS256",
        "A192CBC-HS384",
        "A256CBC-HS512",
    ];
    let auth_methods = [
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
        "client_secret_jwt",
    ];
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "frontchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "jwks_uri": format!("{oidc}/certs"),
        "check_session_iframe": format!("{oidc}/login-status-iframe.html"),
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            "implicit",
            "password",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:uma-ticket",
            "urn:openid:params:grant-type:ciba"
        ],
        "acr_values_supported": ["0", "1"],
    });
    let more = json!({
        "response_types_supported": [
            "code", "none", "id_token", "token", "id_token token",
            "code id_token", "code token", "code id_token token"
        ],
        "subject_types_supported": ["public", "pairwise"],
        "prompt_values_supported": ["none", "login", "consent"],
        "id_token_signing_alg_values_supported": signing,
        "id_token_encryption_alg_values_supported": enc_algs,
        "id_token_encryption_enc_values_supported": enc_enc,
        "userinfo_signing_alg_values_supported": signing,
        "userinfo_encryption_alg_values_supported": enc_algs,
        "userinfo_encryption_enc_values_supported": enc_enc,
        "request_object_signing_alg_values_supported": signing,
        "request_object_encryption_alg_values_supported": enc_algs,
        "request_object_encryption_enc_values_supported": enc_enc,
        "response_modes_supported": [
            "query", "fragment", "form_post", "query.jwt", "fragment.jwt", "form_post.jwt", "jwt"
        ],
        "registration_endpoint": format!("{iss}/clients-registrations/openid-connect"),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": asym,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": asym,
        "authorization_signing_alg_values_supported": asym,
    });
    let rest = json!({
        "claims_supported": [
            "aud", "sub", "iss", "auth_time", "name", "given_name", "family_name",
            "preferred_username", "email", "acr"
        ],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": true,
        "scopes_supported": [
            "openid", "profile", "email", "roles", "web-origins", "acr", "basic",
            "address", "phone", "offline_access", "microprofile-jwt", "organization"
        ],
        "request_parameter_supported": true,
        "request_uri_parameter_supported": true,
        "require_request_uri_registration": true,
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": true,
        "dpop_signing_alg_values_supported": asym,
        "revocation_endpoint": format!("{oidc}/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "device_authorization_endpoint": format!("{oidc}/auth/device"),
        "backchannel_token_delivery_modes_supported": ["poll", "ping"],
        "backchannel_authentication_endpoint": format!("{oidc}/ext/ciba/auth"),
        "require_pushed_authorization_requests": false,
        "pushed_authorization_request_endpoint": format!("{oidc}/ext/par/request"),
        "authorization_response_iss_parameter_supported": true
    });
    let obj = doc.as_object_mut().expect("object");
    for part in [more, rest] {
        if let Value::Object(m) = part {
            obj.extend(m);
        }
    }
    doc
}
