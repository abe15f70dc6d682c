//! The REST token API (`/api/v1`) end to end against a `--dev` server: the
//! happy paths and each refusal, each in its own test.

use std::path::Path;

use portcullis::server::Running;
use portcullis_testkit::api::{Api, dev_login, dev_login_as};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check, serve_yaml};
use serde_json::json;

const YAML: &str = "policy:\n  default: authenticated\n";
const MANAGER: &str = "tokens:manage api:read api:write";

async fn serve(yaml: &str, dir: &Path) -> (Running, Api) {
    let srv = serve_yaml(yaml, dir, true).await;
    let api = Api::new(srv.http_addr);
    (srv, api)
}

#[tokio::test]
async fn create_list_get_use_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);

    let a = api
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "ci", "description": "deploys", "scopes": ["api:read"], "expires_in_days": 7}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    for k in [
        "id",
        "name",
        "token",
        "scopes",
        "expires_at",
        "created_at",
        "display_hint",
    ] {
        assert!(!a.body[k].is_null(), "{k} missing in {:?}", a.body);
    }
    let id = a.body["id"].as_str().unwrap().to_owned();
    let raw = a.body["token"].as_str().unwrap().to_owned();
    assert!(raw.starts_with("pat_"));
    assert_eq!(a.body["scopes"], json!(["api:read"]));

    let list = api.get("/api/v1/tokens", &login).await;
    assert_eq!(list.status, 200);
    let tokens = list.body.as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["id"], id);
    assert_eq!(tokens[0]["description"], "deploys");
    assert!(
        tokens[0].get("token").is_none(),
        "raw token must not be listed"
    );
    assert!(!list.body.to_string().contains(&raw));

    let one = api.get(&format!("/api/v1/tokens/{id}"), &login).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["active"], true);

    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&raw)).await);
    assert_eq!(h["x-auth-token-id"], id);
    assert_eq!(h["x-auth-subject"], "alice");

    let del = api.delete(&format!("/api/v1/tokens/{id}"), &login).await;
    assert_eq!(del.status, 200, "{del:?}");
    assert!(del.body["revoked_at"].is_string());
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/x").bearer(&raw)).await,
        "token revoked",
    );
    // Idempotent.
    let again = api.delete(&format!("/api/v1/tokens/{id}"), &login).await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn users_tokens_alias_creates_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let a = api
        .post(
            "/api/v1/users/tokens",
            &login,
            json!({"name": "seed", "scopes": ["api:write"]}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let list = api.get("/api/v1/users/tokens", &login).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn rotate_by_login_revokes_old_and_links_new() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, raw) = api.create(&login, "ci", &["api:read"]).await;
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &login, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["rotated_from"], id);
    assert_eq!(r.body["name"], "ci");
    let new_raw = r.body["token"].as_str().unwrap();
    assert_ne!(new_raw, raw);
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(new_raw)).await);
    let old = api.get(&format!("/api/v1/tokens/{id}"), &login).await;
    assert!(old.body["revoked_at"].is_string(), "{old:?}");
}

#[tokio::test]
async fn pat_reads_itself_and_rotates_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, raw) = api.create(&login, "ci", &["api:read"]).await;
    let me = api.get("/api/v1/tokens/self", &raw).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["id"], id);
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &raw, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let new_raw = r.body["token"].as_str().unwrap();
    let me2 = api.get("/api/v1/tokens/self", new_raw).await;
    assert_eq!(me2.body["rotated_from"], id);
    drop(srv);
}

#[tokio::test]
async fn pat_cannot_rotate_another_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (_, raw) = api.create(&login, "a", &["api:read"]).await;
    let (other, _) = api.create(&login, "b", &["api:read"]).await;
    api.post(&format!("/api/v1/tokens/{other}/rotate"), &raw, json!({}))
        .await
        .assert_error(403, "insufficient_scope", "only rotate itself");
}

#[tokio::test]
async fn pat_cannot_create_list_get_or_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, raw) = api.create(&login, "a", &["api:read"]).await;
    let path = format!("/api/v1/tokens/{id}");
    for a in [
        api.post(
            "/api/v1/tokens",
            &raw,
            json!({"name": "x", "scopes": ["api:read"]}),
        )
        .await,
        api.get("/api/v1/tokens", &raw).await,
        api.get(&path, &raw).await,
        api.delete(&path, &raw).await,
    ] {
        a.assert_error(
            403,
            "insufficient_scope",
            "personal access token cannot manage",
        );
    }
}

