//! Token rows on SQLite and Postgres: migrations, insert and lookups,
//! uniqueness, listing and counting, revocation (one, all of a user, a
//! rotation chain, since a watermark), rotation, last-used batches.

use portcullis::store::{HashAt, NewToken, PatKeyset, Store, StoreError, TokenKind};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use uuid::Uuid;

store_suite!(
    migrate_idempotent,
    insert_and_find,
    unique_conflicts,
    list_and_count_active,
    revoke_idempotent,
    revoke_all_for_user,
    rotate_is_one_transaction,
    revoke_chain_both_directions,
    touch_last_used_batch,
    revoked_since_ordering,
);

async fn migrate_idempotent(store: Store) {
    assert_eq!(
        store.migrate().await.expect("first"),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    );
    assert_eq!(store.migrate().await.expect("second"), Vec::<u32>::new());
    assert_eq!(store.migrate().await.expect("third"), Vec::<u32>::new());
    store.ping().await.expect("ping");
}

async fn insert_and_find(store: Store) {
    setup(&store).await;
    let (_, t) = token("u1", secs(3600));
    let rec = store.insert(t.clone()).await.expect("insert");
    assert_eq!(
        (rec.id, &rec.name, &rec.scopes, rec.expires_at),
        (t.id, &t.name, &t.scopes, t.expires_at)
    );
    assert_eq!(
        (rec.last_used_at, rec.revoked_at, rec.kind),
        (None, None, TokenKind::Opaque)
    );
    assert_eq!(
        store.find_by_hash(&t.token_hash).await.expect("find"),
        Some(rec.clone())
    );
    assert_eq!(store.get(t.id).await.expect("get"), Some(rec.clone()));
    assert_eq!(store.find_by_hash(&[7; 32]).await.expect("find"), None);
    assert_eq!(store.get(Uuid::new_v4()).await.expect("get"), None);
    let (_, mut j) = token("u1", secs(3600));
    j.kind = TokenKind::Jwt;
    j.jti = Some("jti-1".into());
    j.description = None;
    let jrec = store.insert(j).await.expect("insert jwt");
    assert_eq!(store.find_by_jti("jti-1").await.expect("jti"), Some(jrec));
    assert_eq!(store.find_by_jti("nope").await.expect("jti"), None);
}

