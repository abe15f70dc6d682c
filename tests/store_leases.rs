//! Webhook delivery leases on Postgres run on the database's clock, not
//! the replicas': a replica whose clock is an hour behind or ahead can
//! neither end another's lease early (a second delivery of the same event)
//! nor hold a delivery for an hour after it died. The replicas' clocks are
//! the `now` each passes in (the dispatcher's injectable clock).
//!
//! SQLite is one host, so one clock: its delivery leases are not tested
//! here.
//!
//! The owner sync's lease (`sync_leases`, `Store::take_lease`) is tested on
//! both backends: one holder at a time, renewal, release, takeover once it
//! runs out (SQLite: by the `now` passed in; Postgres: by its own clock).

use std::time::Duration;

use portcullis::store::{HookFilter, Store};
use portcullis_testkit::eventually;
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};

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

const LEASE: &str = "owner_sync:https://kc.example/realms/a";

async fn take(store: &Store, holder: &str, at: chrono::DateTime<chrono::Utc>, len: i64) -> bool {
    store
        .take_lease(LEASE, holder, at, at + secs(len))
        .await
        .expect("take_lease")
}

/// One holder at a time; the holder renews; another issuer's lease is
/// another lease; a release by someone else does nothing, the holder's
/// frees it at once.
async fn one_holder_at_a_time(store: Store) {
    setup(&store).await;
    let n = now();
    assert!(take(&store, "a", n, 30).await);
    assert!(!take(&store, "b", n, 30).await, "b took a's lease");
    assert!(
        take(&store, "a", n + secs(10), 30).await,
        "a could not renew"
    );
    assert!(!take(&store, "b", n + secs(10), 30).await);
    let other = store
        .take_lease(
            "owner_sync:https://kc.example/realms/b",
            "b",
            n,
            n + secs(30),
        )
        .await
        .unwrap();
    assert!(other, "b could not take another issuer's lease");
    store.release_lease(LEASE, "b").await.unwrap();
    assert!(
        !take(&store, "b", n, 30).await,
        "b's release freed a's lease"
    );
    store.release_lease(LEASE, "a").await.unwrap();
    assert!(
        take(&store, "b", n, 30).await,
        "a's release did not free it"
    );
    assert!(!take(&store, "a", n, 30).await);
}

/// Replicas racing for a free lease: exactly one gets it.
async fn racing_replicas_get_one_lease(store: Store) {
    setup(&store).await;
    let n = now();
    let tries = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { take(&store, &format!("r{i}"), n, 30).await })
    });
    let mut won = 0;
    for t in tries {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

store_suite!(one_holder_at_a_time, racing_replicas_get_one_lease);

/// SQLite: the lease runs out by the clock the replicas pass in (one host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sync_lease_runs_out_by_the_clock_passed_in() {
    run_sqlite(|store| async move {
        setup(&store).await;
        let n = now();
        assert!(take(&store, "a", n, 30).await);
        assert!(!take(&store, "b", n + secs(29), 30).await);
        assert!(take(&store, "b", n + secs(31), 30).await, "no takeover");
        assert!(!take(&store, "a", n + secs(32), 30).await, "a kept it");
    })
    .await;
}

/// Postgres: the lease runs on the database's clock. A holder whose clock
/// is an hour behind keeps its 30 s lease; one an hour ahead that takes 1 s
/// and dies is replaced once that second has passed, not in an hour.
async fn pg_sync_lease(store: Store) {
    setup(&store).await;
    let late = now() - secs(3600);
    assert!(take(&store, "a", late, 30).await);
    assert!(
        !take(&store, "b", now(), 30).await,
        "a's lease looked expired to b"
    );
    store.release_lease(LEASE, "a").await.unwrap();
    let early = now() + secs(3600);
    assert!(take(&store, "a", early, 1).await);
    assert!(!take(&store, "b", now(), 30).await);
    eventually(
        Duration::from_secs(15),
        "a's 1 s lease runs out",
        || async {
            if take(&store, "b", now(), 30).await {
                Ok(())
            } else {
                Err("still a's")
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sync_lease_runs_on_the_database_clock() {
    run_pg(pg_sync_lease).await;
}

/// A leaseholder whose passes fail (it cannot reach Keycloak, or its store
/// calls fail) gives the lease up instead of renewing it pass after pass:
/// held, it would keep every other replica on standby, so an owner disabled
/// or deleted in Keycloak would keep their PATs working on every replica
/// for as long as that one replica stays cut off. Before the fix, B stayed
/// on `Pass::Standby` forever here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_owner_sync_gives_its_lease_up() {
    use std::sync::Arc;

    use portcullis::owners::{OwnerSync, Pass};
    use portcullis::pat::{OwnerSyncConfig, PatConfig, PatValidator};
    use portcullis::revocation::Revoker;

    run_sqlite(|store| async move {
        setup(&store).await;
        const ISSUER: &str = "https://kc.example.org/realms/main";
        let (_, mut row) = token("lena", secs(3600));
        row.user_issuer = ISSUER.into();
        store.insert(row).await.expect("insert");
        // A closed port: every pass that reads Keycloak fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let replica = || {
            let cfg = OwnerSyncConfig {
                issuer: ISSUER.into(),
                interval: Duration::from_secs(60),
                client_id: "portcullis-owner-sync".into(),
                client_secret: Some("s".into()),
                max_staleness: Duration::from_secs(600),
                keycloak_url: Some(url.clone()),
                lease: Some(Duration::from_secs(3600)),
            };
            let pats = Arc::new(PatValidator::new(store.clone(), &PatConfig::default()));
            let revoker = Revoker::new(pats.clone());
            OwnerSync::new(cfg, Default::default(), pats, revoker).unwrap()
        };
        let (mut a, mut b) = (replica(), replica());
        assert!(a.once().await.is_err(), "a cannot reach Keycloak");
        // B must get its turn (here it fails too, but it tried).
        let b_pass = b.once().await;
        assert!(
            !matches!(b_pass, Ok(Pass::Standby)),
            "b stood by behind a leaseholder whose passes fail"
        );
        assert!(b_pass.is_err());
    })
    .await;
}
