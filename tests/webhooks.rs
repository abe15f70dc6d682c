//! Webhooks in one process: nothing is lost while the receiver is down,
//! failed attempts are retried with the same delivery id, the README's
//! receiver verifies the signature (and refuses tampering), deliveries
//! past `max_age` are dead-lettered (controllable clock), the admin
//! listing and its refusals, and a missing secret stops `serve`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use portcullis::config::{Config, MapEnv};
use portcullis::notify::{Dispatcher, NotifyConfig, sign};
use portcullis::server::{ServeOptions, start};
use portcullis::store::{DeliveryQuery, DeliveryState, Store, StoreConfig};
use portcullis_testkit::api::{Api, dev_login};
use portcullis_testkit::check::serve_yaml_env;
use portcullis_testkit::envoy::free_port;
use portcullis_testkit::eventually;
use portcullis_testkit::store_suite::token;
use portcullis_testkit::webhook::Receiver;
use serde_json::Value;

const SECRET: &str = "webhook-test-secret-0123456789";
const ENV: &[(&str, &str)] = &[("TEST_WEBHOOK_SECRET", SECRET)];
const ADMIN: &str = "tokens:manage tokens:admin api:read";

fn yaml(url: &str) -> String {
    format!(
        "policy:\n  default: authenticated\n\
         notify:\n  webhooks:\n    - url: {url}\n      secret: TEST_WEBHOOK_SECRET\n      name: test\n\
         \x20 delivery:\n    initial_backoff: 100ms\n    max_backoff: 300ms\n    poll_interval: 50ms\n    timeout: 2s\n    lease: 5s\n"
    )
}

