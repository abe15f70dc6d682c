//! Token management beyond plain REST: reuse detection (Check and API),
//! the local-jwt issuer (dev only, registered-only in Check), the gRPC
//! TokenService with reflection, and a store outage (503).

use std::time::Duration;

use portcullis::api::grpc::pb;
use portcullis::api::grpc::pb::token_service_client::TokenServiceClient;
use portcullis::config::{Config, MapEnv};
use portcullis::server::{ServeOptions, start};
use portcullis_testkit::api::{Api, dev_login, with_auth};
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, check_until, serve_yaml,
};
use portcullis_testkit::pg::TempPostgres;
use serde_json::json;

const YAML: &str = "policy:\n  default: authenticated\n";
const MANAGER: &str = "tokens:manage api:read api:write";
const LOCAL: &str = "policy:\n  default: authenticated\npat:\n  issuer: local-jwt\n  local_jwt_key: \"0123456789abcdef0123456789abcdef\"\n";

/// Polls Check until `raw` is denied as revoked (bounded).
async fn until_revoked(grpc: std::net::SocketAddr, raw: &str) {
    let req = Req::get("/").bearer(raw);
    let resp = check_until(grpc, &req, Duration::from_secs(5), "token revoked", |c| {
        c != 0
    })
    .await;
    assert_invalid_token(&resp, "token revoked");
}

#[tokio::test]
async fn presenting_a_rotated_away_token_to_check_revokes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, old) = api.create(&login, "ci", &["api:read"]).await;
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &login, json!({}))
        .await;
    let new = r.body["token"].as_str().unwrap().to_owned();
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&new)).await);
    // The old one is presented again: someone else holds the chain.
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&old)).await,
        "token revoked",
    );
    until_revoked(srv.grpc_addr, &new).await;
}

#[tokio::test]
async fn presenting_a_rotated_away_token_to_the_api_revokes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, old) = api.create(&login, "ci", &["api:read"]).await;
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &old, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let new = r.body["token"].as_str().unwrap().to_owned();
    api.get("/api/v1/tokens/self", &old)
        .await
        .assert_error(401, "invalid_token", "token revoked");
    until_revoked(srv.grpc_addr, &new).await;
}

#[tokio::test]
async fn a_plainly_revoked_token_does_not_revoke_others() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, old) = api.create(&login, "a", &["api:read"]).await;
    let (_, other) = api.create(&login, "b", &["api:read"]).await;
    api.delete(&format!("/api/v1/tokens/{id}"), &login).await;
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&old)).await,
        "token revoked",
    );
    // The detector looks only at rotation chains: `other` stays valid.
    let store = srv.engine.load().pats().store().clone();
    let n = portcullis::tokens::reuse::check(
        &store,
        &srv.revoker,
        &portcullis::pat::format::hash(&old),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&other)).await);
}

#[tokio::test]
async fn local_jwt_is_refused_outside_dev() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_yaml_str(LOCAL, &MapEnv::default()).unwrap();
    cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.listen.http = "127.0.0.1:0".parse().unwrap();
    cfg.data_dir = dir.path().to_path_buf();
    assert!(cfg.validate().is_ok());
    let err = start(ServeOptions {
        config: cfg.clone(),
        dev: false,
    })
    .await
    .expect_err("local-jwt must be refused without --dev");
    let text = format!("{err:#}");
    assert!(
        text.contains("pat.issuer") && text.contains("--dev"),
        "{text}"
    );
    assert!(cfg.validate_mode(true).is_ok());
}

#[tokio::test]
async fn local_jwt_key_is_required() {
    let cfg = Config::from_yaml_str(
        "pat:\n  issuer: local-jwt\n  local_jwt_key: short\n",
        &MapEnv::default(),
    )
    .unwrap();
    let errs = cfg.validate().unwrap_err();
    assert!(
        errs.iter().any(|e| e.key == "pat.local_jwt_key"),
        "{errs:?}"
    );
}