async fn unique_conflicts(store: Store) {
    setup(&store).await;
    let (_, t) = token("u1", secs(3600));
    store.insert(t.clone()).await.expect("insert");
    let dup = NewToken {
        id: Uuid::new_v4(),
        ..t.clone()
    };
    let err = store.insert(dup).await.expect_err("duplicate hash");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let (_, mut a) = token("u1", secs(3600));
    a.jti = Some("same".into());
    let (_, mut b) = token("u1", secs(3600));
    b.jti = Some("same".into());
    store.insert(a).await.expect("insert a");
    assert!(matches!(
        store.insert(b).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn list_and_count_active(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, active) = token("u1", secs(3600));
    let (_, mut expired) = token("u1", secs(-1));
    expired.created_at = n - secs(10);
    let (_, revoked) = token("u1", secs(3600));
    let (_, other) = token("u2", secs(3600));
    for t in [&active, &expired, &revoked, &other] {
        store.insert(t.clone()).await.expect("insert");
    }
    store.revoke(revoked.id, n).await.expect("revoke");
    assert_eq!(
        store
            .count_active("https://idp.example", "u1", n)
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        store
            .count_active("https://idp.example", "u2", n)
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        store
            .count_active("https://idp.example", "nobody", n)
            .await
            .expect("count"),
        0
    );
    let list = store
        .list_for_user("https://idp.example", "u1")
        .await
        .expect("list");
    assert_eq!(list.len(), 3);
    assert!(
        list.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "newest first"
    );
    assert!(list.iter().all(|r| r.user_id == "u1"));
    assert_eq!(list.iter().filter(|r| r.is_active(n)).count(), 1);
}

async fn revoke_idempotent(store: Store) {
    setup(&store).await;
    let (_, t) = token("u1", secs(3600));
    store.insert(t.clone()).await.expect("insert");
    let t1 = now();
    let r1 = store
        .revoke(t.id, t1)
        .await
        .expect("revoke")
        .expect("found");
    assert_eq!(r1.revoked_at, Some(t1));
    assert_eq!(r1.token_hash, t.token_hash, "hash returned for eviction");
    let r2 = store
        .revoke(t.id, t1 + secs(60))
        .await
        .expect("again")
        .expect("found");
    assert_eq!(r2.revoked_at, Some(t1), "first revocation time kept");
    assert_eq!(
        store.revoke(Uuid::new_v4(), t1).await.expect("unknown"),
        None
    );
}

async fn revoke_all_for_user(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, a) = token("u1", secs(3600));
    let (_, b) = token("u1", secs(3600));
    let (_, c) = token("u2", secs(3600));
    for t in [&a, &b, &c] {
        store.insert(t.clone()).await.expect("insert");
    }
    store.revoke(a.id, n - secs(5)).await.expect("revoke");
    let done = store
        .revoke_all_for_user("https://idp.example", "u1", n)
        .await
        .expect("revoke all");
    assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b.id]);
    assert!(
        store
            .revoke_all_for_user("https://idp.example", "u1", n)
            .await
            .expect("again")
            .is_empty()
    );
    assert_eq!(
        store
            .count_active("https://idp.example", "u1", n)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        store
            .count_active("https://idp.example", "u2", n)
            .await
            .expect("count"),
        1
    );
    let a_now = store.get(a.id).await.expect("get").expect("a");
    assert_eq!(a_now.revoked_at, Some(n - secs(5)));
}

