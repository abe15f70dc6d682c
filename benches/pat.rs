//! PAT benchmarks: format check, hashing, cached validation, and uncached
//! validation against real Postgres (`PORTCULLIS_BENCH_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped if unreachable).

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::pat::{PatConfig, PatValidator, format};
use portcullis::store::{NewToken, Store, StoreConfig, StoreKind, TokenKind};
use portcullis_testkit::pg::ScratchDb;
use uuid::Uuid;

fn new_token() -> (String, NewToken) {
    let raw = format::generate("pat_");
    let now = Utc::now();
    let t = NewToken {
        id: Uuid::new_v4(),
        user_id: "bench".into(),
        user_issuer: "https://idp.example".into(),
        username: "bench".into(),
        name: "bench".into(),
        description: None,
        token_hash: format::hash(&raw),
        display_hint: format::display_hint("pat_", &raw),
        scopes: vec!["uploads:*".into()],
        created_at: now,
        expires_at: now + TimeDelta::days(1),
        rotated_from: None,
        kind: TokenKind::Opaque,
        jti: None,
        hash_version: Default::default(),
    };
    (raw, t)
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

fn format_benches(c: &mut Criterion) {
    let tok = format::generate("pat_");
    c.bench_function("pat/check", |b| {
        b.iter(|| format::check(black_box("pat_"), black_box(&tok)))
    });
    c.bench_function("pat/check+hash", |b| {
        b.iter(|| {
            let t = black_box(&tok);
            format::check("pat_", t).map(|()| format::hash(t))
        })
    });
    c.bench_function("pat/generate", |b| {
        b.iter(|| format::generate(black_box("pat_")))
    });
}

fn cached_benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (store, v, raw) = rt.block_on(async {
        let store = Store::connect(&StoreConfig::default(), dir.path())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (raw, t) = new_token();
        store.insert(t).await.unwrap();
        let v = PatValidator::new(store.clone(), &PatConfig::default());
        assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
        (store, v, raw)
    });
    let q = store.query_count();
    c.bench_function("pat/validate_cached_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { v.validate(black_box(&raw)).await })
    });
    assert_eq!(store.query_count(), q, "cached benchmark hit the store");
}

fn postgres_benches(c: &mut Criterion) {
    let admin_url = std::env::var("PORTCULLIS_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rt = runtime();
    let scratch = match rt.block_on(ScratchDb::create(&admin_url, "portcullis_bench")) {
        Ok(db) => db,
        Err(e) => {
            eprintln!(
                "postgres at {admin_url} unreachable ({e}): skipping pat/validate_uncached_postgres"
            );
            return;
        }
    };
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(scratch.url.clone()),
        timeout: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    let (v, raw, hash) = rt.block_on(async {
        let store = Store::connect(&cfg, std::path::Path::new("."))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        // A realistically sized table.
        for _ in 0..2000 {
            store.insert(new_token().1).await.unwrap();
        }
        let (raw, t) = new_token();
        let hash = t.token_hash;
        store.insert(t).await.unwrap();
        let v = PatValidator::new(store, &PatConfig::default());
        (v, raw, hash)
    });
    c.bench_function("pat/validate_uncached_postgres", |b| {
        b.to_async(&rt).iter(|| async {
            v.evict(&hash).await;
            v.validate(black_box(&raw)).await
        })
    });
    drop(v);
    let _ = rt.block_on(scratch.drop_db());
}

criterion_group!(benches, format_benches, cached_benches, postgres_benches);
criterion_main!(benches);
