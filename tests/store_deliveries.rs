//! Webhook deliveries on SQLite and Postgres: fanned out per webhook from
//! its own cursor, leased to one claimer, retried, dead-lettered and
//! purged with their events. The events themselves: tests/store_events.rs.

use chrono::TimeDelta;
use portcullis::store::{
    AttemptOutcome, DeliveryQuery, DeliveryState, EventQuery, HookFilter, Store,
};
use portcullis_testkit::eventually;
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use std::time::Duration;

store_suite!(
    deliveries_fan_out_per_webhook_and_lease_to_one_claimer,
    failed_deliveries_retry_then_dead_letter_and_purge_cascades,
    a_late_success_is_not_left_dead,
    each_webhook_fans_out_from_its_own_cursor,
);

/// Every stored event (the purge test's "nothing left").
async fn events_left(store: &Store) -> usize {
    store
        .events(&EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .expect("events")
        .len()
}

fn hooks() -> Vec<HookFilter> {
    vec![
        HookFilter {
            key: "all".into(),
            events: vec!["*".into()],
        },
        HookFilter {
            key: "revocations".into(),
            events: vec!["token.revoked".into()],
        },
    ]
}

async fn deliveries_fan_out_per_webhook_and_lease_to_one_claimer(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, t) = token("gina", secs(3600));
    store.insert(t.clone()).await.expect("insert");
    store.revoke(t.id, n).await.expect("revoke");
    // created → "all"; revoked → "all" and "revocations".
    assert_eq!(
        store
            .fan_out(&hooks(), n, n - secs(3600), 100)
            .await
            .expect("fan out"),
        2
    );
    assert_eq!(
        store
            .fan_out(&hooks(), n, n - secs(3600), 100)
            .await
            .expect("again"),
        0,
        "once"
    );
    let keys: Vec<String> = hooks().into_iter().map(|h| h.key).collect();
    // A short lease: it runs out in real time below (Postgres keeps leases
    // on its own clock, so a `now` passed in cannot end one).
    let lease = n + secs(3);
    let (a, b) = tokio::join!(
        store.claim_deliveries("replica-a", &keys, n, lease, 2),
        store.claim_deliveries("replica-b", &keys, n, lease, 2)
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.len() + b.len(), 3, "every delivery claimed exactly once");
    let mut ids: Vec<_> = a.iter().chain(&b).map(|d| d.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert!(a.iter().chain(&b).all(|d| d.attempts == 1));
    // Leased: nobody else gets them until the lease runs out.
    assert!(
        store
            .claim_deliveries("c", &keys, n + secs(2), n + secs(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Only a webhook's own keys are claimed.
    assert!(
        store
            .claim_deliveries("c", &["other".into()], n + secs(31), n + secs(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A lease that ran out (its holder died) is claimed again.
    let got = std::sync::Mutex::new(Vec::new());
    eventually(Duration::from_secs(15), "leases run out", || async {
        let t = now();
        let mut c = store
            .claim_deliveries("replica-c", &keys, t, t + secs(60), 10)
            .await
            .expect("reclaim");
        let mut got = got.lock().unwrap();
        got.append(&mut c);
        if got.len() >= 3 {
            Ok(())
        } else {
            Err(got.len())
        }
    })
    .await;
    let again = got.into_inner().unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|d| d.attempts == 2));
    // The dead holder's late outcome is not recorded; the new holder's is.
    let first = &again[0];
    let done = AttemptOutcome::Delivered { status: 204 };
    let old_holder = if a.iter().any(|d| d.id == first.id) {
        "replica-a"
    } else {
        "replica-b"
    };
    assert!(
        !store
            .finish_delivery(first.id, old_holder, &done, n)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_delivery(first.id, "replica-c", &done, n)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_delivery(first.id, "replica-c", &done, n)
            .await
            .unwrap(),
        "finished once"
    );
    let delivered = store
        .deliveries(&DeliveryQuery {
            state: Some(DeliveryState::Delivered),
            limit: 10,
            ..DeliveryQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].id, first.id);
    assert_eq!(delivered[0].replica.as_deref(), Some("replica-c"));
    assert_eq!(delivered[0].last_status, Some(204));
    // The event travels with the claim.
    assert!(
        again
            .iter()
            .any(|d| d.event.event == "token.created" && d.event.token_id == Some(t.id))
    );
    // Listing pages by (event, webhook).
    let p1 = store
        .deliveries(&DeliveryQuery {
            limit: 2,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    let last = p1.last().unwrap();
    let p2 = store
        .deliveries(&DeliveryQuery {
            limit: 2,
            before: Some((last.seq, last.webhook.clone())),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((p1.len(), p2.len()), (2, 1));
    assert!(p1.iter().all(|d| d.id != p2[0].id));
}

async fn failed_deliveries_retry_then_dead_letter_and_purge_cascades(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, t) = token("hank", secs(3600));
    store.insert(t).await.expect("insert");
    let hooks = vec![HookFilter {
        key: "h".into(),
        events: vec!["token.*".into()],
    }];
    store
        .fan_out(&hooks, n, n - secs(3600), 10)
        .await
        .expect("fan out");
    let keys = ["h".to_owned()];
    let d = store
        .claim_deliveries("r", &keys, n, n + secs(30), 10)
        .await
        .unwrap();
    let retry = AttemptOutcome::Retry {
        status: Some(503),
        error: "receiver answered 503".into(),
        next_attempt_at: n + secs(5),
    };
    assert!(
        store
            .finish_delivery(d[0].id, "r", &retry, n)
            .await
            .unwrap()
    );
    // Not due before its next attempt, due after.
    assert!(
        store
            .claim_deliveries("r", &keys, n + secs(4), n + secs(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let d2 = store
        .claim_deliveries("r", &keys, n + secs(5), n + secs(60), 10)
        .await
        .unwrap();
    assert_eq!(d2[0].attempts, 2);
    let dead = AttemptOutcome::Dead {
        status: None,
        error: "connection failed".into(),
    };
    assert!(
        store
            .finish_delivery(d2[0].id, "r", &dead, n)
            .await
            .unwrap()
    );
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 1));
    // A pending delivery of an old event is dead-lettered by the sweep.
    let (_, u) = token("hank", secs(3600));
    store.insert(u).await.expect("u");
    store.fan_out(&hooks, n, n - secs(3600), 10).await.unwrap();
    assert_eq!(
        store.expire_deliveries(n - secs(60), n).await.unwrap(),
        0,
        "young"
    );
    assert_eq!(
        store
            .expire_deliveries(n + secs(60), n + secs(61))
            .await
            .unwrap(),
        1
    );
    let listed = store
        .deliveries(&DeliveryQuery {
            state: Some(DeliveryState::Dead),
            limit: 10,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("notify.delivery.max_age")
    );
    // Retention: deleting events deletes their deliveries.
    assert_eq!(
        store.purge_events(n + TimeDelta::hours(1)).await.unwrap(),
        2
    );
    assert_eq!(events_left(&store).await, 0);
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 0));
}

/// An attempt whose 2xx is recorded after the max_age sweep dead-lettered
/// its delivery (the lease ran out meanwhile) is listed as delivered: the
/// receiver has it. A late failure does not revive it.
async fn a_late_success_is_not_left_dead(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, t) = token("ivan", secs(3600));
    store.insert(t).await.expect("insert");
    let hooks = vec![HookFilter {
        key: "h".into(),
        events: vec!["token.*".into()],
    }];
    store
        .fan_out(&hooks, n, n - secs(3600), 10)
        .await
        .expect("fan out");
    let keys = ["h".to_owned()];
    let d = store
        .claim_deliveries("r", &keys, n, n + secs(1), 10)
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    // The sweep runs after the lease ran out (in real time: Postgres keeps
    // leases on its own clock), the event now past max_age.
    eventually(Duration::from_secs(15), "lease runs out", || async {
        match store.expire_deliveries(n + secs(60), now()).await.unwrap() {
            1 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let retry = AttemptOutcome::Retry {
        status: Some(503),
        error: "late failure".into(),
        next_attempt_at: n + secs(90),
    };
    assert!(
        !store
            .finish_delivery(d[0].id, "r", &retry, n + secs(62))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_delivery(
                d[0].id,
                "other",
                &AttemptOutcome::Delivered { status: 200 },
                n
            )
            .await
            .unwrap(),
        "only the replica that made the attempt"
    );
    assert!(
        store
            .finish_delivery(
                d[0].id,
                "r",
                &AttemptOutcome::Delivered { status: 204 },
                n + secs(62)
            )
            .await
            .unwrap()
    );
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 0));
    let listed = store
        .deliveries(&DeliveryQuery {
            state: Some(DeliveryState::Delivered),
            limit: 10,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_status, Some(204));
}

/// Fan-out follows each webhook, not the config of whichever replica runs
/// it: replica A (knowing only `ops`) fanning out first must not leave
/// `siem` (known to replica B, rolled out meanwhile) without its delivery.
/// And a webhook seen for the first time starts at its first sighting
/// instead of replaying the whole retained history.
async fn each_webhook_fans_out_from_its_own_cursor(store: Store) {
    setup(&store).await;
    let n = now();
    let started = n - secs(3600);
    let hook = |key: &str| HookFilter {
        key: key.into(),
        events: vec!["token.*".into()],
    };
    let (a, b) = (vec![hook("ops")], vec![hook("ops"), hook("siem")]);
    let (_, t) = token("jane", secs(3600));
    store.insert(t).await.expect("insert");
    assert_eq!(store.fan_out(&a, n, started, 10).await.unwrap(), 1);
    assert_eq!(
        store.fan_out(&b, n, started, 10).await.unwrap(),
        1,
        "siem's turn"
    );
    assert_eq!(store.fan_out(&b, n, started, 10).await.unwrap(), 0, "once");
    let of = |key: &'static str| {
        let store = store.clone();
        async move {
            store
                .deliveries(&DeliveryQuery {
                    webhook: Some(key.into()),
                    limit: 100,
                    ..DeliveryQuery::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!((of("ops").await, of("siem").await), (1, 1));
    // A webhook first seen now: the existing event is history, not replayed.
    let later = now() + secs(1);
    let c = vec![hook("late")];
    assert_eq!(store.fan_out(&c, later, later, 10).await.unwrap(), 0);
    assert_eq!(of("late").await, 0);
    let (_, u) = token("jane", secs(3600));
    store.insert(u).await.expect("insert");
    // Events written after the first sighting are its.
    assert_eq!(store.fan_out(&c, later, later, 10).await.unwrap(), 1);
    assert_eq!(of("late").await, 1);
}
