//! PATs end to end over real gRPC: create → allow → revoke → deny, the deny
//! paths, coalescing, restart with `last_used_at` flushing, and a store
//! outage (a Postgres this test starts and kills).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use portcullis::pat::{self, CreateRequest, PatRejection};
use portcullis::revocation::Revoker;
use portcullis::server::Running;
use portcullis::store::Store;
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, check_until, denied, serve_yaml,
};
use portcullis_testkit::pg::TempPostgres;
use portcullis_testkit::wrapped_store::WrappedStore;

/// No JWT issuer: the PATs' owners are at `https://idp.example`, which
/// `pat.owner_issuers` vouches for.
const YAML: &str = "policy:\n  default: authenticated\nrevocation:\n  resync_interval: 100ms\npat:\n  owner_issuers: [\"https://idp.example\"]\n";

async fn create(
    srv: &Running,
    user: &str,
    scopes: &[&str],
) -> (String, portcullis::store::TokenRecord) {
    let engine = srv.engine.load_full();
    let store = engine.pats().store().clone();
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
    srv.engine.load().pats().store().lookup_count()
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

    let revoker = Revoker::new(srv.engine.load().pats().clone());
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
    let req = Req::get("/").bearer(&raw);
    let within = Duration::from_secs(5);
    let resp = check_until(srv.grpc_addr, &req, within, "revocation propagated", |c| {
        c != 0
    })
    .await;
    assert_invalid_token(&resp, "token revoked");
}

#[tokio::test]
async fn expired_pat_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), false).await;
    let store = srv.engine.load().pats().store().clone();
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
            hash_version: Default::default(),
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
        clients.push(portcullis_testkit::check::client(srv.grpc_addr).await);
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
    let store = srv.engine.load().pats().store().clone();
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
    let req = Req::get("/").bearer(&uncached);
    let what = "recovery after Postgres restart";
    check_until(srv.grpc_addr, &req, Duration::from_secs(10), what, |c| {
        c == 0
    })
    .await;
}

/// A PAT on a SQLite store seen through a [`WrappedStore`], with its
/// validator (no server: the race is inside the validator).
async fn wrapped(
    dir: &std::path::Path,
) -> (
    Arc<WrappedStore>,
    Arc<portcullis::pat::PatValidator>,
    String,
    portcullis::store::TokenRecord,
) {
    let cfg = portcullis::config::Config::default();
    // The wrapper's own 5 s limit below is what the tests mean; the inner
    // store's default 100 ms made lookups fail at random on a loaded machine.
    let mut inner = cfg.store.clone();
    inner.timeout = Duration::from_secs(5);
    let real = Store::connect(&inner, dir).await.unwrap();
    real.migrate().await.unwrap();
    let wrapped = WrappedStore::new(real);
    let store = Store::from_backend(wrapped.clone(), Duration::from_secs(5));
    let (raw, rec) = pat::create(
        &store,
        &cfg.pat,
        CreateRequest {
            user_id: "rita".into(),
            user_issuer: "https://idp.example".into(),
            username: "rita".into(),
            name: "race".into(),
            description: None,
            scopes: vec!["a:read".into()],
            expires_at: None,
            rotated_from: None,
        },
        Utc::now(),
    )
    .await
    .unwrap();
    let v = Arc::new(portcullis::pat::PatValidator::new(store, &cfg.pat));
    (wrapped, v, raw, rec)
}

#[tokio::test]
async fn item4_revocation_during_an_inflight_load_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, v, raw, rec) = wrapped(dir.path()).await;
    // A cache miss reads "active" and is held before it caches that.
    gate.arm();
    let load = tokio::spawn({
        let v = v.clone();
        let raw = raw.clone();
        async move { v.validate(&raw).await }
    });
    gate.read.notified().await;
    // The revocation is applied in full (store, cache) while it is held.
    Revoker::new(v.clone())
        .revoke(rec.id)
        .await
        .unwrap()
        .expect("revoked");
    gate.release.notify_one();
    let inflight = load.await.unwrap().unwrap();
    // Every later Check on this replica refuses the token (before the fix,
    // the held load's "active" overwrote the revoked entry).
    for _ in 0..3 {
        assert_eq!(v.validate(&raw).await.unwrap(), Err(PatRejection::Revoked));
    }
    assert_eq!(
        inflight,
        Err(PatRejection::Revoked),
        "the held load must see the revocation"
    );
}

