//! One store/validator suite, run against SQLite (temp dir) and real Postgres.
//!
//! Postgres: `PORTCULLIS_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth); each test
//! creates a fresh `portcullis_test_<random>` database and drops it at the
//! end. If that server is unreachable, each test starts its own throwaway
//! server with `portcullis_testkit::pg` instead.

use portcullis_testkit::pg;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use portcullis::pat::{
    self, CreateError, CreateRequest, PatConfig, PatOutcome, PatValidator, RuleError, UsageTracker,
    format,
};
use portcullis::store::{DenyKind, NewToken, Store, StoreConfig, StoreError, StoreKind, TokenKind};
use uuid::Uuid;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const TIMEOUT: Duration = Duration::from_secs(5);

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn token(user: &str, expires_in: TimeDelta) -> (String, NewToken) {
    let raw = format::generate("pat_");
    let n = now();
    let t = NewToken {
        id: Uuid::new_v4(),
        user_id: user.into(),
        user_issuer: "https://idp.example".into(),
        username: format!("{user}-name"),
        name: "test token".into(),
        description: Some("desc".into()),
        token_hash: format::hash(&raw),
        display_hint: format::display_hint("pat_", &raw),
        scopes: vec!["uploads:read".into(), "uploads:*".into()],
        created_at: n,
        expires_at: n + expires_in,
        rotated_from: None,
        kind: TokenKind::Opaque,
        jti: None,
        hash_version: Default::default(),
    };
    (raw, t)
}

async fn setup(store: &Store) {
    store.migrate().await.expect("migrate");
}

// ---------- harness ----------

async fn run_sqlite<F, Fut>(f: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        timeout: TIMEOUT,
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, dir.path())
        .await
        .expect("connect sqlite");
    assert!(dir.path().join("portcullis.db").exists());
    f(store).await;
}

async fn admin(url: &str) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(client)
}

async fn run_pg<F, Fut>(f: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = std::env::var("PORTCULLIS_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let mut _temp = None;
    let (client, base) = match admin(&admin_url).await {
        Some(c) => (c, admin_url),
        None => {
            let t = pg::TempPostgres::start().await;
            let url = t.url.clone();
            _temp = Some(t);
            (admin(&url).await.expect("connect temp postgres"), url)
        }
    };
    let db = format!("portcullis_test_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("url has a database path");
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(format!("{prefix}/{db}")),
        timeout: TIMEOUT,
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect postgres");
    let result = tokio::spawn(f(store)).await;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .expect("drop test database");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::run_sqlite(crate::cases::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::run_pg(crate::cases::$name).await
                }
            )*
        }
    };
}

