//! The PAT validator, usage tracker and `pat::create` over a real store,
//! on SQLite and Postgres: outcomes, cache TTLs, miss coalescing, batched
//! last-used writes, creation rules and rotation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use portcullis::pat::{
    self, CreateError, CreateRequest, PatConfig, PatRejection, PatValidator, RuleError,
    UsageTracker, format,
};
use portcullis::store::Store;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use portcullis_testkit::{eventually, store_suite};

store_suite!(
    validator_outcomes,
    validator_ttls_with_clock,
    validator_coalesces_1000_concurrent_misses,
    validator_coalesces_refreshes_and_purges_stale_entries,
    usage_tracker_flushes_in_one_call,
    create_applies_rules_and_rotates,
);

/// A settable clock for the validator.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new() -> Self {
        TestClock(Arc::new(Mutex::new(now())))
    }
    fn get(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
    fn advance(&self, d: TimeDelta) {
        *self.0.lock().expect("clock") += d;
    }
    fn clock(&self) -> pat::validator::Clock {
        let me = self.clone();
        Arc::new(move || me.get())
    }
}

fn validator(store: &Store, clock: &TestClock) -> PatValidator {
    PatValidator::new(store.clone(), &PatConfig::default()).with_clock(clock.clock())
}

async fn validator_outcomes(store: Store) {
    setup(&store).await;
    let clock = TestClock::new();
    let v = validator(&store, &clock);
    let (raw, t) = token("u1", secs(3600));
    store.insert(t.clone()).await.expect("insert");

    let q = store.query_count();
    assert!(matches!(v.validate(&raw).await, Ok(Ok(r)) if r.id == t.id));
    assert_eq!(store.query_count() - q, 1);
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    assert_eq!(store.query_count() - q, 1, "cached hit");

    // Malformed: no cache, no store.
    let q = store.query_count();
    let mut typo = raw.clone().into_bytes();
    typo[10] = if typo[10] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).expect("ascii");
    for bad in [
        typo.as_str(),
        "",
        "pat_short",
        "Bearer xyz",
        &raw[..raw.len() - 1],
    ] {
        assert_eq!(
            v.validate(bad).await,
            Ok(Err(PatRejection::Malformed)),
            "{bad:?}"
        );
    }
    assert_eq!(store.query_count(), q);

    // Unknown, negatively cached.
    let unknown = format::generate("pat_");
    assert_eq!(v.validate(&unknown).await, Ok(Err(PatRejection::Unknown)));
    assert_eq!(v.validate(&unknown).await, Ok(Err(PatRejection::Unknown)));
    assert_eq!(
        store.query_count() - q,
        1,
        "second unknown lookup is cached"
    );

    // Expired in the store.
    let (raw_exp, exp) = token("u1", secs(-5));
    store.insert(exp).await.expect("insert");
    assert_eq!(v.validate(&raw_exp).await, Ok(Err(PatRejection::Expired)));

    // Revoked in the store (evicted by the bus) → Revoked.
    store.revoke(t.id, now()).await.expect("revoke");
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))), "still cached");
    v.evict(&t.token_hash).await;
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Revoked)));

    // mark_revoked flips a cached Valid without a store query.
    let (raw2, t2) = token("u1", secs(3600));
    store.insert(t2.clone()).await.expect("insert");
    assert!(matches!(v.validate(&raw2).await, Ok(Ok(_))));
    let q = store.query_count();
    v.mark_revoked(&t2.token_hash).await;
    assert_eq!(v.validate(&raw2).await, Ok(Err(PatRejection::Revoked)));
    assert_eq!(store.query_count(), q);
}

async fn validator_ttls_with_clock(store: Store) {
    setup(&store).await;
    let clock = TestClock::new();
    let v = validator(&store, &clock); // cache_ttl 5m, negative 30s
    let (raw, t) = token("u1", secs(600));
    store.insert(t.clone()).await.expect("insert");
    let unknown = format::generate("pat_");
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    assert_eq!(v.validate(&unknown).await, Ok(Err(PatRejection::Unknown)));
    let q = store.query_count();
    clock.advance(secs(29));
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    assert_eq!(v.validate(&unknown).await, Ok(Err(PatRejection::Unknown)));
    assert_eq!(store.query_count(), q, "both fresh");
    clock.advance(secs(2)); // 31s: negative entry stale
    assert_eq!(v.validate(&unknown).await, Ok(Err(PatRejection::Unknown)));
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    assert_eq!(store.query_count() - q, 1);
    clock.advance(secs(270)); // 301s: positive entry stale
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    assert_eq!(store.query_count() - q, 2);
    // Positive TTL is capped by expires_at; an expired cached Valid is Expired.
    clock.advance(secs(300)); // 601s: past expires_at
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Expired)));
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Expired)));
    // Store errors are not cached: see store_backends.rs, postgres_store_down_is_an_error.
    assert!(v.cache_stats().entries <= 2);
}

async fn validator_coalesces_1000_concurrent_misses(store: Store) {
    setup(&store).await;
    let v = PatValidator::new(store.clone(), &PatConfig::default());
    let (raw, t) = token("u1", secs(3600));
    store.insert(t).await.expect("insert");
    let q = store.query_count();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (v, raw) = (v.clone(), raw.clone());
        set.spawn(async move { v.validate(&raw).await });
    }
    let mut valid = 0;
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.expect("join"), Ok(Ok(_))));
        valid += 1;
    }
    assert_eq!(valid, 1000);
    assert_eq!(store.query_count() - q, 1, "exactly one store query");
}