#[tokio::test]
async fn eviction_during_an_inflight_load_keeps_its_read_out_of_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, v, raw, rec) = wrapped(dir.path()).await;
    gate.arm();
    let load = tokio::spawn({
        let (v, raw) = (v.clone(), raw.clone());
        async move { v.validate(&raw).await }
    });
    gate.read.notified().await;
    // Revoked in the store by another writer and the cached lookup dropped,
    // with no tombstone on this replica: only the cache's placeholder
    // (removed by the eviction) can keep the held "active" out.
    v.store().revoke(rec.id, Utc::now()).await.unwrap();
    v.evict(&rec.token_hash).await;
    gate.release.notify_one();
    assert!(
        load.await.unwrap().unwrap().is_ok(),
        "the held load answers what it read"
    );
    let before = gate.lookups.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(v.validate(&raw).await.unwrap(), Err(PatRejection::Revoked));
    assert_eq!(
        gate.lookups.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "the held load's read must not have been cached"
    );
}

#[tokio::test]
async fn checks_waiting_on_a_held_load_see_a_revocation_applied_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, v, raw, rec) = wrapped(dir.path()).await;
    gate.arm();
    let load = tokio::spawn({
        let (v, raw) = (v.clone(), raw.clone());
        async move { v.validate(&raw).await }
    });
    gate.read.notified().await;
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (v, raw) = (v.clone(), raw.clone());
            tokio::spawn(async move { v.validate(&raw).await })
        })
        .collect();
    // The test runtime is single-threaded: one yield runs every waiter up
    // to the held load's placeholder, where it parks.
    tokio::task::yield_now().await;
    Revoker::new(v.clone())
        .revoke(rec.id)
        .await
        .unwrap()
        .expect("revoked");
    gate.release.notify_one();
    assert_eq!(load.await.unwrap().unwrap(), Err(PatRejection::Revoked));
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap(), Err(PatRejection::Revoked));
    }
    assert_eq!(
        gate.lookups.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the waiters shared the held load's one store read"
    );
    assert_eq!(v.validate(&raw).await.unwrap(), Err(PatRejection::Revoked));
}

#[tokio::test]
async fn checks_waiting_on_a_cancelled_load_take_it_over_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, v, raw, _rec) = wrapped(dir.path()).await;
    gate.arm();
    let load = tokio::spawn({
        let (v, raw) = (v.clone(), raw.clone());
        async move { v.validate(&raw).await }
    });
    gate.read.notified().await;
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (v, raw) = (v.clone(), raw.clone());
            tokio::spawn(async move { v.validate(&raw).await })
        })
        .collect();
    // Single-threaded runtime: one yield parks every waiter on the held
    // load's placeholder. Then the load's request goes away (Envoy gave up).
    tokio::task::yield_now().await;
    load.abort();
    assert!(load.await.unwrap_err().is_cancelled());
    for w in waiters {
        // A bound only so a regression fails instead of hanging the suite.
        let r = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a waiter hung after its loader was cancelled");
        assert!(r.unwrap().unwrap().is_ok());
    }
    assert_eq!(gate.lookups(), 2, "one waiter took the load over, once");
    assert!(v.validate(&raw).await.unwrap().is_ok());
    assert_eq!(gate.lookups(), 2, "and its read was cached");
}

#[tokio::test]
async fn a_cancelled_load_hands_its_waiters_a_revocation_applied_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, v, raw, rec) = wrapped(dir.path()).await;
    gate.arm();
    let load = tokio::spawn({
        let (v, raw) = (v.clone(), raw.clone());
        async move { v.validate(&raw).await }
    });
    gate.read.notified().await;
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (v, raw) = (v.clone(), raw.clone());
            tokio::spawn(async move { v.validate(&raw).await })
        })
        .collect();
    tokio::task::yield_now().await;
    Revoker::new(v.clone())
        .revoke(rec.id)
        .await
        .unwrap()
        .expect("revoked");
    load.abort();
    assert!(load.await.unwrap_err().is_cancelled());
    for w in waiters {
        let r = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a waiter hung after its loader was cancelled");
        assert_eq!(r.unwrap().unwrap(), Err(PatRejection::Revoked));
    }
    assert_eq!(v.validate(&raw).await.unwrap(), Err(PatRejection::Revoked));
}

/// Creates a PAT for `user` directly in the store (as another replica or
/// the CLI would: this validator is not told).
async fn create_in(store: &Store, user: &str) -> (String, portcullis::store::TokenRecord) {
    pat::create(
        store,
        &pat::PatConfig::default(),
        CreateRequest {
            user_id: user.into(),
            user_issuer: "https://idp.example".into(),
            username: user.into(),
            name: "flood".into(),
            description: None,
            scopes: vec!["a:read".into()],
            expires_at: None,
            rotated_from: None,
        },
        Utc::now(),
    )
    .await
    .unwrap()
}

