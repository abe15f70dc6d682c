//! Floods: random PATs and many distinct tokens cannot grow memory without
//! bound or hammer the store; malformed PATs never reach it. The HTTP port:
//! slow clients are cut off, connections are capped, and a body is read
//! only after authentication, within a limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check};
use portcullis_testkit::wait::{ASAP, eventually_every};

const YAML: &str =
    "pat:\n  cache_capacity: 100\njwt:\n  cache_capacity: 50\npolicy:\n  default: authenticated\n";

#[tokio::test]
async fn random_pat_flood_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = portcullis_testkit::check::serve_yaml(YAML, dir.path(), true).await;
    let engine = srv.engine.load_full();
    let lookups = || engine.pats().store().lookup_count();

    // Malformed (bad checksum): never reaches the store or the cache.
    let before = lookups();
    for _ in 0..500 {
        let mut t = portcullis::pat::format::generate("pat_");
        t.replace_range(4..5, if t.as_bytes()[4] == b'A' { "B" } else { "A" });
        let resp = engine
            .decide(&portcullis::authz::request::RequestView::new(
                &Req::get("/").bearer(&t).input(),
            ))
            .await
            .decision;
        assert!(matches!(resp, portcullis::authz::Decision::Deny(_)));
    }
    assert_eq!(
        lookups(),
        before,
        "malformed PATs must not cost a store query"
    );

    // Well-formed unknown ones: only the unknown-hash budget reaches the
    // store, and the cache stays bounded.
    for _ in 0..1500 {
        let t = portcullis::pat::format::generate("pat_");
        let d = engine
            .decide(&portcullis::authz::request::RequestView::new(
                &Req::get("/").bearer(&t).input(),
            ))
            .await
            .decision;
        assert!(matches!(d, portcullis::authz::Decision::Deny(_)));
    }
    let used = lookups() - before;
    assert!(used < 150, "{used} store lookups for 1500 forged PATs");
    let entries = engine.pats().cache_stats().entries;
    assert!(
        entries <= 100,
        "PAT cache holds {entries} entries, capacity 100"
    );

    // The same unknown token again and again: at most one lookup (none
    // when the flood above used up the budget).
    let t = portcullis::pat::format::generate("pat_");
    let before = lookups();
    for _ in 0..50 {
        assert_invalid_token(
            &check(srv.grpc_addr, &Req::get("/").bearer(&t)).await,
            "unknown token",
        );
    }
    assert!(lookups() - before <= 1);
}

#[tokio::test]
async fn verified_jwt_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = portcullis_testkit::check::serve_yaml(YAML, dir.path(), true).await;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    for i in 0..300 {
        let t = dev
            .mint(&DevTokenSpec {
                sub: format!("user-{i}"),
                username: None,
                email: None,
                scopes: vec![],
                expires_in: Duration::from_secs(600),
                client: "web".into(),
            })
            .unwrap();
        allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&t)).await);
    }
    let cached = srv.engine.load().verifier().cached();
    assert!(cached <= 50, "JWT cache holds {cached}, capacity 50");
}

/// Upper bound for anything the server must do promptly; never a sleep.
const PROMPT: Duration = Duration::from_secs(10);

