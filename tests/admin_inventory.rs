//! `GET /api/v1/admin/tokens` and gRPC `ListAllTokens`: filters, pages,
//! usage details in the views, and who may call.

use std::time::Duration;

use portcullis::api::grpc::pb;
use portcullis::api::grpc::pb::token_service_client::TokenServiceClient;
use portcullis_testkit::api::{Api, dev_login, with_auth};
use portcullis_testkit::check::serve_yaml;

const YAML: &str = "policy:\n  default: authenticated\n";

fn names(a: &portcullis_testkit::api::Answer) -> Vec<String> {
    assert_eq!(a.status, 200, "{a:?}");
    let mut v: Vec<String> = a.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn admins_list_every_token_with_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", "tokens:manage api:read");
    let bob = dev_login(dir.path(), "bob", "tokens:manage api:read");
    let admin = dev_login(dir.path(), "root", "tokens:manage tokens:admin");
    let (ci, _) = api.create(&alice, "CI deploy", &["api:read"]).await;
    api.create(&alice, "backup", &["api:read"]).await;
    let (old, _) = api.create(&bob, "ci-old", &["api:read"]).await;
    api.delete(&format!("/api/v1/tokens/{old}"), &bob).await;
    let soon = api
        .post(
            "/api/v1/tokens",
            &bob,
            serde_json::json!({"name": "short", "scopes": ["api:read"], "expires_in_days": 2}),
        )
        .await;
    assert_eq!(soon.status, 201, "{soon:?}");
    let get = async |q: &str| api.get(&format!("/api/v1/admin/tokens{q}"), &admin).await;
    assert_eq!(
        names(&get("").await),
        ["CI deploy", "backup", "ci-old", "short"]
    );
    assert_eq!(names(&get("?state=revoked").await), ["ci-old"]);
    assert_eq!(names(&get("?state=active&name~=CI").await), ["CI deploy"]);
    assert_eq!(
        names(&get("?name_contains=ci").await),
        ["CI deploy", "ci-old"]
    );
    assert_eq!(names(&get("?user=bob").await), ["ci-old", "short"]);
    assert_eq!(names(&get("?expiring_within=7d").await), ["short"]);
    assert!(
        names(&get("?last_used_before=1d").await).is_empty(),
        "none used yet"
    );
    assert!(names(&get("?state=expired").await).is_empty());
    let view = &get("?name~=deploy").await.body["tokens"][0];
    assert_eq!(view["id"], ci.as_str());
    assert_eq!(view["user_id"], "alice");
    assert!(view.get("token").is_none() && view.get("token_hash").is_none());
    // Pages of one.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let a = get(&format!("?limit=1&cursor={cursor}")).await;
        assert_eq!(a.status, 200, "{a:?}");
        seen.extend(
            a.body["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].clone()),
        );
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    seen.dedup();
    assert_eq!(seen.len(), 4);
    // Refusals.
    for (q, key) in [
        ("?state=lost", "state"),
        ("?expiring_within=soon", "expiring_within"),
        ("?last_used_before=yesterday", "last_used_before"),
        ("?limit=5000", "limit"),
        ("?cursor=AAAA", "cursor"),
    ] {
        get(q).await.assert_error(400, "invalid_request", key);
    }
    api.get("/api/v1/admin/tokens", &alice).await.assert_error(
        403,
        "insufficient_scope",
        "tokens:admin",
    );
    // gRPC.
    let mut g = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let page = g
        .list_all_tokens(with_auth(
            pb::ListAllTokensRequest {
                state: "active".into(),
                user_id: "alice".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.tokens.len(), 2);
    let err = g
        .list_all_tokens(with_auth(pb::ListAllTokensRequest::default(), &bob))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    srv.shutdown(Duration::from_secs(5)).await;
}

/// A token whose owner's issuer is not configured (removed) is still
/// listed, so an admin can revoke it, and flagged `owner_issuer_removed`;
/// others carry no flag.
#[tokio::test]
async fn tokens_of_a_removed_issuer_are_listed_flagged() {
    use portcullis_testkit::in_process::create_pat;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", "tokens:manage api:read");
    let admin = dev_login(dir.path(), "root", "tokens:manage tokens:admin");
    api.create(&alice, "kept", &["api:read"]).await;
    let store = srv.engine.load().pats().store().clone();
    let gone = "https://gone.example/realms/old";
    let (_, rec) = create_pat(&store, "olga", "olga", gone, &["api:read"]).await;
    let all = api.get("/api/v1/admin/tokens", &admin).await;
    assert_eq!(names(&all), ["kept", "test"]);
    for t in all.body["tokens"].as_array().unwrap() {
        let flagged = t["user_issuer"] == gone;
        assert_eq!(t.get("owner_issuer_removed").is_some(), flagged, "{t}");
    }
    let path = format!("/api/v1/admin/users/olga/tokens?issuer={gone}");
    let one = api.get(&path, &admin).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.body[0]["id"], rec.id.to_string());
    assert_eq!(one.body[0]["owner_issuer_removed"], true);
    let revoked = api.delete(&path, &admin).await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
}