#[tokio::test]
async fn local_jwt_pats_work_in_check_only_while_registered() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(LOCAL, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    let (id, raw) = api.create(&login, "dev", &["api:read"]).await;
    assert_eq!(raw.split('.').count(), 3, "a JWT");
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
    assert_eq!(h["x-auth-method"], "pat");
    assert_eq!(h["x-auth-token-id"], id);
    let me = api.get("/api/v1/tokens/self", &raw).await;
    assert_eq!(me.body["kind"], "jwt", "{me:?}");

    // Correctly signed with the same key, but never registered.
    let key = portcullis::pat::local_jwt::LocalJwt::new("0123456789abcdef0123456789abcdef");
    let now = chrono::Utc::now();
    let forged = key
        .mint(
            "alice",
            &["api:read".into()],
            "forged",
            now,
            now + chrono::Duration::hours(1),
        )
        .unwrap();
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&forged)).await,
        "unknown token",
    );
    // Signed with another key.
    let other = portcullis::pat::local_jwt::LocalJwt::new("another key, also 32 bytes long!!")
        .mint("alice", &[], "x", now, now + chrono::Duration::hours(1))
        .unwrap();
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&other)).await,
        "malformed token",
    );

    api.delete(&format!("/api/v1/tokens/{id}"), &login).await;
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "token revoked",
    );
}

#[tokio::test]
async fn grpc_token_service_follows_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let login = dev_login(dir.path(), "alice", MANAGER);
    let mut c = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let created = c
        .create_token(with_auth(
            pb::CreateTokenRequest {
                name: "grpc".into(),
                scopes: vec!["api:read".into()],
                expires_in_days: 5,
                ..Default::default()
            },
            &login,
        ))
        .await
        .unwrap()
        .into_inner();
    let info = created.info.unwrap();
    assert!(created.token.starts_with("pat_"));
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&created.token)).await);

    let list = c
        .list_tokens(with_auth(pb::ListTokensRequest {}, &login))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.tokens.len(), 1);
    assert_eq!(list.tokens[0].id, info.id);

    let me = c
        .get_self(with_auth(pb::GetSelfRequest {}, &created.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.id, info.id);

    // The same refusals as REST.
    let no_auth = c
        .list_tokens(tonic::Request::new(pb::ListTokensRequest {}))
        .await
        .unwrap_err();
    assert_eq!(no_auth.code(), tonic::Code::Unauthenticated);
    let as_pat = c
        .list_tokens(with_auth(pb::ListTokensRequest {}, &created.token))
        .await
        .unwrap_err();
    assert_eq!(as_pat.code(), tonic::Code::PermissionDenied);
    let admin = c
        .list_user_tokens(with_auth(
            pb::ListUserTokensRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            &login,
        ))
        .await
        .unwrap_err();
    assert_eq!(admin.code(), tonic::Code::PermissionDenied);
    let bad = c
        .create_token(with_auth(
            pb::CreateTokenRequest {
                name: "".into(),
                scopes: vec!["api:read".into()],
                ..Default::default()
            },
            &login,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("name: required"), "{bad:?}");

    let rotated = c
        .rotate_token(with_auth(
            pb::RotateTokenRequest {
                id: info.id.clone(),
                ..Default::default()
            },
            &login,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.info.unwrap().rotated_from, info.id);
    let revoked = c
        .revoke_token(with_auth(
            pb::RevokeTokenRequest {
                id: info.id.clone(),
            },
            &login,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());

    let root = dev_login(dir.path(), "root", "tokens:admin");
    let all = c
        .revoke_user_tokens(with_auth(
            pb::RevokeUserTokensRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.revoked, 1);
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&rotated.token)).await,
        "token revoked",
    );
}

#[tokio::test]
async fn reflection_lists_the_token_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer: {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "portcullis.v1.TokenService"),
        "{names:?}"
    );
}

#[tokio::test]
async fn store_outage_is_503() {
    let mut pg = TempPostgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "policy:\n  default: authenticated\nstore:\n  kind: postgres\n  url: {}\n  timeout: 300ms\n",
        pg.url
    );
    let srv = serve_yaml(&yaml, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", MANAGER);
    api.create(&login, "ok", &["api:read"]).await;
    pg.stop();
    api.post(
        "/api/v1/tokens",
        &login,
        json!({"name": "x", "scopes": ["api:read"]}),
    )
    .await
    .assert_error(503, "temporarily_unavailable", "store");
    api.get("/api/v1/tokens", &login)
        .await
        .assert_error(503, "temporarily_unavailable", "store");
}
