//! Token events (outbox and audit trail) on SQLite and Postgres: every
//! write stores its events with the change, and expiry notices follow a
//! controllable clock. Webhook deliveries: tests/store_deliveries.rs.

use chrono::{DateTime, Utc};
use portcullis::store::{
    Actor, ActorKind, Cause, EventQuery, EventRecord, OwnerRecord, OwnerState, Store,
};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};

store_suite!(
    every_write_stores_its_events,
    leak_reports_revoke_found_tokens_only,
    owner_suspension_and_reinstatement_are_events,
    expiry_notices_once_per_threshold_with_a_controllable_clock,
    expiry_notices_skip_windows_longer_than_the_token_and_send_only_the_most_urgent,
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