async fn rotate_is_one_transaction(store: Store) {
    setup(&store).await;
    let n = now();
    let (_, old) = token("u1", secs(3600));
    store.insert(old.clone()).await.expect("insert");
    let (_, new) = token("u1", secs(7200));
    let rec = store.rotate(old.id, new.clone(), n).await.expect("rotate");
    assert_eq!(rec.rotated_from, Some(old.id));
    assert_eq!(rec.id, new.id);
    let old_now = store.get(old.id).await.expect("get").expect("old");
    assert_eq!(old_now.revoked_at, Some(n));
    // Rotating a revoked token is a conflict, and inserts nothing.
    let (_, again) = token("u1", secs(60));
    assert!(matches!(
        store.rotate(old.id, again.clone(), n).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get(again.id).await.expect("get"), None);
    // Unknown / other user's token: NotFound.
    assert_eq!(
        store.rotate(Uuid::new_v4(), again.clone(), n).await,
        Err(StoreError::NotFound)
    );
    let (_, theirs) = token("u2", secs(60));
    assert_eq!(
        store.rotate(new.id, theirs, n).await,
        Err(StoreError::NotFound)
    );
    // Insert fails (hash collision) → the revocation is rolled back.
    let collide = NewToken {
        id: Uuid::new_v4(),
        ..new.clone()
    };
    assert!(matches!(
        store.rotate(new.id, collide, n).await,
        Err(StoreError::Conflict(_))
    ));
    let still = store.get(new.id).await.expect("get").expect("new");
    assert_eq!(still.revoked_at, None, "rotation must be atomic");
}

async fn revoke_chain_both_directions(store: Store) {
    setup(&store).await;
    let n = now();
    // a <- b <- c, and b <- e (branch); d unrelated.
    let (_, a) = token("u1", secs(3600));
    let (_, mut b) = token("u1", secs(3600));
    let (_, mut c) = token("u1", secs(3600));
    let (_, mut e) = token("u1", secs(3600));
    let (_, d) = token("u1", secs(3600));
    b.rotated_from = Some(a.id);
    c.rotated_from = Some(b.id);
    e.rotated_from = Some(b.id);
    for t in [&a, &b, &c, &d, &e] {
        store.insert(t.clone()).await.expect("insert");
    }
    store.revoke(a.id, n - secs(9)).await.expect("revoke a");
    let chain = store.revoke_chain(c.id, n).await.expect("chain");
    let mut ids: Vec<Uuid> = chain.iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![a.id, b.id, c.id, e.id];
    want.sort();
    assert_eq!(ids, want);
    for r in &chain {
        let expect = if r.id == a.id { n - secs(9) } else { n };
        assert_eq!(r.revoked_at, Some(expect), "{:?}", r.id);
    }
    assert_eq!(
        store.get(d.id).await.expect("get").expect("d").revoked_at,
        None
    );
    assert!(
        store
            .revoke_chain(Uuid::new_v4(), n)
            .await
            .expect("unknown")
            .is_empty()
    );
}

async fn touch_last_used_batch(store: Store) {
    setup(&store).await;
    let (_, a) = token("u1", secs(3600));
    let (_, b) = token("u1", secs(3600));
    store.insert(a.clone()).await.expect("insert");
    store.insert(b.clone()).await.expect("insert");
    let (t1, t2) = (now(), now() + secs(30));
    let q0 = store.query_count();
    let n = store
        .touch_last_used(&[(a.id, t1), (b.id, t2), (a.id, t2), (Uuid::new_v4(), t2)])
        .await
        .expect("touch");
    assert_eq!(store.query_count() - q0, 1, "one statement per batch");
    assert_eq!(n, 2);
    assert_eq!(
        store.get(a.id).await.expect("get").expect("a").last_used_at,
        Some(t2)
    );
    assert_eq!(
        store.get(b.id).await.expect("get").expect("b").last_used_at,
        Some(t2)
    );
    // Only forward.
    assert_eq!(
        store.touch_last_used(&[(a.id, t1)]).await.expect("touch"),
        0
    );
    assert_eq!(
        store.get(a.id).await.expect("get").expect("a").last_used_at,
        Some(t2)
    );
    assert_eq!(store.touch_last_used(&[]).await.expect("empty"), 0);
}

async fn revoked_since_ordering(store: Store) {
    setup(&store).await;
    let t0 = now();
    let (_, a) = token("u1", secs(3600));
    let (_, b) = token("u1", secs(3600));
    let (_, c) = token("u2", secs(3600));
    let (_, d) = token("u2", secs(3600));
    for t in [&a, &b, &c, &d] {
        store.insert(t.clone()).await.expect("insert");
    }
    store.revoke(a.id, t0 + secs(3)).await.expect("revoke");
    store.revoke(b.id, t0 + secs(1)).await.expect("revoke");
    store.revoke(c.id, t0 + secs(2)).await.expect("revoke");
    let all = store
        .revoked_since(&PatKeyset::after(t0), 1000)
        .await
        .expect("since");
    let at = |t: &NewToken, s| HashAt {
        id: t.id,
        hash: t.token_hash,
        at: t0 + secs(s),
    };
    assert_eq!(all, vec![at(&b, 1), at(&c, 2), at(&a, 3)]);
    // Pages resume strictly after the last row's (revoked_at, id).
    let first = store
        .revoked_since(&PatKeyset::after(t0), 2)
        .await
        .expect("page");
    assert_eq!(first, vec![at(&b, 1), at(&c, 2)]);
    let rest = store
        .revoked_since(&first[1].keyset(), 2)
        .await
        .expect("page");
    assert_eq!(rest, vec![at(&a, 3)]);
    let later = store
        .revoked_since(&PatKeyset::after(t0 + secs(1)), 1000)
        .await
        .expect("since");
    assert_eq!(
        later.iter().map(|x| x.hash).collect::<Vec<_>>(),
        vec![c.token_hash, a.token_hash]
    );
    assert!(
        store
            .revoked_since(&PatKeyset::after(t0 + secs(3)), 1000)
            .await
            .expect("since")
            .is_empty()
    );
}