/// The validator's known-hash set loaded as at server start.
async fn load_known(v: &Arc<portcullis::pat::PatValidator>) {
    let deny = Arc::new(portcullis::revocation::JwtDenyList::new(10));
    portcullis::revocation::Resync::new(v.clone(), deny)
        .once()
        .await;
    assert!(v.known().is_loaded(), "known-hash set loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item10_forged_pat_flood_barely_touches_the_store() {
    const FLOOD: usize = 100_000;
    const WORKERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let (wrapped, v, legit, _) = wrapped(dir.path()).await;
    load_known(&v).await;
    assert!(v.validate(&legit).await.unwrap().is_ok());

    let before = wrapped.lookups();
    let forged: Vec<String> = (0..FLOOD).map(|_| pat::format::generate("pat_")).collect();
    let forged = Arc::new(forged);
    let started = std::time::Instant::now();
    let mut flood = Vec::new();
    for w in 0..WORKERS {
        let (v, forged) = (v.clone(), forged.clone());
        flood.push(tokio::spawn(async move {
            for (i, t) in forged.iter().skip(w).step_by(WORKERS).enumerate() {
                let out = v.validate(t).await.expect("never a store error");
                assert_eq!(out, Err(PatRejection::Unknown));
                if i % 64 == 0 {
                    tokio::task::yield_now().await; // share the workers fairly
                }
            }
        }));
    }
    // Legitimate Checks during the flood: a cached token, and tokens the
    // validator has never seen (created "elsewhere", cache cold).
    let mut lat = Vec::new();
    let mut fresh_ok = 0;
    while flood.iter().any(|t| !t.is_finished()) {
        let t0 = std::time::Instant::now();
        assert!(v.validate(&legit).await.unwrap().is_ok());
        lat.push(t0.elapsed());
        if fresh_ok < 5 {
            let (raw, rec) = create_in(v.store(), "late").await;
            v.note_created(&rec.token_hash); // as the bus `new:` item does
            assert!(v.validate(&raw).await.unwrap().is_ok());
            fresh_ok += 1;
        }
        tokio::task::yield_now().await;
    }
    for t in flood {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let queries = wrapped.lookups() - before - fresh_ok;
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "item10 flood: {FLOOD} forged PATs in {took:?}; store lookups for them: {queries} ({:.3}%); \
         legit checks during flood: {} (p50 {:?}, p99 {:?}, max {:?}); fresh tokens allowed: {fresh_ok}",
        queries as f64 * 100.0 / FLOOD as f64,
        lat.len(),
        pct(50),
        pct(99),
        lat[lat.len() - 1],
    );
    assert!(
        (queries as usize) < FLOOD / 100,
        "{queries} store lookups for a {FLOOD}-token flood"
    );
    assert!(lat.len() > 10, "legitimate checks kept running");
    assert!(
        pct(99) < Duration::from_millis(50),
        "legitimate p99 {:?}",
        pct(99)
    );
}

#[tokio::test]
async fn item10_token_created_elsewhere_works_at_once_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (wrapped, v, _, _) = wrapped(dir.path()).await;
    load_known(&v).await;
    // Created after the load, with no bus message: only the budget lets it
    // through before the next resync.
    let (raw, _) = create_in(v.store(), "zoe").await;
    let before = wrapped.lookups();
    assert!(v.validate(&raw).await.unwrap().is_ok());
    assert_eq!(wrapped.lookups() - before, 1);
    // And the next resync pass adds it to the set for good.
    let (raw2, rec2) = create_in(v.store(), "zoe").await;
    let deny = Arc::new(portcullis::revocation::JwtDenyList::new(10));
    let mut r = portcullis::revocation::Resync::new(v.clone(), deny);
    r.once().await; // full load
    assert!(v.known().may_exist(&rec2.token_hash));
    assert!(v.validate(&raw2).await.unwrap().is_ok());
}

#[tokio::test]
async fn item10_forged_new_bus_item_enables_a_lookup_but_never_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (wrapped, v, _, _) = wrapped(dir.path()).await;
    load_known(&v).await;
    let forged = pat::format::generate("pat_");
    let items = portcullis::revocation::bus::decode(&format!(
        "new:{}",
        hex::encode(pat::format::hash(&forged))
    ));
    assert_eq!(items.len(), 1);
    let deny = portcullis::revocation::JwtDenyList::new(10);
    portcullis::revocation::bus::apply(&items, &v, &deny).await;
    let before = wrapped.lookups();
    assert_eq!(
        v.validate(&forged).await.unwrap(),
        Err(PatRejection::Unknown)
    );
    assert_eq!(wrapped.lookups() - before, 1, "one lookup, then denied");
}

#[tokio::test]
async fn item10_unknown_pat_past_the_budget_is_denied_without_io() {
    let dir = tempfile::tempdir().unwrap();
    let (wrapped, v, _, _) = wrapped(dir.path()).await;
    load_known(&v).await;
    let before = wrapped.lookups();
    let n = portcullis::pat::known::BUDGET_BURST as usize * 4;
    for _ in 0..n {
        let t = pat::format::generate("pat_");
        assert_eq!(v.validate(&t).await.unwrap(), Err(PatRejection::Unknown));
    }
    let used = (wrapped.lookups() - before) as usize;
    assert!(used < n / 2, "{used} lookups for {n} unknown tokens");
}
