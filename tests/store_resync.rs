//! The resync loop reads in keyset pages (`store::page`): a replica learns
//! of thousands of PATs created or revoked at once elsewhere, with every
//! query inside a tight `store.timeout`, on SQLite and real Postgres.
//!
//! The store is wrapped so each row a resync read returns costs
//! [`ROW_COST`] more, as on a table far bigger than a test database: the
//! old single query over [`BULK`] rows then outlasts [`TIGHT`] (shown
//! by a replica reading with one unbounded page, which learns nothing), a
//! page of [`PAGE`] rows does not.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use portcullis::pat::{PatConfig, PatRejection, PatValidator};
use portcullis::revocation::{DenyCheck, JwtDenyList, Resync};
use portcullis::store::{DenylistKind, LogoutKind, LogoutMark, Store, TokenHash};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use portcullis_testkit::wrapped_store::WrappedStore;

const BULK: usize = 5_000;
const PAGE: u32 = 250;
/// 5,000 rows: 500 ms; a page of 250: 25 ms.
const ROW_COST: Duration = Duration::from_micros(100);
const TIGHT: Duration = Duration::from_millis(150);

store_suite!(
    a_full_load_cut_short_never_claims_to_be_complete,
    bulk_creation_and_revocation_reach_a_replica_page_by_page,
    deny_list_and_logout_marks_load_page_by_page,
);

