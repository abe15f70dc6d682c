//! PATs end to end over real gRPC: create → allow → revoke → deny, the deny
//! paths, coalescing, restart with `last_used_at` flushing, and a store
//! outage (a Postgres this test starts and kills).

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use portcullis::pat::{self, CreateRequest};
use portcullis::revocation::Revoker;
use portcullis::server::Running;
use portcullis::store::Store;
use support::check::{Req, allowed, assert_invalid_token, check, denied, serve_yaml};
use support::pg::TempPostgres;

const YAML: &str = "policy:\n  default: authenticated\nrevocation:\n  resync_interval: 100ms\n";

async fn create(
    srv: &Running,
    user: &str,
    scopes: &[&str],
) -> (String, portcullis::store::TokenRecord) {
    let engine = srv.engine.load_full();
    let store = engine.pats.store().clone();
    let cfg = portcullis::pat::PatConfig::default();
    pat::create(
        &store,
        &cfg,
        CreateRequest {
            user_id: user.into(),
            user_issuer: "https://idp.example".into(),
            username: format!("{user}-name"),
            name: "ci".into(),
            description: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            rotated_from: None,
        },
        Utc::now(),
    )
    .await
    .expect("create PAT")
}

fn queries(srv: &Running) -> u64 {
    srv.engine.load().pats.store().lookup_count()
}

#[tokio::test]
async fn round_trip_create_allow_revoke_deny() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let (raw, rec) = create(&srv, "alice", &["uploads:read", "reports:*"]).await;
    assert!(raw.starts_with("pat_"));

    let resp = check(
        srv.grpc_addr,
        &Req::get("/api")
            .bearer(&raw)
            .header("x-auth-subject", "admin"),
    )
    .await;
    let (h, removed) = allowed(&resp);
    assert_eq!(h["x-auth-method"], "pat");
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-username"], "alice-name");
    assert_eq!(h["x-auth-token-id"], rec.id.to_string());
    assert_eq!(h["x-auth-scopes"], "uploads:read reports:*");
    assert!(removed.is_empty());

    let revoker = Revoker::new(srv.engine.load().pats.clone());
    revoker.revoke(rec.id).await.unwrap().expect("revoked");
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/api").bearer(&raw)).await,
        "token revoked",
    );
}

#[tokio::test]
async fn revocation_by_another_process_is_seen_within_the_resync_interval() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let (raw, rec) = create(&srv, "bob", &["a:read"]).await;
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await); // now cached
    // A separate Store handle on the same file, as the CLI would use.
    let cfg = portcullis::config::Config::default();
    let other = Store::connect(&cfg.store, dir.path()).await.unwrap();
    other.revoke(rec.id, Utc::now()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await;
        if resp.status.as_ref().unwrap().code != 0 {
            assert_invalid_token(&resp, "token revoked");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "revocation never propagated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn expired_pat_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let store = srv.engine.load().pats.store().clone();
    let raw = pat::format::generate("pat_");
    let now = Utc::now();
    store
        .insert(portcullis::store::NewToken {
            id: uuid::Uuid::new_v4(),
            user_id: "carol".into(),
            user_issuer: "https://idp.example".into(),
            username: "carol".into(),
            name: "old".into(),
            description: None,
            token_hash: pat::format::hash(&raw),
            display_hint: pat::format::display_hint("pat_", &raw),
            scopes: vec!["a:read".into()],
            created_at: now - chrono::Duration::days(40),
            expires_at: now - chrono::Duration::days(10),
            rotated_from: None,
            kind: portcullis::store::TokenKind::Opaque,
            jti: None,
        })
        .await
        .unwrap();
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "token expired",
    );
}

#[tokio::test]
async fn bad_checksum_is_denied_without_touching_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let raw = pat::format::generate("pat_");
    let mut bad = raw.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let before = queries(&srv);
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&bad)).await,
        "malformed token",
    );
    assert_eq!(
        queries(&srv),
        before,
        "a malformed PAT must not reach the store"
    );
}

#[tokio::test]
async fn unknown_pat_is_denied_and_negatively_cached() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let raw = pat::format::generate("pat_");
    let before = queries(&srv);
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "unknown token",
    );
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "unknown token",
    );
    assert_eq!(
        queries(&srv) - before,
        1,
        "the second lookup is served by the negative cache"
    );
}

#[tokio::test]
async fn wrong_prefix_falls_through_to_jwt_and_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let raw = pat::format::generate("ghp_");
    let before = queries(&srv);
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "not a JWT",
    );
    assert_eq!(queries(&srv), before);
}

#[tokio::test]
async fn thousand_concurrent_checks_of_one_uncached_pat_make_one_query() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Arc::new(serve_yaml(YAML, dir.path(), false).await);
    let (raw, _) = create(&srv, "dave", &["a:read"]).await;
    let before = queries(&srv);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(support::check::client(srv.grpc_addr).await);
    }
    let req = Req::get("/").bearer(&raw).build();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let mut c = clients[i % clients.len()].clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            c.check(req).await.unwrap().into_inner()
        }));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        allowed(&resp);
    }
    assert_eq!(
        queries(&srv) - before,
        1,
        "concurrent misses must coalesce into one store query"
    );
}

#[tokio::test]
async fn restart_keeps_tokens_and_flushes_last_used_at_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let (raw, rec) = create(&srv, "erin", &["a:read"]).await;
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
    let store = srv.engine.load().pats.store().clone();
    assert!(
        store
            .get(rec.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_none(),
        "nothing written per request"
    );
    srv.shutdown(Duration::from_secs(5)).await;
    let after = store.get(rec.id).await.unwrap().unwrap();
    assert!(
        after.last_used_at.is_some(),
        "last_used_at flushed at shutdown"
    );

    let srv = serve_yaml(YAML, dir.path(), false).await;
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
    assert_eq!(h["x-auth-subject"], "erin");
}

#[tokio::test]
async fn postgres_down_uncached_is_503_cached_still_allowed() {
    let mut pg = TempPostgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{YAML}store:\n  kind: postgres\n  url: {}\n  timeout: 300ms\n",
        pg.url
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    let (cached, _) = create(&srv, "frank", &["a:read"]).await;
    let (uncached, _) = create(&srv, "frank", &["a:read"]).await;
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&cached)).await);

    pg.stop();
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&cached)).await);
    let d = denied(&check(srv.grpc_addr, &Req::get("/").bearer(&uncached)).await);
    assert_eq!(
        (d.code, d.http, d.error()),
        (14, 503, "temporarily_unavailable")
    );
    let r = reqwest::get(format!("http://{}/readyz", srv.http_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "store down makes the replica unready");

    pg.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = check(srv.grpc_addr, &Req::get("/").bearer(&uncached)).await;
        if resp.status.as_ref().unwrap().code == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recovered after Postgres restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
