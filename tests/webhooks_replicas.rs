//! Two replicas on one Postgres deliver each webhook event exactly once:
//! events written through both replicas at once, a slowish receiver so
//! both replicas are busy claiming, every event counted at the receiver.
//! Prints the duplicate count and the delivery latency (event to receipt).

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;
use portcullis::store::{DeliveryQuery, DeliveryState, Store};
use portcullis_testkit::cluster::{Cluster, percentile};
use portcullis_testkit::store_suite::token;
use portcullis_testkit::webhook::Receiver;

const SECRET: &str = "replica-webhook-secret-0123456789";
const EVENTS_PER_REPLICA: usize = 150;

fn store_of(r: &portcullis::server::Running) -> Store {
    r.engine.load().pats().store().clone()
}

async fn write_events(store: Store, user: &'static str) {
    for _ in 0..EVENTS_PER_REPLICA {
        let (_, t) = token(user, TimeDelta::hours(1));
        store.insert(t).await.expect("insert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_deliver_each_event_exactly_once() {
    let rx = Receiver::start(SECRET).await;
    rx.delay(Duration::from_millis(5));
    let extra = format!(
        "notify:\n  webhooks:\n    - url: {}\n      secret: REPLICA_WEBHOOK_SECRET\n      name: counted\n\
         \x20 delivery:\n    poll_interval: 100ms\n    concurrency: 8\n    timeout: 5s\n    lease: 10s\n",
        rx.url()
    );
    let c = Cluster::start_env("1s", "", &extra, &[("REPLICA_WEBHOOK_SECRET", SECRET)]).await;
    let (a, b) = (store_of(&c.a), store_of(&c.b));
    tokio::join!(write_events(a, "alice"), write_events(b, "bob"));
    let total = 2 * EVENTS_PER_REPLICA;
    let hits = rx.wait_events(total, Duration::from_secs(60)).await;
    // Anything still in flight would show up as a duplicate: let the
    // queue drain before counting (every delivery finished in the store).
    let store = c.store();
    portcullis_testkit::eventually(
        Duration::from_secs(30),
        "all deliveries finished",
        async || {
            let d = store
                .deliveries(&DeliveryQuery {
                    state: Some(DeliveryState::Delivered),
                    limit: 1000,
                    ..DeliveryQuery::default()
                })
                .await
                .unwrap();
            if d.len() == total {
                Ok(d)
            } else {
                Err(d.len())
            }
        },
    )
    .await;
    let hits = {
        let later = rx.hits();
        assert!(later.len() >= hits.len());
        later
    };
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for h in &hits {
        assert!(h.signature_ok, "{h:?}");
        *per_event.entry(h.event_id()).or_default() += 1;
    }
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    let delivered = store
        .deliveries(&DeliveryQuery {
            state: Some(DeliveryState::Delivered),
            limit: 1000,
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    let mut by_replica: HashMap<String, usize> = HashMap::new();
    for d in &delivered {
        *by_replica
            .entry(d.replica.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let mut lat: Vec<Duration> = hits
        .iter()
        .map(|h| {
            let at: chrono::DateTime<chrono::Utc> = h.body["occurred_at"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("occurred_at");
            (h.received_at - at).to_std().unwrap_or_default()
        })
        .collect();
    lat.sort();
    eprintln!(
        "two replicas, one Postgres: {total} events, {} requests, {duplicates} duplicates; \
         latency p50 {:?} p90 {:?} p99 {:?} max {:?}; deliveries per replica {:?}",
        hits.len(),
        percentile(&lat, 50),
        percentile(&lat, 90),
        percentile(&lat, 99),
        lat.last().unwrap(),
        by_replica.values().collect::<Vec<_>>(),
    );
    assert_eq!(per_event.len(), total, "every event delivered");
    assert_eq!(duplicates, 0, "each event delivered exactly once");
    assert_eq!(hits.len(), total);
    assert_eq!(
        by_replica.len(),
        2,
        "both replicas delivered: {by_replica:?}"
    );

    // One event at a time on an idle pair (written through A, then B, …):
    // the latency of a single event, not of a burst's queue.
    rx.delay(Duration::ZERO);
    let mut single = Vec::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { &c.a } else { &c.b };
        let before = rx.hits().len();
        let (_, t) = token("carol", TimeDelta::hours(1));
        store_of(via).insert(t).await.expect("insert");
        let h = rx.wait_hits(before + 1, Duration::from_secs(10)).await;
        let hit = &h[before];
        let at: chrono::DateTime<chrono::Utc> = hit.body["occurred_at"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap();
        single.push((hit.received_at - at).to_std().unwrap_or_default());
    }
    single.sort();
    eprintln!(
        "single events on an idle pair: p50 {:?} p90 {:?} max {:?}",
        percentile(&single, 50),
        percentile(&single, 90),
        single.last().unwrap()
    );
    let after = rx.hits();
    let mut ids: Vec<&str> = after.iter().map(|h| h.event_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (after.len(), ids.len()),
        (total + 20, total + 20),
        "no duplicates"
    );
}
