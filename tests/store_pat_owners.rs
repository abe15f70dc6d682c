//! PAT owners' synced state on SQLite and Postgres: the owners of active
//! PATs, upsert reporting real changes only, changes since a watermark and
//! one owner's row.

use chrono::TimeDelta;
use portcullis::store::{OwnerKeyset, OwnerRecord, OwnerState, Store};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};

store_suite!(
    active_owners_are_owners_of_live_pats,
    owner_upsert_reports_changes,
);

const ISS: &str = "https://idp.example";

async fn active_owners_are_owners_of_live_pats(store: Store) {
    setup(&store).await;
    for user in ["alice", "alice", "bob"] {
        let (_, t) = token(user, TimeDelta::days(1));
        store.insert(t).await.expect("insert");
    }
    let (_, gone) = token("carol", TimeDelta::days(1));
    let gone = store.insert(gone).await.expect("insert");
    store.revoke(gone.id, now()).await.expect("revoke");
    let (_, mut old) = token("dave", TimeDelta::days(1));
    old.created_at = now() - secs(7200);
    old.expires_at = now() - secs(1);
    store.insert(old).await.expect("insert");
    assert_eq!(
        store.active_owners(ISS, now()).await.expect("q"),
        ["alice", "bob"]
    );
    assert!(
        store
            .active_owners("https://other", now())
            .await
            .expect("q")
            .is_empty()
    );
}

fn owner(state: OwnerState, scopes: Option<&[&str]>) -> OwnerRecord {
    OwnerRecord {
        issuer: ISS.into(),
        user_id: "alice".into(),
        state,
        scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
        synced_at: now(),
        changed_at: now(),
    }
}

async fn owner_upsert_reports_changes(store: Store) {
    setup(&store).await;
    let t0 = now() - secs(1);
    let first = owner(
        OwnerState::Enabled,
        Some(&["uploads:read", "uploads:write"]),
    );
    assert!(
        store.put_owner(&first).await.expect("new"),
        "a new owner is a change"
    );
    let mut same = owner(
        OwnerState::Enabled,
        Some(&["uploads:read", "uploads:write"]),
    );
    same.changed_at = now() + secs(1);
    assert!(
        !store.put_owner(&same).await.expect("same"),
        "nothing changed"
    );
    let since = store
        .owners_changed_since(&OwnerKeyset::after(t0), 1000)
        .await
        .expect("q");
    assert_eq!(since.len(), 1);
    assert_eq!(
        since[0].changed_at, first.changed_at,
        "unchanged keeps its watermark"
    );
    let mut fewer = owner(OwnerState::Enabled, Some(&["uploads:read"]));
    fewer.changed_at = now() + secs(2);
    assert!(
        store.put_owner(&fewer).await.expect("scopes"),
        "scopes changed"
    );
    let mut off = owner(OwnerState::Disabled, Some(&["uploads:read"]));
    off.changed_at = now() + secs(3);
    assert!(store.put_owner(&off).await.expect("state"), "state changed");
    let mut open = owner(OwnerState::Disabled, None);
    open.changed_at = now() + secs(4);
    assert!(
        store.put_owner(&open).await.expect("null"),
        "scopes to NULL is a change"
    );
    let got = store.owner(ISS, "alice").await.expect("q").expect("row");
    assert_eq!((got.state, got.scopes), (OwnerState::Disabled, None));
    assert_eq!(got.changed_at, open.changed_at);
    assert!(store.owner(ISS, "bob").await.expect("q").is_none());
    assert!(
        store
            .owners_changed_since(&OwnerKeyset::after(open.changed_at), 1000)
            .await
            .expect("q")
            .is_empty()
    );
}
