//! PATs that are Keycloak-signed JWTs (token exchange): a JWT carrying the
//! marker claim or the exchange audience must be registered (kind `jwt`) and
//! active; anything else is a denial, never an allow.

use portcullis_testkit::{check, cluster, keycloak};

use std::time::Duration;

use check::{Req, allowed, assert_invalid_token, check, client, denied, serve_yaml, wait_ready};
use chrono::Utc;
use cluster::{Cluster, READY, wait_allowed, wait_denied};
use envoy_types::ext_authz::v3::pb::CheckResponse;
use keycloak::{FakeKeycloak, SignOpts};
use portcullis::store::{NewToken, Store, TokenKind, TokenRecord};
use serde_json::{Value, json};
use tokio::time::Instant;

const NEG_TTL: &str = "pat:\n  negative_cache_ttl: 100ms\n";

fn sign(kc: &FakeKeycloak, sub: &str, set: Value) -> (String, Value) {
    let mut claims = kc.claims(sub);
    claims["scope"] = json!("a:read b:write");
    for (k, v) in set.as_object().unwrap() {
        claims[k] = v.clone();
    }
    (kc.sign(&claims, &SignOpts::default()), claims)
}

/// Registers `token` as a JWT PAT of `user` (by hash, and by jti).
async fn register(store: &Store, token: &str, claims: &Value, user: &str) -> TokenRecord {
    register_with(store, portcullis::jwt::token_hash(token), claims, user).await
}

