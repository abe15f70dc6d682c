//! `serve --dev` end to end over real gRPC and HTTP: the built-in issuer,
//! identity headers, and the basic denials.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check, denied, serve_yaml};

fn spec(sub: &str, scopes: &[&str]) -> DevTokenSpec {
    DevTokenSpec {
        sub: sub.into(),
        username: Some(format!("{sub}-name")),
        email: Some(format!("{sub}@example.org")),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        expires_in: Duration::from_secs(600),
        client: "web".into(),
    }
}

#[tokio::test]
async fn dev_token_is_allowed_with_identity_headers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    let token = dev.mint(&spec("alice", &["b:write", "a:read"])).unwrap();

    let resp = check(
        srv.grpc_addr,
        &Req::get("/anything?x=1")
            .bearer(&token)
            .header("x-auth-subject", "admin")
            .header("x-auth-role", "root")
            .header("X-Auth-Token-Id", "forged"),
    )
    .await;
    let (h, removed) = allowed(&resp);
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-username"], "alice-name");
    assert_eq!(h["x-auth-email"], "alice@example.org");
    assert_eq!(h["x-auth-client"], "web");
    assert_eq!(h["x-auth-scopes"], "a:read b:write");
    assert_eq!(h["x-auth-method"], "jwt");
    assert!(!h.contains_key("x-auth-token-id"));
    let mut removed = removed;
    removed.sort();
    assert_eq!(removed, vec!["x-auth-role", "x-auth-token-id"]);
}

#[tokio::test]
async fn raw_header_map_and_case_insensitive_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    let token = dev.mint(&spec("bob", &[])).unwrap();
    let resp = check(
        srv.grpc_addr,
        &Req::get("/x")
            .header("authorization", &format!("bEaReR {token}"))
            .header("x-auth-subject", "admin")
            .raw(),
    )
    .await;
    let (h, removed) = allowed(&resp);
    assert_eq!(h["x-auth-subject"], "bob");
    assert!(
        removed.is_empty(),
        "a header we set is never removed: {removed:?}"
    );
}

#[tokio::test]
async fn no_credential_is_a_bare_401_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let d = denied(&check(srv.grpc_addr, &Req::get("/x")).await);
    assert_eq!((d.code, d.http), (16, 401));
    assert_eq!(
        d.www_authenticate.as_deref(),
        Some("Bearer realm=\"portcullis\"")
    );
    assert_eq!(d.body["error_description"], "missing bearer token");
}

#[tokio::test]
async fn oversized_token_is_denied_unparsed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let huge = "a".repeat(8 * 1024 + 1);
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/x").bearer(&huge)).await,
        "too large",
    );
}

#[tokio::test]
async fn non_bearer_and_duplicate_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let d = denied(
        &check(
            srv.grpc_addr,
            &Req::get("/x").header("authorization", "Basic dTpw"),
        )
        .await,
    );
    assert_eq!((d.code, d.http, d.error()), (16, 401, "invalid_request"));
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    let t = dev.mint(&spec("alice", &[])).unwrap();
    let d = denied(&check(srv.grpc_addr, &Req::get("/x").bearer(&t).bearer(&t)).await);
    assert_eq!((d.code, d.http, d.error()), (16, 401, "invalid_request"));
    assert!(d.description().contains("more than one"));
}

#[tokio::test]
async fn health_and_readiness_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let base = format!("http://{}", srv.http_addr);
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{base}/realms/dev/protocol/openid-connect/certs"))
        .await
        .unwrap();
    let jwks: serde_json::Value = r.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["use"], "sig");
    srv.begin_drain();
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503, "readyz fails first when draining");
}

#[tokio::test]
async fn dev_key_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let addr = srv.http_addr;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    let before = std::fs::read(dir.path().join("dev-signing-key.pem")).unwrap();
    srv.shutdown(Duration::from_secs(5)).await;
    // Restart on the same HTTP address so the issuer URL is unchanged.
    let mut cfg = portcullis::config::Config::default();
    cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.listen.http = addr;
    cfg.data_dir = dir.path().to_path_buf();
    cfg.apply_dev_defaults(false);
    let srv = portcullis::server::start(portcullis::server::ServeOptions {
        config: cfg,
        dev: true,
    })
    .await
    .unwrap();
    assert_eq!(
        before,
        std::fs::read(dir.path().join("dev-signing-key.pem")).unwrap()
    );
    let token = dev.mint(&spec("carol", &[])).unwrap();
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&token)).await);
    assert_eq!(h["x-auth-subject"], "carol");
}

/// `POST /ui/dev-login` over a raw socket, so `Host` and `Origin` are
/// exactly what a browser under DNS rebinding would send. Returns the status
/// and the body.
async fn dev_login_raw(addr: SocketAddr, host: &str, origin: Option<&str>) -> (u16, String) {
    let body = r#"{"sub":"alice","scopes":"tokens:manage"}"#;
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let req = format!(
        "POST /ui/dev-login HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answered")
        .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[tokio::test]
async fn item15_dev_login_refuses_a_foreign_host() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let port = srv.http_addr.port();
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("127.0.0.1.evil.example:{port}"),
        "127.0.0.1".to_owned(),
        String::new(),
    ] {
        let (status, body) = dev_login_raw(srv.http_addr, &host, None).await;
        assert_eq!(status, 403, "Host {host:?}: {body}");
        assert!(body.contains("Host"), "{body}");
        assert!(!body.contains("token\""), "{body}");
    }
}

#[tokio::test]
async fn item15_dev_login_refuses_a_foreign_origin() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let port = srv.http_addr.port();
    let host = format!("127.0.0.1:{port}");
    for origin in [
        format!("http://evil.example:{port}"),
        "null".to_owned(),
        format!("https://127.0.0.1:{port}"),
        format!("http://localhost:{}", port.wrapping_add(1)),
    ] {
        let (status, body) = dev_login_raw(srv.http_addr, &host, Some(&origin)).await;
        assert_eq!(status, 403, "Origin {origin:?}: {body}");
        assert!(body.contains("Origin"), "{body}");
    }
}

#[tokio::test]
async fn item15_dev_login_answers_loopback_host_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("", dir.path(), true).await;
    let port = srv.http_addr.port();
    for (host, origin) in [
        (format!("127.0.0.1:{port}"), None),
        (
            format!("localhost:{port}"),
            Some(format!("http://localhost:{port}")),
        ),
        (
            format!("[::1]:{port}"),
            Some(format!("http://127.0.0.1:{port}")),
        ),
        (format!("LocalHost:{port}"), None),
    ] {
        let (status, body) = dev_login_raw(srv.http_addr, &host, origin.as_deref()).await;
        assert_eq!(status, 200, "Host {host:?} Origin {origin:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["token"].as_str().is_some_and(|t| t.starts_with("ey")));
    }
}