/// `BULK` tokens of `user` written straight to the store (as another
/// replica or the CLI would: no validator is told); raw tokens and hashes.
async fn bulk(store: &Store, user: &str) -> Vec<(String, TokenHash)> {
    futures::stream::iter(0..BULK)
        .map(|_| async {
            let (raw, t) = token(user, secs(3600));
            let hash = t.token_hash;
            store.insert(t).await.expect("insert");
            (raw, hash)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// A replica's validator and resync loop over `store`, `page` rows a query.
fn replica(store: &Store, page: u32) -> (Arc<PatValidator>, Resync) {
    let v = Arc::new(PatValidator::new(store.clone(), &PatConfig::default()));
    let r = Resync::new(v.clone(), Arc::new(JwtDenyList::new(10))).with_page_size(page);
    (v, r)
}

fn knows_all(v: &PatValidator, batch: &[(String, TokenHash)]) -> bool {
    batch.iter().all(|(_, h)| v.known().may_exist(h))
}

async fn bulk_creation_and_revocation_reach_a_replica_page_by_page(store: Store) {
    setup(&store).await;
    let wrapped = WrappedStore::new(store.clone());
    let tight = Store::from_backend(wrapped.clone(), TIGHT);
    let first = bulk(&store, "bulk-1").await;

    // Full load of the known-hash set at start.
    wrapped.set_row_cost(ROW_COST);
    let (old_v, mut old) = replica(&tight, u32::MAX);
    old.once().await;
    assert!(
        !old_v.known().is_loaded(),
        "one unbounded query over {BULK} rows must outlast {TIGHT:?} (else this test shows nothing)"
    );
    let (v, mut r) = replica(&tight, PAGE);
    let calls = wrapped.calls.load(std::sync::atomic::Ordering::SeqCst);
    r.once().await;
    assert!(v.known().is_loaded(), "paged full load within the timeout");
    assert!(knows_all(&v, &first));
    let pages = wrapped.calls.load(std::sync::atomic::Ordering::SeqCst) - calls;
    assert!(
        pages as usize > BULK / PAGE as usize,
        "{pages} calls for {BULK} rows"
    );

    // Created elsewhere after the load: the incremental read.
    wrapped.set_row_cost(Duration::ZERO);
    old.once().await; // the unbounded replica loads while the store is cheap
    assert!(old_v.known().is_loaded() && knows_all(&old_v, &first));
    wrapped.set_row_cost(ROW_COST);
    let second = bulk(&store, "bulk-2").await;
    old.once().await;
    assert!(
        !second.iter().any(|(_, h)| old_v.known().may_exist(h)),
        "the single query timed out: the old replica never learns of them"
    );
    r.once().await;
    assert!(
        knows_all(&v, &second),
        "every created PAT learned in one pass"
    );

    // Revoked elsewhere in one go, while both replicas hold some cached as
    // active: the paged replica denies them at its next pass.
    let sample: Vec<&String> = first
        .iter()
        .step_by(BULK / 20)
        .map(|(raw, _)| raw)
        .collect();
    for raw in &sample {
        assert!(v.validate(raw).await.expect("store").is_ok());
        assert!(old_v.validate(raw).await.expect("store").is_ok());
    }
    let revoked = store
        .revoke_all_for_user("https://idp.example", "bulk-1", now())
        .await
        .expect("revoke all");
    assert_eq!(revoked.len(), BULK);
    old.once().await;
    assert!(
        old_v.validate(sample[0]).await.expect("cache").is_ok(),
        "the single revocation query timed out: still cached as active"
    );
    r.once().await;
    for raw in &sample {
        assert_eq!(
            v.validate(raw).await.expect("cache"),
            Err(PatRejection::Revoked)
        );
    }
    assert!(!first.iter().any(|(_, h)| v.known().may_exist(h)));
    assert!(knows_all(&v, &second), "the others stay known");
}

/// `n` deny-list entries and `n` logout marks named `{tag}{i}`, the marks
/// all with one `changed_at` (ties the pages must split by key).
async fn deny_and_marks(store: &Store, tag: &str, n: usize) {
    let t = now();
    for i in 0..n {
        let v = format!("{tag}{i}");
        store
            .deny_jwt(DenylistKind::Jti, &v, t + secs(3600))
            .await
            .expect("deny");
        let mark = LogoutMark {
            issuer: "https://idp.example".into(),
            kind: LogoutKind::Sid,
            value: v,
            not_before: t,
            expires_at: t + secs(3600),
            changed_at: t,
        };
        store.mark_logout(&mark).await.expect("mark");
    }
}

async fn deny_list_and_logout_marks_load_page_by_page(store: Store) {
    setup(&store).await;
    deny_and_marks(&store, "a", 25).await;
    let deny = Arc::new(JwtDenyList::new(1000));
    let v = Arc::new(PatValidator::new(store.clone(), &PatConfig::default()));
    let mut r2 = Resync::new(v.clone(), deny.clone()).with_page_size(4);
    r2.once().await;
    assert!(deny.is_loaded() && deny.logout().is_loaded());
    assert_eq!(
        (deny.len(), deny.logout().len()),
        (25, 25),
        "full load, 7 pages"
    );

    // Written later: the incremental reads, page by page.
    deny_and_marks(&store, "b", 25).await;
    r2.once().await;
    assert_eq!((deny.len(), deny.logout().len()), (50, 50), "incremental");
    let t = now().timestamp();
    for tag in ["a0", "a24", "b0", "b24"] {
        assert_eq!(
            deny.check(Some(tag), None, t),
            portcullis::revocation::DenyCheck::Denied,
            "{tag}"
        );
    }

    // More live entries than fit: the full load stops past capacity and the
    // set reports itself overflowed (Check then asks the store).
    let small = Arc::new(JwtDenyList::new(10));
    Resync::new(v, small.clone()).with_page_size(4).once().await;
    assert!(small.is_overflowed() && small.logout().is_overflowed());
}

/// A full deny-list load stops reading once it has gathered more rows than
/// the set holds, but rows are not entries: one extended mid-load is read
/// twice, so the set fits what was gathered. It must still not report
/// itself complete, or Check answers Clear for a jti on the pages it never
/// read (found in review; failed before `JwtDenyList::load_prefix`).
async fn a_full_load_cut_short_never_claims_to_be_complete(store: Store) {
    setup(&store).await;
    let exp = now() + secs(3600);
    let tick = || tokio::time::sleep(Duration::from_millis(3)); // distinct µs timestamps
    store.deny_jwt(DenylistKind::Jti, "a", exp).await.unwrap();
    tick().await;
    store.deny_jwt(DenylistKind::Jti, "b", exp).await.unwrap();
    tick().await;

    let wrapped = WrappedStore::new(store.clone());
    let paged = Store::from_backend(wrapped.clone(), Duration::from_secs(5));
    // Before the 2nd page: another replica extends "a" (created_at moves to
    // now) and deny-lists "y" (no bus on this replica).
    let other = store.clone();
    wrapped.before_denied_since(2, async move {
        other
            .deny_jwt(DenylistKind::Jti, "a", exp + secs(60))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        other.deny_jwt(DenylistKind::Jti, "y", exp).await.unwrap();
    });

    let deny = Arc::new(JwtDenyList::new(2));
    let v = Arc::new(PatValidator::new(paged.clone(), &PatConfig::default()));
    let mut r = Resync::new(v, deny.clone()).with_page_size(1);
    r.once().await;

    assert!(
        store
            .is_jwt_denied(Some("y"), None, chrono::Utc::now())
            .await
            .unwrap(),
        "y is deny-listed in the store"
    );
    let t = chrono::Utc::now().timestamp();
    assert_ne!(
        deny.check(Some("y"), None, t),
        DenyCheck::Clear,
        "a deny-listed jti passes: loaded={} overflowed={} len={} (capacity 2)",
        deny.is_loaded(),
        deny.is_overflowed(),
        deny.len()
    );
}
