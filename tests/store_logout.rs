//! Back-channel logout marks on SQLite and Postgres: upsert keeping the
//! later `not_before`/`expires_at`, reading changes since a watermark, the
//! per-token lookup, and purge.

use chrono::{DateTime, Utc};
use portcullis::store::{LogoutKeyset, LogoutKind, LogoutMark, Store};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup};

store_suite!(logout_marks_upsert_and_lookup, logout_marks_since_watermark,);

const ISS: &str = "https://kc.example.org/realms/main";

fn mark(kind: LogoutKind, value: &str, nbf: DateTime<Utc>, exp: DateTime<Utc>) -> LogoutMark {
    LogoutMark {
        issuer: ISS.into(),
        kind,
        value: value.into(),
        not_before: nbf,
        expires_at: exp,
        changed_at: now(),
    }
}

async fn logout_marks_upsert_and_lookup(store: Store) {
    setup(&store).await;
    let n = now();
    store
        .mark_logout(&mark(LogoutKind::Sid, "s1", n, n + secs(3600)))
        .await
        .expect("sid mark");
    store
        .mark_logout(&mark(LogoutKind::Sub, "u1", n, n + secs(3600)))
        .await
        .expect("sub mark");
    let got = store
        .logout_marks_for(ISS, Some("s1"), "u1", n)
        .await
        .expect("lookup");
    assert_eq!(got.len(), 2, "{got:?}");
    let other_iss = store
        .logout_marks_for("https://other", Some("s1"), "u1", n)
        .await
        .expect("lookup");
    assert!(other_iss.is_empty(), "marks are per issuer");
    let kinds_differ = store
        .logout_marks_for(ISS, Some("u1"), "s1", n)
        .await
        .expect("lookup");
    assert!(kinds_differ.is_empty(), "a sid value is not a sub");
    // A later not_before wins; an earlier one changes nothing.
    store
        .mark_logout(&mark(LogoutKind::Sub, "u1", n + secs(10), n + secs(60)))
        .await
        .expect("later");
    store
        .mark_logout(&mark(LogoutKind::Sub, "u1", n - secs(10), n + secs(60)))
        .await
        .expect("earlier");
    let sub = store
        .logout_marks_for(ISS, None, "u1", n)
        .await
        .expect("lookup");
    assert_eq!(
        (sub[0].not_before, sub[0].expires_at),
        (n + secs(10), n + secs(3600))
    );
    assert_eq!(
        store
            .purge_logout_marks(n + secs(3601))
            .await
            .expect("purge"),
        2
    );
    assert!(
        store
            .logout_marks_for(ISS, Some("s1"), "u1", n)
            .await
            .expect("lookup")
            .is_empty()
    );
}

async fn logout_marks_since_watermark(store: Store) {
    setup(&store).await;
    let t0 = now() - secs(1);
    store
        .mark_logout(&mark(LogoutKind::Sid, "s1", t0, t0 + secs(3600)))
        .await
        .expect("mark");
    store
        .mark_logout(&mark(LogoutKind::Sid, "gone", t0, t0 - secs(1)))
        .await
        .expect("mark");
    let all = store
        .logout_marks_since(&LogoutKeyset::after(t0), now(), 1000)
        .await
        .expect("since");
    assert_eq!(all.len(), 1, "expired marks are not returned: {all:?}");
    assert_eq!(
        (all[0].kind, all[0].value.as_str()),
        (LogoutKind::Sid, "s1")
    );
    let wm = all[0].changed_at;
    assert!(
        store
            .logout_marks_since(&LogoutKeyset::after(wm), now(), 1000)
            .await
            .expect("q")
            .is_empty()
    );
    // Extending the expiry moves the mark past the watermark.
    let mut later = mark(LogoutKind::Sid, "s1", t0, t0 + secs(7200));
    later.changed_at = wm + secs(1);
    store.mark_logout(&later).await.expect("extend");
    let again = store
        .logout_marks_since(&LogoutKeyset::after(wm), now(), 1000)
        .await
        .expect("q");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].expires_at, t0 + secs(7200));
}