suite!(
    migrate_idempotent,
    insert_and_find,
    unique_conflicts,
    list_and_count_active,
    revoke_idempotent,
    revoke_all_for_user,
    rotate_is_one_transaction,
    revoke_chain_both_directions,
    touch_last_used_batch,
    deny_list_round_trip,
    deny_list_since_watermark,
    revoked_since_ordering,
    validator_outcomes,
    validator_ttls_with_clock,
    validator_coalesces_1000_concurrent_misses,
    usage_tracker_flushes_in_one_call,
    create_applies_rules_and_rotates,
    item6_owner_is_issuer_and_sub,
    item6_unowned_rows_match_nobody_until_claimed,
    item12_planted_sha256_row_does_not_authenticate_with_a_key,
    item12_legacy_sha256_row_keeps_working_and_is_upgraded,
    item12_new_tokens_are_stored_as_hmac,
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

mod cases {
    use super::*;
    use portcullis::store::HashVersion;

    const KEY: &str = "0123456789abcdef0123456789abcdef-test-pepper";

    fn keyed() -> PatConfig {
        PatConfig {
            hash_key: Some(KEY.into()),
            ..PatConfig::default()
        }
    }

    pub async fn item12_planted_sha256_row_does_not_authenticate_with_a_key(store: Store) {
        setup(&store).await;
        // An attacker with write access to the database, but not the key,
        // plants a row for a token they made up, hashed as they can.
        let (raw, mut t) = token("mallory", secs(3600));
        t.hash_version = HashVersion::Hmac;
        store.insert(t).await.expect("plant");
        let v = PatValidator::new(store.clone(), &keyed());
        assert_eq!(v.validate(&raw).await, Ok(PatOutcome::Unknown));
    }

    pub async fn item12_legacy_sha256_row_keeps_working_and_is_upgraded(store: Store) {
        setup(&store).await;
        // A row from before migration 0003 (version 1, bare SHA-256).
        let (raw, t) = token("lena", secs(3600));
        assert_eq!(t.hash_version, HashVersion::Sha256);
        let id = store.insert(t).await.expect("insert").id;
        let v = PatValidator::new(store.clone(), &keyed());
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        // Upgraded on first use: now stored under the HMAC only.
        let hmac = v.hasher().under(&raw, HashVersion::Hmac).expect("keyed");
        let up = store
            .find_by_hash(&hmac)
            .await
            .expect("find")
            .expect("upgraded");
        assert_eq!((up.id, up.hash_version), (id, HashVersion::Hmac));
        assert_eq!(store.find_by_hash(&format::hash(&raw)).await, Ok(None));
        // A fresh replica (empty cache) finds it directly; revocation works.
        let v2 = PatValidator::new(store.clone(), &keyed());
        assert!(matches!(v2.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        store.revoke(id, now()).await.expect("revoke");
        let v3 = PatValidator::new(store.clone(), &keyed());
        assert_eq!(v3.validate(&raw).await, Ok(PatOutcome::Revoked));
    }

    pub async fn item12_new_tokens_are_stored_as_hmac(store: Store) {
        setup(&store).await;
        let req = CreateRequest {
            user_id: "hana".into(),
            user_issuer: "https://idp.example".into(),
            username: "hana".into(),
            name: "ci".into(),
            description: None,
            scopes: vec!["a:read".into()],
            expires_at: None,
            rotated_from: None,
        };
        let (raw, rec) = pat::create(&store, &keyed(), req, now())
            .await
            .expect("create");
        assert_eq!(rec.hash_version, HashVersion::Hmac);
        assert_ne!(rec.token_hash, format::hash(&raw));
        let v = PatValidator::new(store.clone(), &keyed());
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        // Without the key the stored value cannot be matched.
        let unkeyed = PatValidator::new(store.clone(), &PatConfig::default());
        assert_eq!(unkeyed.validate(&raw).await, Ok(PatOutcome::Unknown));
    }

    const A: &str = "https://idp.example";
    const B: &str = "https://other-idp.example";

    /// Item 6: the same `sub` at two issuers is two users, in every
    /// owner-scoped call (list, count, revoke all, rotate).
    pub async fn item6_owner_is_issuer_and_sub(store: Store) {
        setup(&store).await;
        let n = now();
        let (_, a) = token("same-sub", secs(3600));
        let (_, mut b) = token("same-sub", secs(3600));
        b.user_issuer = B.into();
        for t in [&a, &b] {
            store.insert(t.clone()).await.expect("insert");
        }
        let ids =
            |v: Vec<portcullis::store::TokenRecord>| v.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_for_user(A, "same-sub").await.expect("list")),
            vec![a.id]
        );
        assert_eq!(
            ids(store.list_for_user(B, "same-sub").await.expect("list")),
            vec![b.id]
        );
        assert_eq!(
            store.count_active(B, "same-sub", n).await.expect("count"),
            1
        );
        assert_eq!(
            store.get(b.id).await.expect("get").expect("b").user_issuer,
            B
        );
        // B's owner cannot rotate A's token.
        let (_, mut succ) = token("same-sub", secs(3600));
        succ.user_issuer = B.into();
        assert_eq!(store.rotate(a.id, succ, n).await, Err(StoreError::NotFound));
        // Revoking all of B's tokens leaves A's alone.
        assert_eq!(
            ids(store
                .revoke_all_for_user(B, "same-sub", n)
                .await
                .expect("revoke")),
            vec![b.id]
        );
        assert!(
            store
                .get(a.id)
                .await
                .expect("get")
                .expect("a")
                .revoked_at
                .is_none()
        );
    }

    /// Item 6: rows without an owner issuer (pre-0004) belong to nobody
    /// until `claim_unowned` gives them to the one configured issuer.
    pub async fn item6_unowned_rows_match_nobody_until_claimed(store: Store) {
        setup(&store).await;
        let n = now();
        let (_, mut legacy) = token("u1", secs(3600));
        legacy.user_issuer = String::new();
        let (_, other) = token("u1", secs(3600));
        store.insert(legacy.clone()).await.expect("insert");
        store.insert(other.clone()).await.expect("insert");
        assert_eq!(store.list_for_user(A, "u1").await.expect("list").len(), 1);
        assert_eq!(store.count_active(A, "u1", n).await.expect("count"), 1);
        assert_eq!(store.claim_unowned(A).await.expect("claim"), 1);
        assert_eq!(store.claim_unowned(B).await.expect("claim again"), 0);
        let list = store.list_for_user(A, "u1").await.expect("list");
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|r| r.user_issuer == A));
    }

    pub async fn migrate_idempotent(store: Store) {
        assert_eq!(store.migrate().await.expect("first"), vec![1, 2, 3, 4]);
        assert_eq!(store.migrate().await.expect("second"), Vec::<u32>::new());
        assert_eq!(store.migrate().await.expect("third"), Vec::<u32>::new());
        store.ping().await.expect("ping");
    }

    pub async fn insert_and_find(store: Store) {
        setup(&store).await;
        let (_, t) = token("u1", secs(3600));
        let rec = store.insert(t.clone()).await.expect("insert");
        assert_eq!(
            (rec.id, &rec.name, &rec.scopes, rec.expires_at),
            (t.id, &t.name, &t.scopes, t.expires_at)
        );
        assert_eq!(
            (rec.last_used_at, rec.revoked_at, rec.kind),
            (None, None, TokenKind::Opaque)
        );
        assert_eq!(
            store.find_by_hash(&t.token_hash).await.expect("find"),
            Some(rec.clone())
        );
        assert_eq!(store.get(t.id).await.expect("get"), Some(rec.clone()));
        assert_eq!(store.find_by_hash(&[7; 32]).await.expect("find"), None);
        assert_eq!(store.get(Uuid::new_v4()).await.expect("get"), None);
        let (_, mut j) = token("u1", secs(3600));
        j.kind = TokenKind::Jwt;
        j.jti = Some("jti-1".into());
        j.description = None;
        let jrec = store.insert(j).await.expect("insert jwt");
        assert_eq!(store.find_by_jti("jti-1").await.expect("jti"), Some(jrec));
        assert_eq!(store.find_by_jti("nope").await.expect("jti"), None);
    }

    pub async fn unique_conflicts(store: Store) {
        setup(&store).await;
        let (_, t) = token("u1", secs(3600));
        store.insert(t.clone()).await.expect("insert");
        let dup = NewToken {
            id: Uuid::new_v4(),
            ..t.clone()
        };
        let err = store.insert(dup).await.expect_err("duplicate hash");
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let (_, mut a) = token("u1", secs(3600));
        a.jti = Some("same".into());
        let (_, mut b) = token("u1", secs(3600));
        b.jti = Some("same".into());
        store.insert(a).await.expect("insert a");
        assert!(matches!(
            store.insert(b).await,
            Err(StoreError::Conflict(_))
        ));
    }

    pub async fn list_and_count_active(store: Store) {
        setup(&store).await;
        let n = now();
        let (_, active) = token("u1", secs(3600));
        let (_, mut expired) = token("u1", secs(-1));
        expired.created_at = n - secs(10);
        let (_, revoked) = token("u1", secs(3600));
        let (_, other) = token("u2", secs(3600));
        for t in [&active, &expired, &revoked, &other] {
            store.insert(t.clone()).await.expect("insert");
        }
        store.revoke(revoked.id, n).await.expect("revoke");
        assert_eq!(
            store
                .count_active("https://idp.example", "u1", n)
                .await
                .expect("count"),
            1
        );
        assert_eq!(
            store
                .count_active("https://idp.example", "u2", n)
                .await
                .expect("count"),
            1
        );
        assert_eq!(
            store
                .count_active("https://idp.example", "nobody", n)
                .await
                .expect("count"),
            0
        );
        let list = store
            .list_for_user("https://idp.example", "u1")
            .await
            .expect("list");
        assert_eq!(list.len(), 3);
        assert!(
            list.windows(2).all(|w| w[0].created_at >= w[1].created_at),
            "newest first"
        );
        assert!(list.iter().all(|r| r.user_id == "u1"));
        assert_eq!(list.iter().filter(|r| r.is_active(n)).count(), 1);
    }

    pub async fn revoke_idempotent(store: Store) {
        setup(&store).await;
        let (_, t) = token("u1", secs(3600));
        store.insert(t.clone()).await.expect("insert");
        let t1 = now();
        let r1 = store
            .revoke(t.id, t1)
            .await
            .expect("revoke")
            .expect("found");
        assert_eq!(r1.revoked_at, Some(t1));
        assert_eq!(r1.token_hash, t.token_hash, "hash returned for eviction");
        let r2 = store
            .revoke(t.id, t1 + secs(60))
            .await
            .expect("again")
            .expect("found");
        assert_eq!(r2.revoked_at, Some(t1), "first revocation time kept");
        assert_eq!(
            store.revoke(Uuid::new_v4(), t1).await.expect("unknown"),
            None
        );
    }

    pub async fn revoke_all_for_user(store: Store) {
        setup(&store).await;
        let n = now();
        let (_, a) = token("u1", secs(3600));
        let (_, b) = token("u1", secs(3600));
        let (_, c) = token("u2", secs(3600));
        for t in [&a, &b, &c] {
            store.insert(t.clone()).await.expect("insert");
        }
        store.revoke(a.id, n - secs(5)).await.expect("revoke");
        let done = store
            .revoke_all_for_user("https://idp.example", "u1", n)
            .await
            .expect("revoke all");
        assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b.id]);
        assert!(
            store
                .revoke_all_for_user("https://idp.example", "u1", n)
                .await
                .expect("again")
                .is_empty()
        );
        assert_eq!(
            store
                .count_active("https://idp.example", "u1", n)
                .await
                .expect("count"),
            0
        );
        assert_eq!(
            store
                .count_active("https://idp.example", "u2", n)
                .await
                .expect("count"),
            1
        );
        let a_now = store.get(a.id).await.expect("get").expect("a");
        assert_eq!(a_now.revoked_at, Some(n - secs(5)));
    }

    pub async fn rotate_is_one_transaction(store: Store) {
        setup(&store).await;
        let n = now();
        let (_, old) = token("u1", secs(3600));
        store.insert(old.clone()).await.expect("insert");
        let (_, new) = token("u1", secs(7200));
        let rec = store.rotate(old.id, new.clone(), n).await.expect("rotate");
        assert_eq!(rec.rotated_from, Some(old.id));
        assert_eq!(rec.id, new.id);
        let old_now = store.get(old.id).await.expect("get").expect("old");
        assert_eq!(old_now.revoked_at, Some(n));
        // Rotating a revoked token is a conflict, and inserts nothing.
        let (_, again) = token("u1", secs(60));
        assert!(matches!(
            store.rotate(old.id, again.clone(), n).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.get(again.id).await.expect("get"), None);
        // Unknown / other user's token: NotFound.
        assert_eq!(
            store.rotate(Uuid::new_v4(), again.clone(), n).await,
            Err(StoreError::NotFound)
        );
        let (_, theirs) = token("u2", secs(60));
        assert_eq!(
            store.rotate(new.id, theirs, n).await,
            Err(StoreError::NotFound)
        );
        // Insert fails (hash collision) → the revocation is rolled back.
        let collide = NewToken {
            id: Uuid::new_v4(),
            ..new.clone()
        };
        assert!(matches!(
            store.rotate(new.id, collide, n).await,
            Err(StoreError::Conflict(_))
        ));
        let still = store.get(new.id).await.expect("get").expect("new");
        assert_eq!(still.revoked_at, None, "rotation must be atomic");
    }

    pub async fn revoke_chain_both_directions(store: Store) {
        setup(&store).await;
        let n = now();
        // a <- b <- c, and b <- e (branch); d unrelated.
        let (_, a) = token("u1", secs(3600));
        let (_, mut b) = token("u1", secs(3600));
        let (_, mut c) = token("u1", secs(3600));
        let (_, mut e) = token("u1", secs(3600));
        let (_, d) = token("u1", secs(3600));
        b.rotated_from = Some(a.id);
        c.rotated_from = Some(b.id);
        e.rotated_from = Some(b.id);
        for t in [&a, &b, &c, &d, &e] {
            store.insert(t.clone()).await.expect("insert");
        }
        store.revoke(a.id, n - secs(9)).await.expect("revoke a");
        let chain = store.revoke_chain(c.id, n).await.expect("chain");
        let mut ids: Vec<Uuid> = chain.iter().map(|r| r.id).collect();
        ids.sort();
        let mut want = vec![a.id, b.id, c.id, e.id];
        want.sort();
        assert_eq!(ids, want);
        for r in &chain {
            let expect = if r.id == a.id { n - secs(9) } else { n };
            assert_eq!(r.revoked_at, Some(expect), "{:?}", r.id);
        }
        assert_eq!(
            store.get(d.id).await.expect("get").expect("d").revoked_at,
            None
        );
        assert!(
            store
                .revoke_chain(Uuid::new_v4(), n)
                .await
                .expect("unknown")
                .is_empty()
        );
    }

    pub async fn touch_last_used_batch(store: Store) {
        setup(&store).await;
        let (_, a) = token("u1", secs(3600));
        let (_, b) = token("u1", secs(3600));
        store.insert(a.clone()).await.expect("insert");
        store.insert(b.clone()).await.expect("insert");
        let (t1, t2) = (now(), now() + secs(30));
        let q0 = store.query_count();
        let n = store
            .touch_last_used(&[(a.id, t1), (b.id, t2), (a.id, t2), (Uuid::new_v4(), t2)])
            .await
            .expect("touch");
        assert_eq!(store.query_count() - q0, 1, "one statement per batch");
        assert_eq!(n, 2);
        assert_eq!(
            store.get(a.id).await.expect("get").expect("a").last_used_at,
            Some(t2)
        );
        assert_eq!(
            store.get(b.id).await.expect("get").expect("b").last_used_at,
            Some(t2)
        );
        // Only forward.
        assert_eq!(
            store.touch_last_used(&[(a.id, t1)]).await.expect("touch"),
            0
        );
        assert_eq!(
            store.get(a.id).await.expect("get").expect("a").last_used_at,
            Some(t2)
        );
        assert_eq!(store.touch_last_used(&[]).await.expect("empty"), 0);
    }

    pub async fn deny_list_round_trip(store: Store) {
        setup(&store).await;
        let n = now();
        store
            .deny_jwt(DenyKind::Jti, "j1", n + secs(3600))
            .await
            .expect("deny");
        store
            .deny_jwt(DenyKind::Sid, "s1", n + secs(3600))
            .await
            .expect("deny");
        store
            .deny_jwt(DenyKind::Jti, "old", n - secs(1))
            .await
            .expect("deny");
        assert!(store.is_jwt_denied(Some("j1"), None, n).await.expect("q"));
        assert!(
            store
                .is_jwt_denied(Some("x"), Some("s1"), n)
                .await
                .expect("q")
        );
        assert!(
            !store
                .is_jwt_denied(Some("s1"), Some("j1"), n)
                .await
                .expect("kinds differ")
        );
        assert!(
            !store
                .is_jwt_denied(Some("old"), None, n)
                .await
                .expect("expired")
        );
        assert!(!store.is_jwt_denied(None, None, n).await.expect("none"));
        assert!(
            !store
                .is_jwt_denied(Some("j1"), None, n + secs(3601))
                .await
                .expect("later")
        );
        // Upsert keeps the later expiry.
        store
            .deny_jwt(DenyKind::Jti, "old", n + secs(60))
            .await
            .expect("extend");
        store
            .deny_jwt(DenyKind::Jti, "old", n - secs(60))
            .await
            .expect("shorter ignored");
        assert!(store.is_jwt_denied(Some("old"), None, n).await.expect("q"));
        assert_eq!(
            store.purge_jwt_denylist(n + secs(61)).await.expect("purge"),
            1
        );
        assert!(
            store
                .is_jwt_denied(Some("j1"), None, n)
                .await
                .expect("kept")
        );
    }

    pub async fn deny_list_since_watermark(store: Store) {
        setup(&store).await;
        let t0 = now() - secs(1);
        store
            .deny_jwt(DenyKind::Jti, "j1", t0 + secs(3600))
            .await
            .expect("deny");
        store
            .deny_jwt(DenyKind::Sid, "s1", t0 + secs(7200))
            .await
            .expect("deny");
        store
            .deny_jwt(DenyKind::Jti, "gone", t0 - secs(5))
            .await
            .expect("deny");
        let all = store.jwt_denied_since(t0, now()).await.expect("since");
        let got: Vec<_> = all.iter().map(|e| (e.kind, e.value.as_str())).collect();
        assert_eq!(got, vec![(DenyKind::Jti, "j1"), (DenyKind::Sid, "s1")]);
        assert_eq!(all[1].expires_at, t0 + secs(7200));
        assert!(all[0].changed_at <= all[1].changed_at);
        let wm = all[1].changed_at;
        assert!(
            store
                .jwt_denied_since(wm, now())
                .await
                .expect("q")
                .is_empty()
        );
        // A shorter expiry changes nothing; a longer one is seen again.
        store
            .deny_jwt(DenyKind::Jti, "j1", t0 + secs(60))
            .await
            .expect("shorter");
        assert!(
            store
                .jwt_denied_since(wm, now())
                .await
                .expect("q")
                .is_empty()
        );
        store
            .deny_jwt(DenyKind::Jti, "j1", t0 + secs(9000))
            .await
            .expect("longer");
        let again = store.jwt_denied_since(wm, now()).await.expect("q");
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].value.as_str(), again[0].expires_at),
            ("j1", t0 + secs(9000))
        );
        // Entries expired at `now` are not returned.
        assert!(
            store
                .jwt_denied_since(t0 - secs(10), t0 + secs(9001))
                .await
                .expect("q")
                .is_empty()
        );
    }

    pub async fn revoked_since_ordering(store: Store) {
        setup(&store).await;
        let t0 = now();
        let (_, a) = token("u1", secs(3600));
        let (_, b) = token("u1", secs(3600));
        let (_, c) = token("u2", secs(3600));
        let (_, d) = token("u2", secs(3600));
        for t in [&a, &b, &c, &d] {
            store.insert(t.clone()).await.expect("insert");
        }
        store.revoke(a.id, t0 + secs(3)).await.expect("revoke");
        store.revoke(b.id, t0 + secs(1)).await.expect("revoke");
        store.revoke(c.id, t0 + secs(2)).await.expect("revoke");
        let all = store.revoked_since(t0).await.expect("since");
        assert_eq!(
            all,
            vec![
                (b.token_hash, t0 + secs(1)),
                (c.token_hash, t0 + secs(2)),
                (a.token_hash, t0 + secs(3))
            ]
        );
        let later = store.revoked_since(t0 + secs(1)).await.expect("since");
        assert_eq!(
            later.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![c.token_hash, a.token_hash]
        );
        assert!(
            store
                .revoked_since(t0 + secs(3))
                .await
                .expect("since")
                .is_empty()
        );
    }

    fn validator(store: &Store, clock: &TestClock) -> PatValidator {
        PatValidator::new(store.clone(), &PatConfig::default()).with_clock(clock.clock())
    }

    pub async fn validator_outcomes(store: Store) {
        setup(&store).await;
        let clock = TestClock::new();
        let v = validator(&store, &clock);
        let (raw, t) = token("u1", secs(3600));
        store.insert(t.clone()).await.expect("insert");

        let q = store.query_count();
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(r)) if r.id == t.id));
        assert_eq!(store.query_count() - q, 1);
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
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
            assert_eq!(v.validate(bad).await, Ok(PatOutcome::Malformed), "{bad:?}");
        }
        assert_eq!(store.query_count(), q);

        // Unknown, negatively cached.
        let unknown = format::generate("pat_");
        assert_eq!(v.validate(&unknown).await, Ok(PatOutcome::Unknown));
        assert_eq!(v.validate(&unknown).await, Ok(PatOutcome::Unknown));
        assert_eq!(
            store.query_count() - q,
            1,
            "second unknown lookup is cached"
        );

        // Expired in the store.
        let (raw_exp, exp) = token("u1", secs(-5));
        store.insert(exp).await.expect("insert");
        assert_eq!(v.validate(&raw_exp).await, Ok(PatOutcome::Expired));

        // Revoked in the store (evicted by the bus) → Revoked.
        store.revoke(t.id, now()).await.expect("revoke");
        assert!(
            matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))),
            "still cached"
        );
        v.evict(&t.token_hash).await;
        assert_eq!(v.validate(&raw).await, Ok(PatOutcome::Revoked));

        // mark_revoked flips a cached Valid without a store query.
        let (raw2, t2) = token("u1", secs(3600));
        store.insert(t2.clone()).await.expect("insert");
        assert!(matches!(v.validate(&raw2).await, Ok(PatOutcome::Valid(_))));
        let q = store.query_count();
        v.mark_revoked(&t2.token_hash).await;
        assert_eq!(v.validate(&raw2).await, Ok(PatOutcome::Revoked));
        assert_eq!(store.query_count(), q);
    }

    pub async fn validator_ttls_with_clock(store: Store) {
        setup(&store).await;
        let clock = TestClock::new();
        let v = validator(&store, &clock); // cache_ttl 5m, negative 30s
        let (raw, t) = token("u1", secs(600));
        store.insert(t.clone()).await.expect("insert");
        let unknown = format::generate("pat_");
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        assert_eq!(v.validate(&unknown).await, Ok(PatOutcome::Unknown));
        let q = store.query_count();
        clock.advance(secs(29));
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        assert_eq!(v.validate(&unknown).await, Ok(PatOutcome::Unknown));
        assert_eq!(store.query_count(), q, "both fresh");
        clock.advance(secs(2)); // 31s: negative entry stale
        assert_eq!(v.validate(&unknown).await, Ok(PatOutcome::Unknown));
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        assert_eq!(store.query_count() - q, 1);
        clock.advance(secs(270)); // 301s: positive entry stale
        assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));
        assert_eq!(store.query_count() - q, 2);
        // Positive TTL is capped by expires_at; an expired cached Valid is Expired.
        clock.advance(secs(300)); // 601s: past expires_at
        assert_eq!(v.validate(&raw).await, Ok(PatOutcome::Expired));
        assert_eq!(v.validate(&raw).await, Ok(PatOutcome::Expired));
        // Store errors are not cached: see postgres::store_down_is_an_error.
        assert!(v.cache_stats().entries <= 2);
    }

    pub async fn validator_coalesces_1000_concurrent_misses(store: Store) {
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
            assert!(matches!(r.expect("join"), Ok(PatOutcome::Valid(_))));
            valid += 1;
        }
        assert_eq!(valid, 1000);
        assert_eq!(store.query_count() - q, 1, "exactly one store query");
    }

    pub async fn usage_tracker_flushes_in_one_call(store: Store) {
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
                assert!(matches!(v.validate(raw).await, Ok(PatOutcome::Valid(_))));
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
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            let got = store.get(toks[0].1.id).await.expect("get").expect("t");
            if got.last_used_at == Some(last + secs(10)) || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        handle.abort();
        assert_eq!(got.last_used_at, Some(last + secs(10)));
        assert_eq!(tracker.pending(), 0);
    }

    pub async fn create_applies_rules_and_rotates(store: Store) {
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
        assert!(matches!(v.validate(&raw1).await, Ok(PatOutcome::Valid(r)) if r.id == r1.id));

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
        assert_eq!(v.validate(&raw1).await, Ok(PatOutcome::Revoked));
        assert!(matches!(v.validate(&raw3).await, Ok(PatOutcome::Valid(_))));
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
}