async fn validator_coalesces_refreshes_and_purges_stale_entries(store: Store) {
    setup(&store).await;
    let clock = TestClock::new();
    let v = validator(&store, &clock); // cache_ttl 5m, negative 30s
    let (raw, t) = token("u1", secs(3600));
    store.insert(t).await.expect("insert");
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    clock.advance(secs(301)); // the cached entry is stale
    let q = store.query_count();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (v, raw) = (v.clone(), raw.clone());
        set.spawn(async move { v.validate(&raw).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.expect("join"), Ok(Ok(_))));
    }
    assert_eq!(store.query_count() - q, 1, "one reload for 1000 stale hits");

    // Purging drops what is no longer fresh, and only that.
    let unknown = format::generate("pat_");
    assert_eq!(v.validate(&unknown).await, Ok(Err(PatRejection::Unknown)));
    assert_eq!(v.cache_stats().entries, 2);
    v.purge_stale();
    assert_eq!(v.cache_stats().entries, 2, "both fresh");
    clock.advance(secs(31)); // the negative entry is stale
    v.purge_stale();
    assert_eq!(v.cache_stats().entries, 1);
    let q = store.query_count();
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    assert_eq!(store.query_count(), q, "the fresh entry was kept");
    clock.advance(secs(300));
    v.purge_stale();
    assert_eq!(v.cache_stats().entries, 0);
}

async fn usage_tracker_flushes_in_one_call(store: Store) {
    setup(&store).await;
    let clock = TestClock::new();
    let v = validator(&store, &clock);
    let mut toks = Vec::new();
    for _ in 0..3 {
        let (raw, t) = token("u1", secs(3600));
        store.insert(t.clone()).await.expect("insert");
        toks.push((raw, t));
    }
    for _ in 0..5 {
        for (raw, _) in &toks {
            assert!(matches!(v.validate(raw).await, Ok(Ok(_))));
        }
        clock.advance(secs(1));
    }
    let last = clock.get() - secs(1);
    assert_eq!(v.usage().pending(), 3);
    let q = store.query_count();
    assert_eq!(v.usage().flush().await.expect("flush"), 3);
    assert_eq!(store.query_count() - q, 1, "one touch_last_used per batch");
    assert_eq!(v.usage().pending(), 0);
    for (_, t) in &toks {
        assert_eq!(
            store.get(t.id).await.expect("get").expect("t").last_used_at,
            Some(last)
        );
    }
    assert_eq!(v.usage().flush().await.expect("empty flush"), 0);

    // Periodic flusher, under paused-free real time with a tiny interval.
    let tracker = UsageTracker::new(store.clone(), Duration::from_millis(20), 10);
    tracker.record(toks[0].1.id, last + secs(10));
    let handle = tracker.start_flusher();
    // The signal is the row itself: `pending()` drops to 0 when the batch
    // is taken, before its write has committed.
    eventually(
        Duration::from_secs(5),
        "periodic flush written",
        async || {
            let got = store.get(toks[0].1.id).await.expect("get").expect("t");
            match got.last_used_at {
                Some(at) if at == last + secs(10) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    handle.abort();
    assert_eq!(tracker.pending(), 0);
}

async fn create_applies_rules_and_rotates(store: Store) {
    setup(&store).await;
    let cfg = PatConfig {
        max_active_per_user: 2,
        ..PatConfig::default()
    };
    let n = now();
    let req = CreateRequest {
        user_id: "u1".into(),
        user_issuer: "https://idp.example".into(),
        username: "alice".into(),
        name: " ci ".into(),
        description: Some("for CI".into()),
        scopes: vec!["uploads:*".into()],
        expires_at: None,
        rotated_from: None,
    };
    let (raw1, r1) = pat::create(&store, &cfg, req.clone(), n)
        .await
        .expect("create");
    assert_eq!(format::check("pat_", &raw1), Ok(()));
    assert_eq!(r1.token_hash, format::hash(&raw1));
    assert_eq!(
        (r1.name.as_str(), r1.expires_at),
        ("ci", n + TimeDelta::days(30))
    );
    assert_eq!(r1.display_hint, format::display_hint("pat_", &raw1));
    let v = PatValidator::new(store.clone(), &cfg);
    assert!(matches!(v.validate(&raw1).await, Ok(Ok(r)) if r.id == r1.id));

    let (_, _r2) = pat::create(&store, &cfg, req.clone(), n)
        .await
        .expect("second");
    let err = pat::create(&store, &cfg, req.clone(), n)
        .await
        .expect_err("limit");
    assert_eq!(
        err,
        CreateError::Rule(RuleError::TooManyActive { count: 2 })
    );
    // Rotation at the limit is allowed: the old token is revoked atomically.
    let rot = CreateRequest {
        rotated_from: Some(r1.id),
        ..req.clone()
    };
    let (raw3, r3) = pat::create(&store, &cfg, rot.clone(), n)
        .await
        .expect("rotate");
    assert_eq!(r3.rotated_from, Some(r1.id));
    v.evict(&r1.token_hash).await;
    assert_eq!(v.validate(&raw1).await, Ok(Err(PatRejection::Revoked)));
    assert!(matches!(v.validate(&raw3).await, Ok(Ok(_))));
    // Rotating someone else's token: NotFound.
    let theirs = CreateRequest {
        user_id: "u2".into(),
        user_issuer: "https://idp.example".into(),
        rotated_from: Some(r3.id),
        ..req.clone()
    };
    assert_eq!(
        pat::create(&store, &cfg, theirs, n)
            .await
            .expect_err("other"),
        CreateError::NotFound
    );
    let bad = CreateRequest {
        scopes: vec!["tokens:manage".into()],
        user_id: "u3".into(),
        user_issuer: "https://idp.example".into(),
        ..req
    };
    assert!(matches!(
        pat::create(&store, &cfg, bad, n).await,
        Err(CreateError::Rule(RuleError::NeverGrantable(_)))
    ));
}