#[tokio::test]
async fn login_token_get_self_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    api.get("/api/v1/tokens/self", &login).await.assert_error(
        400,
        "invalid_request",
        "used a jwt credential",
    );
}

#[tokio::test]
async fn missing_credential_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let a = api.call("GET", "/api/v1/tokens", None, None).await;
    a.assert_error(401, "invalid_token", "missing bearer token");
}

#[tokio::test]
async fn bad_credential_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    api.get("/api/v1/tokens", "not.a.jwt")
        .await
        .assert_error(401, "invalid_token", "");
    let fake = portcullis::pat::format::generate("pat_");
    api.get("/api/v1/tokens/self", &fake)
        .await
        .assert_error(401, "invalid_token", "unknown token");
}

#[tokio::test]
async fn login_without_manage_scope_is_403() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", "api:read");
    api.post(
        "/api/v1/tokens",
        &login,
        json!({"name": "x", "scopes": ["api:read"]}),
    )
    .await
    .assert_error(403, "insufficient_scope", "tokens:manage");
    api.get("/api/v1/tokens", &login).await.assert_error(
        403,
        "insufficient_scope",
        "tokens:manage",
    );
}

#[tokio::test]
async fn manage_scope_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "policy:\n  default: authenticated\napi:\n  manage_scope: pats:write\n";
    let (_srv, api) = serve(yaml, dir.path()).await;
    let old = dev_login(dir.path(), "alice", "tokens:manage api:read");
    api.get("/api/v1/tokens", &old)
        .await
        .assert_error(403, "insufficient_scope", "pats:write");
    let new = dev_login(dir.path(), "alice", "pats:write api:read");
    assert_eq!(api.get("/api/v1/tokens", &new).await.status, 200);
}

#[tokio::test]
async fn service_account_is_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let sa = dev_login_as(dir.path(), "sa-1", "service-account-ci", MANAGER);
    api.get("/api/v1/tokens", &sa).await.assert_error(
        403,
        "insufficient_scope",
        "service_account cannot manage",
    );
}

#[tokio::test]
async fn another_users_token_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, api) = serve(YAML, dir.path()).await;
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let bob = dev_login(dir.path(), "bob", MANAGER);
    let (id, raw) = api.create(&alice, "mine", &["api:read"]).await;
    let path = format!("/api/v1/tokens/{id}");
    api.get(&path, &bob)
        .await
        .assert_error(404, "not_found", "");
    api.delete(&path, &bob)
        .await
        .assert_error(404, "not_found", "");
    api.post(&format!("{path}/rotate"), &bob, json!({}))
        .await
        .assert_error(404, "not_found", "");
    // Same answer as an id that does not exist.
    api.get(&format!("/api/v1/tokens/{}", uuid::Uuid::new_v4()), &bob)
        .await
        .assert_error(404, "not_found", "");
    assert_eq!(api.get("/api/v1/tokens", &bob).await.body, json!([]));
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
}

#[tokio::test]
async fn scopes_beyond_the_callers_are_403() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", "tokens:manage api:read");
    for s in ["api:write", "api:*", "*:*"] {
        api.post(
            "/api/v1/tokens",
            &login,
            json!({"name": "x", "scopes": [s]}),
        )
        .await
        .assert_error(403, "insufficient_scope", "not within your own scopes");
    }
}

#[tokio::test]
async fn scopes_outside_grantable_are_400_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "policy:\n  default: authenticated\npat:\n  grantable_scopes: [\"reports:*\"]\n";
    let (_srv, api) = serve(yaml, dir.path()).await;
    let login = dev_login(dir.path(), "alice", "tokens:manage *:*");
    api.post(
        "/api/v1/tokens",
        &login,
        json!({"name": "x", "scopes": ["api:read"]}),
    )
    .await
    .assert_error(400, "invalid_request", "pat.grantable_scopes");
    let ok = api
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "x", "scopes": ["reports:read"]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{ok:?}");
}

#[tokio::test]
async fn tokens_scopes_are_never_grantable() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    api.post(
        "/api/v1/tokens",
        &login,
        json!({"name": "x", "scopes": ["tokens:manage"]}),
    )
    .await
    .assert_error(400, "invalid_request", "never grantable");
}