/// Reads until the server closes the connection; `None` if it does not
/// within [`PROMPT`] (the connection was left hanging).
async fn read_until_closed(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PROMPT, read).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Reads the status line of one response; `None` if none comes in time.
async fn read_status(s: &mut TcpStream) -> Option<u16> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PROMPT, read).await.ok()?;
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn send(addr: SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn item5_half_sent_request_is_closed_after_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "api:\n  header_read_timeout: 200ms\n";
    let srv = portcullis_testkit::check::serve_yaml(yaml, dir.path(), true).await;
    let started = std::time::Instant::now();
    let mut s = send(srv.http_addr, "GET /healthz HTTP/1.1\r\nHo").await;
    let got = read_until_closed(&mut s).await;
    assert!(
        got.is_some(),
        "a half-sent request must be closed after api.header_read_timeout"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // An idle keep-alive connection is closed the same way.
    let mut s = send(srv.http_addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = read_until_closed(&mut s)
        .await
        .expect("idle connection closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn item5_connections_beyond_the_cap_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "api:\n  max_connections: 2\n  header_read_timeout: 1m\n";
    let srv = portcullis_testkit::check::serve_yaml(yaml, dir.path(), true).await;
    let addr = srv.http_addr;
    // Two slow clients hold both slots (accepted in order, before the third).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(send(addr, "GET /healthz HTTP/1.1\r\n").await);
    }
    let mut third = send(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = read_until_closed(&mut third)
        .await
        .expect("the connection over the cap is closed, not queued");
    assert!(got.is_empty(), "no answer over the cap: {got}");

    // A slot frees when a client leaves; the server notices the close on
    // its own schedule, so retry (bounded) until the port answers again.
    drop(held.pop());
    eventually_every(PROMPT, ASAP, "slot freed", async || {
        let mut s = send(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        match read_status(&mut s).await {
            Some(200) => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn item5_body_is_read_only_after_auth_and_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "policy:\n  default: authenticated\napi:\n  max_body_bytes: 2048\n  request_timeout: 500ms\n";
    let srv = portcullis_testkit::check::serve_yaml(yaml, dir.path(), true).await;
    let addr = srv.http_addr;
    let login = portcullis_testkit::api::dev_login(dir.path(), "alice", "tokens:manage api:read");

    // Unauthenticated (no header, then a bad token): 401 while the declared
    // body has not been sent at all, so it was never waited for.
    for auth in ["", "Authorization: Bearer not-a-token\r\n"] {
        let mut s = send(
            addr,
            &format!(
                "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(read_status(&mut s).await, Some(401), "auth {auth:?}");
    }
    // Same for rotate.
    let mut s = send(
        addr,
        "POST /api/v1/tokens/x/rotate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
    )
    .await;
    assert_eq!(read_status(&mut s).await, Some(401));

    // Authenticated, declared too large: 413 before reading it.
    let mut s = send(
        addr,
        &format!(
            "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {login}\r\nContent-Length: 1000000\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(read_status(&mut s).await, Some(413));

    // Authenticated, actually too large (no Content-Length: chunked): 413.
    let api = portcullis_testkit::api::Api::new(addr);
    let big = serde_json::json!({"name": "x".repeat(4096), "scopes": ["api:read"]});
    let a = api.post("/api/v1/tokens", &login, big).await;
    a.assert_error(413, "invalid_request", "larger than 2048 bytes");

    // Authenticated, body sent too slowly: 408 after api.request_timeout.
    let mut s = send(
        addr,
        &format!(
            "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {login}\r\nContent-Length: 100\r\n\r\n{{\"name\""
        ),
    )
    .await;
    assert_eq!(read_status(&mut s).await, Some(408));

    // The API still works within the limits.
    let (_, pat) = api.create(&login, "ci", &["api:read"]).await;
    assert!(pat.starts_with("pat_"));
}

#[test]
fn item5_http_limit_keys_are_validated() {
    use portcullis::config::{Config, MapEnv};
    for (yaml, key) in [
        (
            "api:\n  header_read_timeout: 0s\n",
            "api.header_read_timeout",
        ),
        ("api:\n  request_timeout: 1h\n", "api.request_timeout"),
        ("api:\n  max_connections: 0\n", "api.max_connections"),
        ("api:\n  max_body_bytes: 10\n", "api.max_body_bytes"),
    ] {
        let cfg = Config::from_yaml_str(yaml, &MapEnv::default()).unwrap();
        let errs = cfg.validate().unwrap_err();
        assert!(errs.iter().any(|e| e.key == key), "{yaml}: {errs:?}");
    }
}