async fn deliveries(api: &Api, admin: &str, state: &str) -> Vec<Value> {
    let a = api
        .get(
            &format!("/api/v1/admin/webhooks/deliveries?state={state}"),
            admin,
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_every_event_signed() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml_env(&yaml(&url), dir.path(), true, ENV).await;
    let api = Api::new(srv.http_addr);
    let admin = dev_login(dir.path(), "alice", ADMIN);
    let mut ids = Vec::new();
    for name in ["ci", "deploy", "backup"] {
        ids.push(api.create(&admin, name, &["api:read"]).await.0);
    }
    let r = api
        .delete(&format!("/api/v1/tokens/{}", ids[0]), &admin)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Down: every delivery stays pending, retried, with the failure shown.
    let pending = eventually(Duration::from_secs(10), "retried while down", async || {
        let p = deliveries(&api, &admin, "pending").await;
        let retried = p
            .iter()
            .filter(|d| d["attempts"].as_u64() >= Some(2))
            .count();
        if p.len() == 4 && retried == 4 {
            Ok(p)
        } else {
            Err(p)
        }
    })
    .await;
    let err = pending[0]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("connection failed"), "{pending:?}");
    assert!(!err.contains(&url), "the URL may hold a secret: {err}");
    // Up: all four arrive, signed, each once delivered.
    let rx = Receiver::start_on(format!("127.0.0.1:{port}").parse().unwrap(), SECRET).await;
    let hits = rx.wait_events(4, Duration::from_secs(10)).await;
    assert!(hits.iter().all(|h| h.signature_ok), "{hits:?}");
    let mut types: Vec<&str> = hits.iter().map(|h| h.event()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types, ["token.created", "token.revoked"]);
    for h in &hits {
        assert_eq!(h.event_header, h.event());
        assert!(uuid::Uuid::parse_str(&h.delivery).is_ok(), "{h:?}");
        assert!((Utc::now().timestamp() - h.timestamp).abs() < 60);
    }
    let created = hits.iter().find(|h| h.event() == "token.created").unwrap();
    assert_eq!(created.body["owner"]["user_id"], "alice");
    assert_eq!(created.body["actor"]["kind"], "jwt");
    assert_eq!(created.body["actor"]["client_addr"], "127.0.0.1");
    assert_eq!(created.body["data"]["reason"], "api");
    assert!(created.body["data"]["token"]["display_hint"].is_string());
    let done = eventually(Duration::from_secs(10), "all delivered", async || {
        let d = deliveries(&api, &admin, "delivered").await;
        if d.len() == 4 { Ok(d) } else { Err(d.len()) }
    })
    .await;
    assert!(
        done.iter()
            .all(|d| d["last_status"] == 204 && d["replica"].is_string())
    );
    assert!(deliveries(&api, &admin, "pending").await.is_empty());
    let metrics = reqwest::get(format!("http://{}/metrics", srv.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("portcullis_webhook_deliveries_total{outcome=\"delivered\"}"));
    assert!(metrics.contains("portcullis_webhook_delivery_latency_seconds_count"));
    srv.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_with_the_same_delivery_id() {
    let rx = Receiver::start(SECRET).await;
    rx.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml_env(&yaml(&rx.url()), dir.path(), true, ENV).await;
    let api = Api::new(srv.http_addr);
    let admin = dev_login(dir.path(), "alice", ADMIN);
    api.create(&admin, "ci", &["api:read"]).await;
    let first = rx.wait_hits(2, Duration::from_secs(10)).await;
    rx.answer(200);
    let n = first.len();
    let all = rx.wait_hits(n + 1, Duration::from_secs(10)).await;
    let ids: Vec<&str> = all.iter().map(|h| h.delivery.as_str()).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one delivery, retried: {ids:?}"
    );
    assert!(all.iter().all(|h| h.signature_ok));
    let d = eventually(Duration::from_secs(5), "delivered", async || {
        let d = deliveries(&api, &admin, "delivered").await;
        if d.len() == 1 { Ok(d) } else { Err(d) }
    })
    .await;
    assert_eq!(
        d[0]["attempts"].as_u64(),
        Some(u64::try_from(all.len()).unwrap())
    );
    srv.shutdown(Duration::from_secs(5)).await;
}

/// The Python receiver in README.md (the block after "Receiving webhooks").
fn readme_receiver() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python webhook-receiver\n")
        .expect("README has the webhook receiver example");
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

#[tokio::test]
async fn the_readme_receiver_verifies_signatures_and_refuses_tampering() {
    let port = free_port();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), readme_receiver()).unwrap();
    let mut py = Command::new("python3")
        .arg(script.path())
        .env("PORT", port.to_string())
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let stdout = py.stdout.take().unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml_env(&yaml(&url), dir.path(), true, ENV).await;
    let api = Api::new(srv.http_addr);
    let admin = dev_login(dir.path(), "alice", ADMIN);
    let (id, _) = api.create(&admin, "ci", &["api:read"]).await;
    let line = tokio::time::timeout(Duration::from_secs(20), lines.recv())
        .await
        .expect("the README receiver printed the event")
        .unwrap();
    let printed: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(printed["type"], "token.created");
    assert_eq!(printed["token_id"], id);
    // Tampered, stale, replayed-under-a-new-id and unsigned requests are
    // refused with 401.
    let http = reqwest::Client::new();
    let body = br#"{"id":"x","type":"token.revoked"}"#;
    let now = Utc::now().timestamp();
    let id1 = "0190f3a2-7d4e-7c11-9a55-1b2c3d4e5f60";
    let good = sign::signature(SECRET.as_bytes(), now, id1, body);
    let post = |ts: i64, delivery: &'static str, sig: String, body: &'static [u8]| {
        http.post(&url)
            .header("x-portcullis-timestamp", ts.to_string())
            .header("x-portcullis-delivery", delivery)
            .header("x-portcullis-signature", sig)
            .body(body)
            .send()
    };
    let ok = post(now, id1, good.clone(), body).await.unwrap();
    assert_eq!(ok.status(), 204);
    let tampered = post(
        now,
        id1,
        good.clone(),
        br#"{"id":"x","type":"token.created"}"#,
    )
    .await
    .unwrap();
    assert_eq!(tampered.status(), 401);
    // The same request with only the delivery id changed (to get past the
    // receiver's deduplication): refused.
    let replayed = post(
        now,
        "0190f3a2-7d4e-7c11-9a55-1b2c3d4e5f61",
        good.clone(),
        body,
    )
    .await
    .unwrap();
    assert_eq!(replayed.status(), 401);
    let stale_sig = sign::signature(SECRET.as_bytes(), now - 3600, id1, body);
    assert_eq!(
        post(now - 3600, id1, stale_sig, body)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(now, id1, "sha256=00".into(), body)
            .await
            .unwrap()
            .status(),
        401
    );
    let other = sign::signature(b"another-secret-0123456789", now, id1, body);
    assert_eq!(post(now, id1, other, body).await.unwrap().status(), 401);
    let _ = py.kill();
    let _ = py.wait();
    srv.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn deliveries_past_max_age_are_dead_lettered_with_a_controllable_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&StoreConfig::default(), dir.path())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let mut cfg: NotifyConfig = serde_norway::from_str(&format!(
        "webhooks:\n  - url: {url}\n    secret: S\n    name: down\ndelivery:\n  max_age: 1h\n  timeout: 1s\n  lease: 5s\n"
    ))
    .unwrap();
    cfg.read_secrets(&|_| Some(SECRET.into()));
    let secrets = portcullis::notify::resolve_secrets(&cfg).unwrap();
    let d = Dispatcher::new(store.clone(), &cfg, secrets.clone()).unwrap();
    // Written after the webhook was first seen: it is the webhook's.
    let (_, t) = token("ivy", TimeDelta::hours(1));
    store.insert(t).await.unwrap();
    // Young: a failed attempt is retried later.
    let pass = d.once().await.unwrap();
    assert_eq!((pass.fanned_out, pass.attempted, pass.delivered), (1, 1, 0));
    let q = |state| DeliveryQuery {
        state: Some(state),
        limit: 10,
        ..DeliveryQuery::default()
    };
    let pending = store.deliveries(&q(DeliveryState::Pending)).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].next_attempt_at > Utc::now());
    // Two hours later the next attempt fails past max_age: dead-lettered.
    let later = Utc::now() + TimeDelta::hours(2);
    let d = Dispatcher::new(store.clone(), &cfg, secrets)
        .unwrap()
        .with_clock(Arc::new(move || later));
    d.once().await.unwrap();
    let dead = store.deliveries(&q(DeliveryState::Dead)).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, pending[0].id);
    assert!(
        store
            .deliveries(&q(DeliveryState::Pending))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_deliveries_listing_is_for_admins_only() {
    let rx = Receiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml_env(&yaml(&rx.url()), dir.path(), true, ENV).await;
    let api = Api::new(srv.http_addr);
    let user = dev_login(dir.path(), "bob", "tokens:manage api:read");
    let admin = dev_login(dir.path(), "root", ADMIN);
    let path = "/api/v1/admin/webhooks/deliveries";
    api.get(path, &user)
        .await
        .assert_error(403, "insufficient_scope", "tokens:admin");
    let (_, pat) = api.create(&user, "ci", &["api:read"]).await;
    api.get(path, &pat)
        .await
        .assert_error(403, "insufficient_scope", "personal access token");
    api.call("GET", path, None, None)
        .await
        .assert_error(401, "invalid_token", "");
    api.get(&format!("{path}?state=lost"), &admin)
        .await
        .assert_error(400, "invalid_request", "state");
    api.get(&format!("{path}?cursor=%21%21"), &admin)
        .await
        .assert_error(400, "invalid_request", "cursor");
    api.get(&format!("{path}?limit=0"), &admin)
        .await
        .assert_error(400, "invalid_request", "limit");
    // Paging through two deliveries one at a time.
    api.create(&user, "two", &["api:read"]).await;
    rx.wait_events(2, Duration::from_secs(10)).await;
    let p1 = api.get(&format!("{path}?limit=1"), &admin).await;
    let cursor = p1.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let p2 = api
        .get(&format!("{path}?limit=1&cursor={cursor}"), &admin)
        .await;
    assert_eq!(p2.status, 200, "{p2:?}");
    assert_ne!(
        p1.body["deliveries"][0]["id"],
        p2.body["deliveries"][0]["id"]
    );
    srv.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn serve_refuses_a_webhook_whose_secret_is_not_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    for (env, needle) in [
        (vec![], "is not set"),
        (
            vec![("TEST_WEBHOOK_SECRET".to_owned(), "short".to_owned())],
            "at least 16",
        ),
    ] {
        let mut cfg = Config::from_yaml_str(
            &yaml("https://hooks.example/x"),
            &MapEnv(env.into_iter().collect()),
        )
        .unwrap();
        cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
        cfg.listen.http = "127.0.0.1:0".parse().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        let err = start(ServeOptions {
            config: cfg,
            dev: true,
        })
        .await
        .expect_err("no secret, no start")
        .to_string();
        assert!(
            err.contains("notify.webhooks[0].secret") && err.contains(needle),
            "{err}"
        );
        assert!(!err.contains("short"), "{err}");
    }
}

#[tokio::test]
async fn expiry_notices_reach_the_webhook_with_a_controllable_clock() {
    use portcullis::notify::expiry::ExpiryNotices;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&StoreConfig::default(), dir.path())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (_, t) = token("judy", TimeDelta::days(10));
    store.insert(t.clone()).await.unwrap();
    let rx = Receiver::start(SECRET).await;
    let mut cfg: NotifyConfig = serde_norway::from_str(&format!(
        "webhooks:\n  - url: {}\n    secret: S\n    events: [token.expiring, token.expired]\n",
        rx.url()
    ))
    .unwrap();
    cfg.read_secrets(&|_| Some(SECRET.into()));
    let d = Dispatcher::new(
        store.clone(),
        &cfg,
        portcullis::notify::resolve_secrets(&cfg).unwrap(),
    )
    .unwrap();
    let at = |days: i64| {
        let when = Utc::now() + TimeDelta::days(days);
        ExpiryNotices::new(store.clone(), &cfg).with_clock(Arc::new(move || when))
    };
    assert_eq!(at(0).once().await.unwrap(), 0);
    assert_eq!(at(4).once().await.unwrap(), 1, "7 days before");
    assert_eq!(at(4).once().await.unwrap(), 0, "once");
    assert_eq!(
        at(11).once().await.unwrap(),
        1,
        "expired (the 1-day window was skipped over)"
    );
    d.once().await.unwrap();
    let hits = rx.wait_hits(2, Duration::from_secs(10)).await;
    let mut got: Vec<(&str, Option<i64>)> = hits
        .iter()
        .map(|h| (h.event(), h.body["data"]["threshold_seconds"].as_i64()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("token.expired", None),
            ("token.expiring", Some(7 * 86_400))
        ]
    );
    assert!(
        hits.iter()
            .all(|h| h.signature_ok && h.body["token_id"] == t.id.to_string())
    );
    // token.created was not wanted by this webhook: no delivery for it.
    let all = store
        .deliveries(&DeliveryQuery {
            limit: 10,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn audit_retention_deletes_old_events_only() {
    use portcullis::audit::{AuditConfig, Retention};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&StoreConfig::default(), dir.path())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (_, mut old) = token("kim", TimeDelta::days(365));
    old.created_at -= TimeDelta::days(100);
    store.insert(old).await.unwrap();
    let (_, fresh) = token("kim", TimeDelta::days(30));
    store.insert(fresh.clone()).await.unwrap();
    let r = Retention::new(store.clone(), &AuditConfig::default());
    assert_eq!(
        r.once().await.unwrap(),
        1,
        "the 100-day-old event, past 90d"
    );
    let left = store
        .events(&portcullis::store::EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].token_id, Some(fresh.id));
}

/// Two replicas in a rolling deploy: A still has only `ops`, B also has
/// `siem`. A fanning an event out first must not cost `siem` its delivery.
#[tokio::test]
async fn a_replica_without_a_webhook_does_not_make_it_lose_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&StoreConfig::default(), dir.path())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (ops, siem) = (Receiver::start(SECRET).await, Receiver::start(SECRET).await);
    let hook =
        |name: &str, url: String| format!("  - url: {url}\n    secret: S\n    name: {name}\n");
    let config = |hooks: String| {
        let mut cfg: NotifyConfig = serde_norway::from_str(&format!("webhooks:\n{hooks}")).unwrap();
        cfg.read_secrets(&|_| Some(SECRET.into()));
        let secrets = portcullis::notify::resolve_secrets(&cfg).unwrap();
        Dispatcher::new(store.clone(), &cfg, secrets).unwrap()
    };
    let a = config(hook("ops", ops.url()));
    let b = config(hook("ops", ops.url()) + &hook("siem", siem.url()));
    let (_, t) = token("kim", TimeDelta::hours(1));
    store.insert(t.clone()).await.unwrap();
    a.once().await.unwrap();
    b.once().await.unwrap();
    let got = siem.wait_hits(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["token_id"], t.id.to_string());
    assert!(got[0].signature_ok);
    assert_eq!(ops.wait_hits(1, Duration::from_secs(10)).await.len(), 1);
}
