//! Token ownership on SQLite and Postgres: the owner is (issuer, `sub`),
//! and rows from before migration 4 belong to nobody until claimed.

use portcullis::store::{Store, StoreError, TokenRecord};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};

store_suite!(
    item6_owner_is_issuer_and_sub,
    item6_unowned_rows_match_nobody_until_claimed,
);

const A: &str = "https://idp.example";

const B: &str = "https://other-idp.example";

/// The same `sub` at two issuers is two users, in every
/// owner-scoped call (list, count, revoke all, rotate).
async fn item6_owner_is_issuer_and_sub(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, a) = token("same-sub", secs(3600));
    let (_, mut b) = token("same-sub", secs(3600));
    b.user_issuer = B.into();
    for t in [&a, &b] {
        store.insert(t.clone()).await.expect("insert");
    }
    let ids = |v: Vec<TokenRecord>| v.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_for_user(A, "same-sub").await.expect("list")),
        vec![a.id]
    );
    assert_eq!(
        ids(store.list_for_user(B, "same-sub").await.expect("list")),
        vec![b.id]
    );
    assert_eq!(
        store.count_active(B, "same-sub", n).await.expect("count"),
        1
    );
    assert_eq!(
        store.get(b.id).await.expect("get").expect("b").user_issuer,
        B
    );
    // B's owner cannot rotate A's token.
    let (_, mut succ) = token("same-sub", secs(3600));
    succ.user_issuer = B.into();
    assert_eq!(store.rotate(a.id, succ, n).await, Err(StoreError::NotFound));
    // Revoking all of B's tokens leaves A's alone.
    assert_eq!(
        ids(store
            .revoke_all_for_user(B, "same-sub", n)
            .await
            .expect("revoke")),
        vec![b.id]
    );
    assert!(
        store
            .get(a.id)
            .await
            .expect("get")
            .expect("a")
            .revoked_at
            .is_none()
    );
}

/// Rows without an owner issuer (pre-0004) belong to nobody
/// until `claim_unowned` gives them to the one configured issuer.
async fn item6_unowned_rows_match_nobody_until_claimed(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, mut legacy) = token("u1", secs(3600));
    legacy.user_issuer = String::new();
    let (_, other) = token("u1", secs(3600));
    store.insert(legacy.clone()).await.expect("insert");
    store.insert(other.clone()).await.expect("insert");
    assert_eq!(store.list_for_user(A, "u1").await.expect("list").len(), 1);
    assert_eq!(store.count_active(A, "u1", n).await.expect("count"), 1);
    assert_eq!(store.claim_unowned(A).await.expect("claim"), 1);
    assert_eq!(store.claim_unowned(B).await.expect("claim again"), 0);
    let list = store.list_for_user(A, "u1").await.expect("list");
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|r| r.user_issuer == A));
}
