//! Webhook delivery leases on Postgres run on the database's clock, not
//! the replicas': a replica whose clock is an hour behind or ahead can
//! neither end another's lease early (a second delivery of the same event)
//! nor hold a delivery for an hour after it died. The replicas' clocks are
//! the `now` each passes in (the dispatcher's injectable clock).
//!
//! SQLite is not tested here: it is one host, so one clock.

use std::time::Duration;

use portcullis::store::{HookFilter, Store};
use portcullis_testkit::eventually;
use portcullis_testkit::store_suite::{now, run_pg, secs, setup, token};

fn hooks() -> Vec<HookFilter> {
    vec![HookFilter {
        key: "h".into(),
        events: vec!["token.*".into()],
    }]
}

/// One pending delivery, due since two hours ago (so a replica an hour
/// behind sees it due too).
async fn one_delivery(store: &Store) {
    setup(store).await;
    let (_, t) = token("lena", secs(3600));
    store.insert(t).await.expect("insert");
    let n = now();
    let fanned = store
        .fan_out(&hooks(), n - secs(7200), n - secs(10800), 10)
        .await
        .expect("fan out");
    assert_eq!(fanned, 1);
}

async fn behind(store: Store) {
    one_delivery(&store).await;
    let keys = ["h".to_owned()];
    // Replica A's clock is an hour behind: its lease of 30 s ends, by its
    // clock, 59.5 minutes before the database's now.
    let a_now = now() - secs(3600);
    let a = store
        .claim_deliveries("replica-a", &keys, a_now, a_now + secs(30), 10)
        .await
        .expect("a claims");
    assert_eq!(a.len(), 1);
    // Replica B, on time, must not take it while A's attempt runs.
    let b_now = now();
    let b = store
        .claim_deliveries("replica-b", &keys, b_now, b_now + secs(30), 10)
        .await
        .expect("b claims");
    assert!(b.is_empty(), "A's lease looked expired to B: {b:?}");
    // Nor may the max_age sweep dead-letter it under A.
    assert_eq!(store.expire_deliveries(b_now, b_now).await.unwrap(), 0);
}

async fn ahead(store: Store) {
    one_delivery(&store).await;
    let keys = ["h".to_owned()];
    // Replica A's clock is an hour ahead; it takes a 2 s lease and dies.
    let a_now = now() + secs(3600);
    let a = store
        .claim_deliveries("replica-a", &keys, a_now, a_now + secs(2), 10)
        .await
        .expect("a claims");
    assert_eq!(a.len(), 1);
    // Replica B, on time, gets it once those 2 s have passed, not in an hour.
    let b = eventually(Duration::from_secs(15), "A's lease runs out", || async {
        let t = now();
        let b = store
            .claim_deliveries("replica-b", &keys, t, t + secs(30), 10)
            .await
            .expect("b claims");
        if b.is_empty() {
            Err("still leased")
        } else {
            Ok(b)
        }
    })
    .await;
    assert_eq!((b[0].id, b[0].attempts), (a[0].id, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_of_a_replica_behind_is_not_cut_short() {
    run_pg(behind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_of_a_replica_ahead_is_not_stretched() {
    run_pg(ahead).await;
}