async fn register_with(store: &Store, hash: [u8; 32], claims: &Value, user: &str) -> TokenRecord {
    let now = Utc::now();
    store
        .insert(NewToken {
            id: uuid::Uuid::new_v4(),
            user_id: user.into(),
            user_issuer: claims["iss"].as_str().unwrap_or_default().to_owned(),
            username: user.into(),
            name: "exchanged".into(),
            description: None,
            token_hash: hash,
            display_hint: "jwt…".into(),
            scopes: vec!["a:read".into(), "c:read".into()],
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            rotated_from: None,
            kind: TokenKind::Jwt,
            jti: claims["jti"].as_str().map(str::to_owned),
            hash_version: Default::default(),
        })
        .await
        .expect("register JWT PAT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_denied_registered_allowed_revoked_denied_everywhere() {
    let c = Cluster::start("5s", NEG_TTL).await;
    let mut b = client(c.b.grpc_addr).await;
    let (tok, claims) = sign(&c.kc, "alice", json!({"token_use": "pat"}));
    let req = Req::get("/").bearer(&tok).build();
    assert_invalid_token(
        &b.check(req.clone()).await.unwrap().into_inner(),
        "unregistered token",
    );

    let rec = register(&c.store(), &tok, &claims, "alice").await;
    let resp = wait_allowed(&mut b, &req, Duration::from_secs(3)).await;
    let (h, _) = allowed(&resp);
    assert_eq!(h["x-auth-method"], "pat");
    assert_eq!(h["x-auth-token-id"], rec.id.to_string());
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-scopes"], "a:read", "stored ∩ token scopes");
    let before = c.b.engine.load().pats().store().lookup_count();
    allowed(&b.check(req.clone()).await.unwrap().into_inner());
    assert_eq!(
        c.b.engine.load().pats().store().lookup_count(),
        before,
        "a registered JWT PAT is served from the cache"
    );

    let t0 = Instant::now();
    c.a.revoker.revoke(rec.id).await.unwrap().expect("revoked");
    let (d, resp) = wait_denied(&mut b, &req, t0, c.resync + Duration::from_secs(1)).await;
    assert_invalid_token(&resp, "token revoked");
    println!("JWT PAT revocation A -> B: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_by_jti_only_and_revoked_is_denied_on_the_other_replica() {
    let c = Cluster::start("5s", NEG_TTL).await;
    let mut b = client(c.b.grpc_addr).await;
    let (tok, claims) = sign(&c.kc, "bob", json!({"token_use": "pat"}));
    // Stored under some other hash: found by jti.
    let rec = register_with(&c.store(), [9u8; 32], &claims, "bob").await;
    let req = Req::get("/").bearer(&tok).build();
    let (h, _) = allowed(&b.check(req.clone()).await.unwrap().into_inner());
    assert_eq!(h["x-auth-token-id"], rec.id.to_string());
    let t0 = Instant::now();
    c.a.revoker.revoke(rec.id).await.unwrap();
    let (_, resp) = wait_denied(&mut b, &req, t0, c.resync + Duration::from_secs(1)).await;
    assert_invalid_token(&resp, "token revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_never_allows_an_uncached_jwt_pat() {
    let mut c = Cluster::start("5s", NEG_TTL).await;
    let store = c.store();
    let mut b = client(c.b.grpc_addr).await;
    let (cached, cl) = sign(&c.kc, "carl", json!({"token_use": "pat"}));
    let (uncached, ul) = sign(&c.kc, "carl", json!({"token_use": "pat"}));
    let (unregistered, _) = sign(&c.kc, "carl", json!({"token_use": "pat"}));
    register(&store, &cached, &cl, "carl").await;
    register(&store, &uncached, &ul, "carl").await;
    let cached_req = Req::get("/").bearer(&cached).build();
    allowed(&b.check(cached_req.clone()).await.unwrap().into_inner());

    c.pg.stop();
    allowed(&b.check(cached_req).await.unwrap().into_inner());
    for t in [&uncached, &unregistered] {
        let d = denied(
            &b.check(Req::get("/").bearer(t).build())
                .await
                .unwrap()
                .into_inner(),
        );
        assert_eq!((d.code, d.http), (14, 503), "{d:?}");
    }
    c.pg.restart().await;
    wait_allowed(
        &mut b,
        &Req::get("/").bearer(&uncached).build(),
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pat_detection_by_audience_configured_marker_and_owner() {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n    algorithms: [RS256]\n\
         policy:\n  default: authenticated\n\
         pat:\n  jwt_marker: {{claim: kind, value: personal}}\n  exchange:\n    audience: pat-issuer\n",
        kc.issuer()
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, READY).await;
    let store = srv.engine.load().pats().store().clone();
    let at = srv.grpc_addr;

    // The exchange audience alone marks a PAT.
    let (by_aud, _) = sign(&kc, "dora", json!({"aud": ["portcullis", "pat-issuer"]}));
    assert_invalid_token(&call(at, &by_aud).await, "unregistered token");
    // The configured marker claim marks a PAT; the default one no longer does.
    let (by_marker, _) = sign(&kc, "dora", json!({"kind": "personal"}));
    assert_invalid_token(&call(at, &by_marker).await, "unregistered token");
    let (plain, _) = sign(&kc, "dora", json!({"token_use": "pat"}));
    let resp = call(at, &plain).await;
    assert_eq!(allowed(&resp).0["x-auth-method"], "jwt");
    // A marker that is not a string is refused, not ignored.
    let (odd, _) = sign(&kc, "dora", json!({"kind": ["personal"]}));
    assert_invalid_token(&call(at, &odd).await, "marker claim is not a string");
    // Registered to someone else: not this user's PAT.
    let (theirs, claims) = sign(&kc, "dora", json!({"kind": "personal"}));
    register(&store, &theirs, &claims, "eve").await;
    assert_invalid_token(&call(at, &theirs).await, "unregistered token");
    // Registered to dora: allowed as a PAT.
    let (mine, claims) = sign(&kc, "dora", json!({"kind": "personal"}));
    register(&store, &mine, &claims, "dora").await;
    assert_eq!(allowed(&call(at, &mine).await).0["x-auth-method"], "pat");
}

async fn call(addr: std::net::SocketAddr, token: &str) -> CheckResponse {
    check(addr, &Req::get("/").bearer(token)).await
}
