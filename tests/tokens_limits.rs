//! Token expiry inputs can neither crash a request (chrono overflow) nor
//! outlive `pat.max_lifetime_days`.

use portcullis::api::grpc::pb;
use portcullis::api::grpc::pb::token_service_client::TokenServiceClient;
use portcullis_testkit::api::{Api, dev_login, with_auth};
use portcullis_testkit::check::{Req, allowed, check, serve_yaml};
use serde_json::json;

const YAML: &str = "policy:\n  default: authenticated\n";
const MANAGER: &str = "tokens:manage api:read";
/// Overflows chrono when added to now as days.
const HUGE_DAYS: u64 = 4_294_967_295;

#[tokio::test]
async fn item9_rest_create_with_huge_expires_in_days_is_a_400_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let a = api
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "big", "scopes": ["api:read"], "expires_in_days": HUGE_DAYS}),
        )
        .await;
    a.assert_error(400, "invalid_request", "pat.max_lifetime_days");
    assert!(a.description().contains("at most 365"), "{a:?}");
    // A far-future or far-past expires_at is refused by the rules, too.
    for at in ["+262142-12-31T23:59:59Z", "-262143-01-01T00:00:00Z"] {
        let a = api
            .post(
                "/api/v1/tokens",
                &login,
                json!({"name": "far", "scopes": ["api:read"], "expires_at": at}),
            )
            .await;
        assert_eq!(a.status, 400, "{at}: {a:?}");
    }
    // The server is still serving.
    let ok = api.get("/api/v1/tokens", &login).await;
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[tokio::test]
async fn item9_rest_rotate_with_huge_expires_in_days_is_a_400_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, raw) = api.create(&login, "ci", &["api:read"]).await;
    let a = api
        .post(
            &format!("/api/v1/tokens/{id}/rotate"),
            &login,
            json!({"expires_in_days": HUGE_DAYS}),
        )
        .await;
    a.assert_error(400, "invalid_request", "pat.max_lifetime_days");
    // Nothing was rotated: the old token still works.
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
}

#[tokio::test]
async fn item9_pat_self_rotate_with_huge_expires_in_days_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, raw) = api.create(&login, "ci", &["api:read"]).await;
    let a = api
        .post(
            &format!("/api/v1/tokens/{id}/rotate"),
            &raw,
            json!({"expires_in_days": HUGE_DAYS}),
        )
        .await;
    a.assert_error(400, "invalid_request", "pat.max_lifetime_days");
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
}

#[tokio::test]
async fn item9_grpc_create_with_huge_expires_in_days_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let mut c = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let e = c
        .create_token(with_auth(
            pb::CreateTokenRequest {
                name: "big".into(),
                scopes: vec!["api:read".into()],
                expires_in_days: u32::MAX,
                ..Default::default()
            },
            &login,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("pat.max_lifetime_days"), "{e:?}");
    // The connection and the service survive.
    let list = c
        .list_tokens(with_auth(pb::ListTokensRequest {}, &login))
        .await
        .unwrap();
    assert!(list.into_inner().tokens.is_empty());
}

#[test]
fn item9_cli_token_create_with_huge_expires_in_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "token",
            "create",
            "--dev",
            "--user",
            "alice",
            "--issuer",
            "https://idp.example",
            "--username",
            "alice",
            "--name",
            "ci",
            "--scopes",
            "api:read",
            "--expires-in",
            "1000000years",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("--expires-in is too large"), "{err}");
    assert!(err.contains("pat.max_lifetime_days"), "{err}");
}
