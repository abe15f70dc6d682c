//! Token events (outbox and audit trail) on SQLite and Postgres: every
//! write stores its events with the change, expiry notices follow a
//! controllable clock, and webhook deliveries are fanned out, leased to
//! one claimer, retried, dead-lettered and purged.

use chrono::{DateTime, TimeDelta, Utc};
use portcullis::store::{
    Actor, ActorKind, AttemptOutcome, Cause, DeliveryQuery, DeliveryState, EventQuery, EventRecord,
    HookFilter, OwnerRecord, OwnerState, Store,
};
use portcullis_testkit::eventually;
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use std::time::Duration;

store_suite!(
    every_write_stores_its_events,
    leak_reports_revoke_found_tokens_only,
    owner_suspension_and_reinstatement_are_events,
    expiry_notices_once_per_threshold_with_a_controllable_clock,
    expiry_notices_skip_windows_longer_than_the_token_and_send_only_the_most_urgent,
    deliveries_fan_out_per_webhook_and_lease_to_one_claimer,
    failed_deliveries_retry_then_dead_letter_and_purge_cascades,
    a_late_success_is_not_left_dead,
    each_webhook_fans_out_from_its_own_cursor,
);

const ISS: &str = "https://idp.example";

fn api_cause(sub: &str) -> Cause {
    Cause {
        actor: Actor {
            kind: ActorKind::Jwt,
            subject: sub.into(),
            issuer: ISS.into(),
            token_id: None,
            client_addr: Some("203.0.113.7".into()),
        },
        reason: "api",
    }
}

