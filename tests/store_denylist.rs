//! The JWT deny-list on SQLite and Postgres: round trip, upsert keeping the
//! later expiry, purge, and reading changes since a watermark.

use portcullis::store::{DenyKeyset, DenylistKind, Store};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup};

store_suite!(deny_list_round_trip, deny_list_since_watermark,);

async fn deny_list_round_trip(store: Store) {
    setup(&store).await;
    let n = now();
    store
        .deny_jwt(DenylistKind::Jti, "j1", n + secs(3600))
        .await
        .expect("deny");
    store
        .deny_jwt(DenylistKind::Sid, "s1", n + secs(3600))
        .await
        .expect("deny");
    store
        .deny_jwt(DenylistKind::Jti, "old", n - secs(1))
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
        .deny_jwt(DenylistKind::Jti, "old", n + secs(60))
        .await
        .expect("extend");
    store
        .deny_jwt(DenylistKind::Jti, "old", n - secs(60))
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

async fn deny_list_since_watermark(store: Store) {
    setup(&store).await;
    let t0 = now() - secs(1);
    store
        .deny_jwt(DenylistKind::Jti, "j1", t0 + secs(3600))
        .await
        .expect("deny");
    store
        .deny_jwt(DenylistKind::Sid, "s1", t0 + secs(7200))
        .await
        .expect("deny");
    store
        .deny_jwt(DenylistKind::Jti, "gone", t0 - secs(5))
        .await
        .expect("deny");
    let all = store
        .jwt_denied_since(&DenyKeyset::after(t0), now(), 1000)
        .await
        .expect("since");
    let got: Vec<_> = all.iter().map(|e| (e.kind, e.value.as_str())).collect();
    assert_eq!(
        got,
        vec![(DenylistKind::Jti, "j1"), (DenylistKind::Sid, "s1")]
    );
    assert_eq!(all[1].expires_at, t0 + secs(7200));
    assert!(all[0].changed_at <= all[1].changed_at);
    let wm = all[1].changed_at;
    assert!(
        store
            .jwt_denied_since(&DenyKeyset::after(wm), now(), 1000)
            .await
            .expect("q")
            .is_empty()
    );
    // A shorter expiry changes nothing; a longer one is seen again.
    store
        .deny_jwt(DenylistKind::Jti, "j1", t0 + secs(60))
        .await
        .expect("shorter");
    assert!(
        store
            .jwt_denied_since(&DenyKeyset::after(wm), now(), 1000)
            .await
            .expect("q")
            .is_empty()
    );
    store
        .deny_jwt(DenylistKind::Jti, "j1", t0 + secs(9000))
        .await
        .expect("longer");
    let again = store
        .jwt_denied_since(&DenyKeyset::after(wm), now(), 1000)
        .await
        .expect("q");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].value.as_str(), again[0].expires_at),
        ("j1", t0 + secs(9000))
    );
    // Entries expired at `now` are not returned.
    assert!(
        store
            .jwt_denied_since(&DenyKeyset::after(t0 - secs(10)), t0 + secs(9001), 1000)
            .await
            .expect("q")
            .is_empty()
    );
}
