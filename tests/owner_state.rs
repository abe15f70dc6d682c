//! PAT owner states (`pat.owner_sync`) between replicas, without Keycloak
//! (the replicas' sync cannot read the stand-in and keeps every state): a
//! changed owner written on A reaches B through the bus hint (B reads the
//! store), a bus message alone changes nothing, and a replica started later
//! loads the states from the store. The effect on Check: a disabled owner's
//! PAT is a 401 `owner disabled`, scopes are cut to the owner's.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use portcullis::server::Running;
use portcullis::store::{OwnerRecord, OwnerState};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check, client};
use portcullis_testkit::cluster::{Cluster, wait_denied};
use portcullis_testkit::store_suite;
use tokio::time::Instant;

const EXTRA: &str = "pat:\n  owner_sync:\n    issuer: {issuer}\n    interval: 1h\n    max_staleness: 2h\n    client_id: sync\n    client_secret: s\n";

fn owner(c: &Cluster, sub: &str, state: OwnerState, scopes: Option<&[&str]>) -> OwnerRecord {
    OwnerRecord {
        issuer: c.kc.issuer(),
        user_id: sub.into(),
        state,
        scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
        synced_at: Utc::now(),
        changed_at: Utc::now(),
    }
}

async fn pat(c: &Cluster, sub: &str) -> String {
    let (raw, mut row) = store_suite::token(sub, TimeDelta::hours(1));
    row.user_issuer = c.kc.issuer();
    row.scopes = vec!["uploads:read".into(), "uploads:write".into()];
    let rec = c.store().insert(row).await.unwrap();
    c.a.revoker.announce_created(&rec).await;
    raw
}

async fn scopes(srv: &Running, token: &str) -> String {
    let resp = check(srv.grpc_addr, &Req::get("/x").bearer(token)).await;
    allowed(&resp).0["x-auth-scopes"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_changes_reach_the_other_replica_and_a_new_one() {
    let mut c = Cluster::start_with("1h", "", EXTRA).await;
    let (alice, bob) = (pat(&c, "alice").await, pat(&c, "bob").await);
    assert_eq!(scopes(&c.b, &alice).await, "uploads:read uploads:write");

    // Alice disabled, written and announced on A: B refuses her PAT.
    let rec = owner(&c, "alice", OwnerState::Disabled, Some(&["uploads:read"]));
    assert!(c.store().put_owner(&rec).await.unwrap());
    let req = Req::get("/x").bearer(&alice).build();
    let mut b = client(c.b.grpc_addr).await;
    let t0 = Instant::now();
    c.a.revoker.owner_changed(&rec).await;
    let (lag, resp) = wait_denied(&mut b, &req, t0, Duration::from_secs(1)).await;
    assert_invalid_token(&resp, "owner disabled");
    eprintln!("owner disabled on A → refused on B after {lag:?}");

    // Bob loses uploads:write: his PAT keeps only what he still holds.
    let rec = owner(
        &c,
        "bob",
        OwnerState::Enabled,
        Some(&["uploads:read", "other:x"]),
    );
    assert!(c.store().put_owner(&rec).await.unwrap());
    c.a.revoker.owner_changed(&rec).await;
    let narrowed = async || match scopes(&c.b, &bob).await.as_str() {
        "uploads:read" => Ok(()),
        other => Err(other.to_owned()),
    };
    portcullis_testkit::eventually(Duration::from_secs(1), "scopes cut on B", narrowed).await;

    // A replica started now loads both from the store.
    let late = c.replica().await;
    let resp = check(late.grpc_addr, &Req::get("/x").bearer(&alice)).await;
    assert_invalid_token(&resp, "owner disabled");
    assert_eq!(scopes(&late, &bob).await, "uploads:read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_message_alone_cannot_re_enable_an_owner() {
    let c = Cluster::start_with("1h", "", EXTRA).await;
    let alice = pat(&c, "alice").await;
    let rec = owner(&c, "alice", OwnerState::Disabled, None);
    c.store().put_owner(&rec).await.unwrap();
    c.a.revoker.owner_changed(&rec).await;
    let refused = async || {
        let resp = check(c.b.grpc_addr, &Req::get("/x").bearer(&alice)).await;
        match resp.status.as_ref().map(|s| s.code) {
            Some(16) => Ok(resp),
            other => Err(other),
        }
    };
    portcullis_testkit::eventually(Duration::from_secs(1), "disabled on B", refused).await;
    // A forged hint: B re-reads the store, which still says disabled.
    let received = c.b.revoker.bus().received();
    let redis = redis::Client::open(c.redis.url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let msg = format!("owner:{}\talice", c.kc.issuer());
    let _: i64 = redis::cmd("PUBLISH")
        .arg("portcullis:revocations")
        .arg(msg)
        .query_async(&mut conn)
        .await
        .unwrap();
    portcullis_testkit::eventually(Duration::from_secs(1), "hint received", async || {
        if c.b.revoker.bus().received() > received {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let resp = check(c.b.grpc_addr, &Req::get("/x").bearer(&alice)).await;
    assert_invalid_token(&resp, "owner disabled");
}