async fn all(store: &Store) -> Vec<EventRecord> {
    let mut v = store
        .events(&EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .expect("events");
    v.reverse(); // oldest first
    v
}

fn names(v: &[EventRecord]) -> Vec<&str> {
    v.iter().map(|e| e.event.as_str()).collect()
}

async fn every_write_stores_its_events(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, a) = token("alice", secs(3600));
    let cause = api_cause("alice");
    store.insert_by(a.clone(), &cause).await.expect("insert");
    let ev = all(&store).await;
    assert_eq!(names(&ev), ["token.created"]);
    assert_eq!(ev[0].token_id, Some(a.id));
    assert_eq!(
        (ev[0].owner_issuer.as_str(), ev[0].owner_id.as_str()),
        (ISS, "alice")
    );
    assert_eq!(ev[0].actor, cause.actor);
    assert_eq!(ev[0].data["token"]["name"], "test token");
    assert_eq!(ev[0].data["reason"], "api");
    assert!(ev[0].data["token"].get("token_hash").is_none());

    // Rotation: token.rotated (old, naming the successor) + token.created.
    let (_, b) = token("alice", secs(3600));
    store
        .rotate_by(a.id, b.clone(), n, &cause)
        .await
        .expect("rotate");
    let ev = all(&store).await;
    assert_eq!(names(&ev)[1..], ["token.rotated", "token.created"]);
    assert_eq!(ev[1].token_id, Some(a.id));
    assert_eq!(ev[1].data["successor"]["id"], b.id.to_string());
    assert_eq!(ev[2].token_id, Some(b.id));
    assert_eq!(ev[2].data["rotated_from"], a.id.to_string());

    // Revoke: one event, and none when already revoked (idempotent).
    store
        .revoke_by(b.id, n, &cause)
        .await
        .expect("revoke")
        .expect("b");
    store
        .revoke_by(b.id, n, &cause)
        .await
        .expect("again")
        .expect("b");
    assert_eq!(names(&all(&store).await)[3..], ["token.revoked"]);

    // Revoke-all: one event per token revoked now.
    let (_, c) = token("alice", secs(3600));
    let (_, d) = token("alice", secs(3600));
    store.insert(c.clone()).await.expect("c");
    store.insert(d.clone()).await.expect("d");
    let gone = store
        .revoke_all_for_user_by(ISS, "alice", n, &Cause::system("owner_deleted"))
        .await
        .expect("revoke all");
    assert_eq!(gone.len(), 2);
    let ev = all(&store).await;
    let tail: Vec<_> = ev[6..]
        .iter()
        .map(|e| (e.event.as_str(), e.data["reason"].as_str()))
        .collect();
    assert_eq!(tail, [("token.revoked", Some("owner_deleted")); 2]);
    assert_eq!(ev[4].data["reason"], "unspecified");

    // Reuse detection: token.reuse_detected about the presented token,
    // token.revoked only for the chain members revoked now.
    let (_, x) = token("bob", secs(3600));
    let (_, y) = token("bob", secs(3600));
    store.insert(x.clone()).await.expect("x");
    store.rotate(x.id, y.clone(), n).await.expect("rotate x");
    let before = all(&store).await.len();
    let chain = store
        .revoke_chain_by(x.id, n, &Cause::system("reuse_detected"))
        .await
        .expect("chain");
    assert_eq!(chain.len(), 2);
    let ev = all(&store).await;
    assert_eq!(
        names(&ev[before..]),
        ["token.reuse_detected", "token.revoked"]
    );
    assert_eq!(ev[before].token_id, Some(x.id));
    assert_eq!(ev[before + 1].token_id, Some(y.id));
    assert_eq!(ev[before].data["chain"].as_array().map(Vec::len), Some(2));

    // The audit filters: party (owner or actor), token, event, cursor.
    let bob = store
        .events(&EventQuery {
            party: Some((ISS.into(), "bob".into())),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("bob");
    assert!(bob.iter().all(|e| e.owner_id == "bob"), "{bob:?}");
    let by_alice = store
        .events(&EventQuery {
            party: Some((ISS.into(), "alice".into())),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("alice");
    assert_eq!(by_alice.len(), 8, "alice's tokens' events");
    let page1 = store
        .events(&EventQuery {
            limit: 3,
            ..EventQuery::default()
        })
        .await
        .expect("page 1");
    let page2 = store
        .events(&EventQuery {
            limit: 3,
            before_seq: page1.last().map(|e| e.seq),
            ..EventQuery::default()
        })
        .await
        .expect("page 2");
    assert!(page1.last().unwrap().seq > page2.first().unwrap().seq);
    let revoked_b = store
        .events(&EventQuery {
            token_id: Some(b.id),
            event: Some("token.revoked".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("b revoked");
    assert_eq!(revoked_b.len(), 1);
}

async fn leak_reports_revoke_found_tokens_only(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, live) = token("carol", secs(3600));
    let (_, dead) = token("carol", secs(3600));
    store.insert(live.clone()).await.expect("live");
    store.insert(dead.clone()).await.expect("dead");
    store.revoke(dead.id, n).await.expect("revoke");
    let before = all(&store).await.len();
    let unknown = [7u8; 32];
    let scanner = Cause {
        actor: Actor {
            kind: ActorKind::Scanner,
            ..Actor::default()
        },
        reason: "leaked",
    };
    let found = store
        .revoke_hashes(&[live.token_hash, unknown, dead.token_hash], n, &scanner)
        .await
        .expect("report");
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|r| r.revoked_at.is_some()));
    let ev = all(&store).await;
    let tail: Vec<_> = ev[before..]
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.token_id,
                e.data["already_revoked"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("token.leaked", Some(live.id), Some(false)),
            ("token.revoked", Some(live.id), None),
            ("token.leaked", Some(dead.id), Some(true)),
        ]
    );
    assert!(
        ev[before..]
            .iter()
            .all(|e| e.actor.kind == ActorKind::Scanner)
    );
    // Nothing found: nothing written.
    let none = store
        .revoke_hashes(&[unknown], n, &scanner)
        .await
        .expect("unknown");
    assert!(none.is_empty());
    assert_eq!(all(&store).await.len(), ev.len());
}

async fn owner_suspension_and_reinstatement_are_events(store: Store) {
    setup(&store).await;
    let at = |s: i64| now() + secs(s);
    let rec = |state, t| OwnerRecord {
        issuer: ISS.into(),
        user_id: "dave".into(),
        state,
        scopes: None,
        synced_at: t,
        changed_at: t,
    };
    assert!(
        store
            .put_owner(&rec(OwnerState::Enabled, at(0)))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_owner(&rec(OwnerState::Disabled, at(1)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_owner(&rec(OwnerState::Disabled, at(2)))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_owner(&rec(OwnerState::Enabled, at(3)))
            .await
            .unwrap()
    );
    let ev = all(&store).await;
    assert_eq!(names(&ev), ["owner.suspended", "owner.reinstated"]);
    assert_eq!(ev[0].owner_id, "dave");
    assert_eq!(ev[0].token_id, None);
    assert_eq!(ev[0].actor.kind, ActorKind::System);
}

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

async fn scan(store: &Store, at: DateTime<Utc>) -> Vec<(String, Option<i64>)> {
    let before = all(store).await.len();
    store.expiry_notices(at, &[WEEK, DAY]).await.expect("scan");
    all(store).await[before..]
        .iter()
        .map(|e| (e.event.clone(), e.data["threshold_seconds"].as_i64()))
        .collect()
}

async fn expiry_notices_once_per_threshold_with_a_controllable_clock(store: Store) {
    setup(&store).await;
    let t0 = now();
    let (_, t) = token("erin", secs(10 * DAY));
    store.insert(t.clone()).await.expect("insert");
    let created = all(&store).await.len();
    assert_eq!(scan(&store, t0).await, []);
    let week = [("token.expiring".to_owned(), Some(WEEK))];
    assert_eq!(scan(&store, t0 + secs(3 * DAY + 1)).await, week);
    assert_eq!(scan(&store, t0 + secs(3 * DAY + 2)).await, [], "once");
    assert_eq!(scan(&store, t0 + secs(8 * DAY)).await, []);
    let day = [("token.expiring".to_owned(), Some(DAY))];
    assert_eq!(scan(&store, t0 + secs(9 * DAY + 1)).await, day);
    assert_eq!(scan(&store, t0 + secs(9 * DAY + 100)).await, []);
    let expired = [("token.expired".to_owned(), None)];
    assert_eq!(scan(&store, t0 + secs(10 * DAY + 1)).await, expired);
    assert_eq!(scan(&store, t0 + secs(11 * DAY)).await, []);
    let ev = all(&store).await;
    assert_eq!(ev.len(), created + 3);
    assert_eq!(
        ev[created].data["expires_in_seconds"].as_i64(),
        Some(7 * DAY - 1)
    );
    // A revoked token gets no notice.
    let (_, r) = token("erin", secs(10 * DAY));
    store.insert(r.clone()).await.expect("r");
    store.revoke(r.id, t0).await.expect("revoke");
    assert_eq!(scan(&store, t0 + secs(9 * DAY + 1)).await, []);
    assert_eq!(scan(&store, t0 + secs(11 * DAY)).await, []);
}

async fn expiry_notices_skip_windows_longer_than_the_token_and_send_only_the_most_urgent(
    store: Store,
) {
    setup(&store).await;
    let t0 = now();
    // A 3-day token never gets the 7-day notice: it was born inside it.
    let (_, short) = token("frank", secs(3 * DAY));
    store.insert(short.clone()).await.expect("short");
    assert_eq!(scan(&store, t0 + secs(1)).await, []);
    let day = [("token.expiring".to_owned(), Some(DAY))];
    assert_eq!(scan(&store, t0 + secs(2 * DAY + 1)).await, day);
    store.revoke(short.id, t0).await.expect("out of the way");
    // portcullis down through both windows of a 10-day token: only the
    // 1-day notice (the most urgent), then never the 7-day one.
    let (_, long) = token("frank", secs(10 * DAY));
    let t1 = now();
    store.insert(long).await.expect("long");
    assert_eq!(scan(&store, t1 + secs(9 * DAY + 10)).await[..], day[..]);
    assert_eq!(scan(&store, t1 + secs(9 * DAY + 20)).await, []);
    // Two stores scanning the same instant write each notice once.
    let (_, both) = token("frank", secs(10 * DAY));
    let t2 = now();
    store.insert(both).await.expect("both");
    let at = t2 + secs(3 * DAY + 5);
    let (a, b) = tokio::join!(
        store.expiry_notices(at, &[WEEK, DAY]),
        store.expiry_notices(at, &[WEEK, DAY])
    );
    assert_eq!(a.expect("a") + b.expect("b"), 1);
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
    assert!(all(&store).await.is_empty());
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
