//! Rotation chains on SQLite and Postgres: `chain_origin` follows
//! `rotated_from` back to the first token.

use chrono::TimeDelta;
use portcullis::store::Store;
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};

store_suite!(chain_origin_is_the_first_tokens_created_at,);

async fn chain_origin_is_the_first_tokens_created_at(store: Store) {
    setup(&store).await;
    let (_, mut first) = token("alice", TimeDelta::days(30));
    first.created_at = now() - secs(86_400 * 10);
    let first = store.insert(first).await.expect("insert");
    assert_eq!(
        store.chain_origin(first.id).await.expect("q"),
        Some(first.created_at)
    );
    let (_, second) = token("alice", TimeDelta::days(30));
    let second = store.rotate(first.id, second, now()).await.expect("rotate");
    let (_, third) = token("alice", TimeDelta::days(30));
    let third = store.rotate(second.id, third, now()).await.expect("rotate");
    assert_eq!(
        store.chain_origin(third.id).await.expect("q"),
        Some(first.created_at)
    );
    assert_eq!(
        store.chain_origin(uuid::Uuid::new_v4()).await.expect("q"),
        None
    );
}