#[tokio::test]
async fn each_creation_rule_is_a_400_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let cases = [
        (json!({"scopes": ["api:read"]}), "name: required"),
        (json!({"name": "x", "scopes": []}), "scopes: at least one"),
        (json!({"name": "x", "scopes": ["api"]}), "scopes:"),
        (
            json!({"name": "x", "scopes": ["api:read"], "expires_in_days": 400}),
            "pat.max_lifetime_days",
        ),
        (
            json!({"name": "x", "scopes": ["api:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at: must be in the future",
        ),
        (
            json!({"name": "x", "scopes": ["api:read"], "expires_in_days": 3, "expires_at": "2999-01-01T00:00:00Z"}),
            "at most one",
        ),
        (
            json!({"name": "x", "scopes": ["api:read"], "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "x", "scopes": ["api:read"], "nope": 1}),
            "unknown field",
        ),
        (
            json!({"name": "x".repeat(101), "scopes": ["api:read"]}),
            "name: at most",
        ),
    ];
    for (body, needle) in cases {
        api.post("/api/v1/tokens", &login, body)
            .await
            .assert_error(400, "invalid_request", needle);
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/tokens", srv.http_addr))
        .bearer_auth(&login)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn too_many_active_tokens_is_409() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "policy:\n  default: authenticated\npat:\n  max_active_per_user: 1\n";
    let (_srv, api) = serve(yaml, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, _) = api.create(&login, "one", &["api:read"]).await;
    api.post(
        "/api/v1/tokens",
        &login,
        json!({"name": "two", "scopes": ["api:read"]}),
    )
    .await
    .assert_error(409, "conflict", "pat.max_active_per_user");
    // Rotation replaces, so it fits under the limit.
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &login, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
}

#[tokio::test]
async fn rotating_a_revoked_token_is_409() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, _) = api.create(&login, "one", &["api:read"]).await;
    api.delete(&format!("/api/v1/tokens/{id}"), &login).await;
    api.post(&format!("/api/v1/tokens/{id}/rotate"), &login, json!({}))
        .await
        .assert_error(409, "conflict", "revoked");
}

#[tokio::test]
async fn admin_calls_need_tokens_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    api.create(&login, "one", &["api:read"]).await;
    let path = "/api/v1/admin/users/alice/tokens";
    api.get(path, &login)
        .await
        .assert_error(403, "insufficient_scope", "tokens:admin");
    api.delete(path, &login)
        .await
        .assert_error(403, "insufficient_scope", "tokens:admin");
}

#[tokio::test]
async fn admin_lists_and_revokes_every_token_of_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, api) = serve(YAML, dir.path()).await;
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let admin = dev_login(dir.path(), "root", "tokens:admin");
    let (_, a) = api.create(&alice, "one", &["api:read"]).await;
    let (_, b) = api.create(&alice, "two", &["api:write"]).await;
    let path = "/api/v1/admin/users/alice/tokens";
    let list = api.get(path, &admin).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body.as_array().map(Vec::len), Some(2));
    let del = api.delete(path, &admin).await;
    assert_eq!(del.status, 200, "{del:?}");
    assert_eq!(del.body["revoked"], 2);
    for raw in [a, b] {
        assert_invalid_token(
            &check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
            "token revoked",
        );
    }
    // A PAT is never an admin, whatever its owner holds.
    let (_, pat) = api.create(&alice, "three", &["api:read"]).await;
    api.get(path, &pat)
        .await
        .assert_error(403, "insufficient_scope", "personal access token");
}

#[tokio::test]
async fn meta_lists_grantable_and_offerable_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, api) = serve(YAML, dir.path()).await;
    let anon = api.call("GET", "/api/v1/meta", None, None).await;
    assert_eq!(anon.status, 200);
    assert_eq!(anon.body["grantable_scopes"], json!(["*:*"]));
    assert_eq!(anon.body["dev"], true);
    assert!(anon.body["caller"].is_null());
    let login = dev_login(dir.path(), "alice", MANAGER);
    let me = api.get("/api/v1/meta", &login).await;
    assert_eq!(me.body["caller"]["can_manage"], true);
    assert_eq!(me.body["caller"]["is_admin"], false);
    assert_eq!(
        me.body["caller"]["offerable_scopes"],
        json!(["api:read", "api:write"])
    );
}
