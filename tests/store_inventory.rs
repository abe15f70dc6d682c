//! The admin inventory's filters and cursor pages on SQLite and Postgres.

use chrono::{DateTime, Utc};
use portcullis::store::{Store, TokenQuery, TokenState};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use uuid::Uuid;

store_suite!(inventory_filters_and_pages);

const DAY: i64 = 86_400;

fn q(n: DateTime<Utc>) -> TokenQuery {
    TokenQuery {
        now: n,
        state: None,
        expiring_before: None,
        user_id: None,
        user_issuer: None,
        name_contains: None,
        last_used_before: None,
        after: None,
        limit: 100,
    }
}

async fn ids(store: &Store, q: TokenQuery) -> Vec<Uuid> {
    store
        .tokens(&q)
        .await
        .expect("inventory")
        .iter()
        .map(|r| r.id)
        .collect()
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

async fn inventory_filters_and_pages(store: Store) {
    setup(&store).await;
    let n = now();
    let mk = |user: &str, name: &str, life: i64| {
        let (_, mut t) = token(user, secs(life));
        t.name = name.into();
        t
    };
    let a = mk("alice", "CI deploy", 3 * DAY);
    let b = mk("alice", "backup", 30 * DAY);
    let c = mk("bob", "ci-nightly", -DAY);
    let d = mk("bob", "misc", 60 * DAY);
    for t in [&a, &b, &c, &d] {
        store.insert(t.clone()).await.expect("insert");
    }
    store.revoke(b.id, n).await.expect("revoke");
    store
        .touch_last_used(&[(d.id, n - secs(10 * DAY)), (a.id, n)])
        .await
        .expect("touch");

    let all = ids(&store, q(n)).await;
    assert_eq!(all.len(), 4);
    let st = |s| TokenQuery {
        state: Some(s),
        ..q(n)
    };
    assert_eq!(
        sorted(ids(&store, st(TokenState::Active)).await),
        sorted(vec![a.id, d.id])
    );
    assert_eq!(ids(&store, st(TokenState::Revoked)).await, [b.id]);
    assert_eq!(ids(&store, st(TokenState::Expired)).await, [c.id]);
    let soon = TokenQuery {
        expiring_before: Some(n + secs(7 * DAY)),
        ..q(n)
    };
    assert_eq!(
        ids(&store, soon).await,
        [a.id],
        "active and expiring within 7 days"
    );
    let alice = TokenQuery {
        user_id: Some("alice".into()),
        ..q(n)
    };
    assert_eq!(sorted(ids(&store, alice).await), sorted(vec![a.id, b.id]));
    let other_iss = TokenQuery {
        user_id: Some("alice".into()),
        user_issuer: Some("https://elsewhere.example".into()),
        ..q(n)
    };
    assert!(ids(&store, other_iss).await.is_empty());
    let ci = TokenQuery {
        name_contains: Some("ci".into()),
        ..q(n)
    };
    assert_eq!(
        sorted(ids(&store, ci).await),
        sorted(vec![a.id, c.id]),
        "case-insensitive"
    );
    let pct = TokenQuery {
        name_contains: Some("%".into()),
        ..q(n)
    };
    assert!(ids(&store, pct).await.is_empty(), "no LIKE wildcards");
    let stale = TokenQuery {
        last_used_before: Some(n - secs(5 * DAY)),
        ..q(n)
    };
    assert_eq!(
        ids(&store, stale).await,
        [d.id],
        "never-used tokens do not match"
    );
    let both = TokenQuery {
        state: Some(TokenState::Active),
        name_contains: Some("CI".into()),
        ..q(n)
    };
    assert_eq!(ids(&store, both).await, [a.id]);
    // Pages: newest first, no overlap, no gap.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .tokens(&TokenQuery {
                after,
                limit: 3,
                ..q(n)
            })
            .await
            .unwrap();
        seen.extend(page.iter().map(|r| r.id));
        if page.len() < 3 {
            break;
        }
        let last = page.last().unwrap();
        after = Some((last.created_at, last.id));
    }
    assert_eq!(seen, all);
}
