//! The real Keycloak 26 (shipped realm): login tokens, other token kinds,
//! service accounts, each through portcullis's gRPC Check.
//!
//! Needs Keycloak: `scripts/test` starts it; alone, `cargo test --test
//! keycloak_login` starts its own (see tests/testkit/src/real_keycloak.rs).

use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, denied, serve_yaml, wait_ready,
};
use portcullis_testkit::real_keycloak::{PASSWORD, READY, RealKeycloak, SHIPPED_SECRET, claims};
use serde_json::json;

/// The shipped role → scope mapping and the shipped uploads routes.
fn config(kc: &RealKeycloak) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256]
    token_types: [Bearer]
    scopes:
      from: ["claim:scope", "realm_roles"]
      map:
        uploads-reader: ["uploads:read"]
        uploads-writer: ["uploads:read", "uploads:write"]
        uploads-admin: ["uploads:*"]
policy:
  default: deny
  routes:
    - name: uploads-write
      match:
        methods: [POST, PUT, PATCH, DELETE]
        path: {{ prefix: /api/v1/uploads }}
      require: {{ all_of: ["uploads:write"] }}
      credentials: [jwt, pat]
    - name: uploads
      match: {{ path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:read"] }}
      credentials: [jwt, service_account, pat]
    - name: workers
      match: {{ path: {{ prefix: /internal/jobs }} }}
      require: {{ all_of: ["uploads:read"] }}
      credentials: [service_account]
"#,
        iss = kc.issuer()
    )
}

struct Env {
    kc: RealKeycloak,
    srv: portcullis::server::Running,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let kc = RealKeycloak::get().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&config(&kc), dir.path(), false).await;
    wait_ready(&srv, READY).await;
    Env { kc, srv, _dir: dir }
}

#[tokio::test]
async fn login_token_is_allowed_with_identity_headers() {
    let e = env().await;
    let tokens = e.kc.login("alice", "openid").await;
    let sub = e.kc.user_id("alice").await.unwrap();
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/api/v1/uploads/1").bearer(&tokens.access_token),
    )
    .await;
    let (h, _) = allowed(&resp);
    assert_eq!(h["x-auth-subject"], sub);
    assert_eq!(h["x-auth-username"], "alice");
    assert_eq!(h["x-auth-email"], "alice@example.org");
    assert_eq!(h["x-auth-client"], "cli");
    assert_eq!(h["x-auth-method"], "jwt");
    let scopes: Vec<&str> = h["x-auth-scopes"].split(' ').collect();
    assert_eq!(scopes, ["uploads:read"], "openid/profile/email are dropped");
}

#[tokio::test]
async fn shipped_role_mapping_gates_writes() {
    let e = env().await;
    let alice = e.kc.login("alice", "openid").await;
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/api/v1/uploads/1")
            .method("DELETE")
            .bearer(&alice.access_token),
    )
    .await;
    let d = denied(&resp);
    assert_eq!(
        (d.code, d.http, d.error()),
        (7, 403, "insufficient_scope"),
        "{d:?}"
    );

    // bob holds uploads-writer, a composite of uploads-reader.
    let bob = e.kc.login("bob", "openid").await;
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/api/v1/uploads/1")
            .method("DELETE")
            .bearer(&bob.access_token),
    )
    .await;
    let (h, _) = allowed(&resp);
    assert_eq!(h["x-auth-scopes"], "uploads:read uploads:write");

    // carol has no uploads role at all.
    let carol = e.kc.login("carol", "openid").await;
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/api/v1/uploads/1").bearer(&carol.access_token),
    )
    .await;
    assert_eq!(denied(&resp).http, 403);
}

/// A token of Keycloak's with claim `typ` = `typ` is refused as a credential
/// (401 `invalid_token`): only access tokens pass.
async fn assert_refused(e: &Env, token: &str, typ: &str) {
    assert_eq!(claims(token)["typ"], typ);
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/api/v1/uploads/1").bearer(token),
    )
    .await;
    let d = denied(&resp);
    assert_eq!(
        (d.code, d.http, d.error()),
        (16, 401, "invalid_token"),
        "{typ}: {d:?}"
    );
}

#[tokio::test]
async fn id_token_is_refused() {
    let e = env().await;
    let t = e.kc.login("alice", "openid").await;
    let id = t.id_token.expect("openid scope gives an ID token");
    assert_refused(&e, &id, "ID").await;
}

#[tokio::test]
async fn refresh_token_is_refused() {
    let e = env().await;
    let t = e.kc.login("alice", "openid").await;
    let rt = t.refresh_token.expect("refresh token");
    assert_refused(&e, &rt, "Refresh").await;
}

#[tokio::test]
async fn offline_token_is_refused() {
    let e = env().await;
    let t = e.kc.login("alice", "openid offline_access").await;
    let off = t.refresh_token.expect("offline token");
    assert_refused(&e, &off, "Offline").await;
}

#[tokio::test]
async fn access_token_for_another_audience_is_refused() {
    let e = env().await;
    // A client of the same realm without the portcullis audience mapper.
    let (st, v) =
        e.kc.admin(
            reqwest::Method::POST,
            "/clients",
            Some(json!({
                "clientId": "other-app",
                "publicClient": true,
                "directAccessGrantsEnabled": true,
                "standardFlowEnabled": false,
            })),
        )
        .await;
    assert!(st == 201 || st == 409, "create other-app: {st} {v}");
    let (st, body) =
        e.kc.token_request(&[
            ("grant_type", "password"),
            ("client_id", "other-app"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(st, 200, "{body}");
    let at = body["access_token"].as_str().unwrap();
    let aud = claims(at)["aud"].clone();
    assert!(
        !aud.to_string().contains("\"portcullis\""),
        "other-app tokens must not name portcullis: {aud}"
    );
    let resp = check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(at)).await;
    assert_invalid_token(&resp, "aud");
}

#[tokio::test]
async fn client_credentials_token_is_a_service_account() {
    let e = env().await;
    let t =
        e.kc.client_credentials("uploads-worker", SHIPPED_SECRET)
            .await;
    let c = claims(&t.access_token);
    assert_eq!(c["azp"], "uploads-worker");
    // The shipped realm gives the client the `service_account` scope, whose
    // mapper adds `client_id`: what portcullis recognises a service by.
    assert_eq!(c["client_id"], "uploads-worker");
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/internal/jobs/1").bearer(&t.access_token),
    )
    .await;
    let (h, _) = allowed(&resp);
    assert_eq!(h["x-auth-method"], "service_account");
    assert_eq!(h["x-auth-client"], "uploads-worker");
    assert_eq!(h["x-auth-username"], "service-account-uploads-worker");

    // A user token is not a service account: the workers route refuses it.
    let alice = e.kc.login("alice", "openid").await;
    let resp = check(
        e.srv.grpc_addr,
        &Req::get("/internal/jobs/1").bearer(&alice.access_token),
    )
    .await;
    assert_eq!(denied(&resp).http, 403);
}