// ---------- backend-specific ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_down_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port"); // listener dropped: nothing listens there now
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(format!("postgres://postgres@127.0.0.1:{port}/portcullis")),
        ..StoreConfig::default() // 100ms timeout
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect is lazy");
    let v = PatValidator::new(store.clone(), &PatConfig::default());
    let raw = format::generate("pat_");
    for _ in 0..2 {
        let started = Instant::now();
        let r = v.validate(&raw).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(store.query_count(), 2, "errors are not cached");
    assert!(matches!(
        store.migrate().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_recovers() {
    let mut server = pg::TempPostgres::start().await;
    let (client, conn) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(one, 1);
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(server.url.clone()),
        timeout: Duration::from_millis(500),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let v = PatValidator::new(store.clone(), &PatConfig::default());
    let (raw, t) = token("u1", secs(3600));
    store.insert(t.clone()).await.expect("insert");
    assert!(matches!(v.validate(&raw).await, Ok(PatOutcome::Valid(_))));

    server.stop();
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "server is down"
    );
    v.evict(&t.token_hash).await;
    let r = v.validate(&raw).await;
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "never Valid while down: {r:?}"
    );

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match v.validate(&raw).await {
            Ok(PatOutcome::Valid(_)) => break,
            other => assert!(Instant::now() < deadline, "not recovered: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sqlite_explicit_path_and_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/tokens.db");
    let cfg = StoreConfig {
        path: Some(path.clone()),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect");
    assert_eq!(store.backend_name(), "sqlite");
    store.migrate().await.expect("migrate");
    assert!(path.exists());
    let pg = StoreConfig {
        kind: StoreKind::Postgres,
        ..StoreConfig::default()
    };
    let err = Store::connect(&pg, dir.path()).await.expect_err("no url");
    assert!(err.to_string().contains("store.url"), "{err}");
}

#[test]
fn store_config_validation() {
    assert_eq!(StoreConfig::default().validate(), Ok(()));
    let pg = StoreConfig {
        kind: StoreKind::Postgres,
        ..Default::default()
    };
    assert!(pg.validate().unwrap_err().starts_with("store.url:"));
    let pg = StoreConfig {
        url: Some("postgres://u:secret@h/db".into()),
        ..pg
    };
    assert_eq!(pg.validate(), Ok(()));
    let bad = StoreConfig {
        url: Some("postgres://u:secret@h:notaport/db".into()),
        ..pg
    };
    let msg = bad.validate().unwrap_err();
    assert!(
        msg.starts_with("store.url:") && !msg.contains("secret"),
        "{msg}"
    );
    let zero = StoreConfig {
        pool_size: 0,
        ..Default::default()
    };
    assert!(zero.validate().unwrap_err().starts_with("store.pool_size"));
    assert_eq!(
        StoreConfig::default().sqlite_path(std::path::Path::new("/d")),
        std::path::PathBuf::from("/d/portcullis.db")
    );
}

#[test]
fn token_record_debug_hides_hash() {
    let r = portcullis::store::TokenRecord {
        id: Uuid::nil(),
        user_id: "u".into(),
        user_issuer: "https://idp.example".into(),
        username: "u".into(),
        name: "n".into(),
        description: None,
        token_hash: [0xab; 32],
        display_hint: "pat_abcd…".into(),
        scopes: vec![],
        created_at: Utc::now(),
        expires_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
        rotated_from: None,
        kind: TokenKind::Opaque,
        jti: None,
        hash_version: Default::default(),
    };
    let s = format!("{r:?}");
    assert!(
        s.contains("abababab…") && !s.contains(&"ab".repeat(9)),
        "{s}"
    );
}
