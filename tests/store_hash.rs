//! Token hashes on SQLite and Postgres: HMAC with `pat.hash_key`, legacy
//! SHA-256 rows refused until `token rekey` moves them, planted rows refused.

use portcullis::pat::{self, CreateRequest, PatConfig, PatRejection, PatValidator, format};
use portcullis::store::{HashVersion, Store};
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};

store_suite!(
    item12_planted_sha256_row_does_not_authenticate_with_a_key,
    item12_legacy_sha256_row_is_refused_with_a_key_until_rekeyed,
    item12_planted_version_1_row_is_refused_with_a_key,
    item12_new_tokens_are_stored_as_hmac,
);

const KEY: &str = "0123456789abcdef0123456789abcdef-test-pepper";

fn keyed() -> PatConfig {
    PatConfig {
        hash_key: Some(KEY.into()),
        ..PatConfig::default()
    }
}

async fn item12_planted_sha256_row_does_not_authenticate_with_a_key(store: Store) {
    setup(&store).await;
    // An attacker with write access to the database, but not the key,
    // plants a row for a token they made up, hashed as they can.
    let (raw, mut t) = token("mallory", secs(3600));
    t.hash_version = HashVersion::Hmac;
    store.insert(t).await.expect("plant");
    let v = PatValidator::new(store.clone(), &keyed());
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Unknown)));
}

async fn item12_legacy_sha256_row_is_refused_with_a_key_until_rekeyed(store: Store) {
    setup(&store).await;
    // A row from before migration 0003 (version 1, bare SHA-256).
    let (raw, t) = token("lena", secs(3600));
    assert_eq!(t.hash_version, HashVersion::Sha256);
    let id = store.insert(t).await.expect("insert").id;
    let v = PatValidator::new(store.clone(), &keyed());
    // With a key the server cannot tell it from a planted row: refused.
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Unknown)));
    // The operator's one-shot `portcullis token rekey` moves it, token-less.
    assert_eq!(pat::hasher::rekey_legacy(&store, v.hasher()).await, Ok(1));
    assert_eq!(pat::hasher::rekey_legacy(&store, v.hasher()).await, Ok(0));
    let (hmac, version) = v.hasher().primary(&raw);
    assert_eq!(version, HashVersion::Hmac);
    let up = store
        .find_by_hash(&hmac)
        .await
        .expect("find")
        .expect("re-hashed");
    assert_eq!((up.id, up.hash_version), (id, HashVersion::Hmac));
    assert_eq!(store.find_by_hash(&format::hash(&raw)).await, Ok(None));
    // A fresh replica (empty cache) finds it; revocation works.
    let v2 = PatValidator::new(store.clone(), &keyed());
    assert!(matches!(v2.validate(&raw).await, Ok(Ok(_))));
    store.revoke(id, now()).await.expect("revoke");
    let v3 = PatValidator::new(store.clone(), &keyed());
    assert_eq!(v3.validate(&raw).await, Ok(Err(PatRejection::Revoked)));
}

async fn item12_planted_version_1_row_is_refused_with_a_key(store: Store) {
    setup(&store).await;
    // Planted after the key was set (and after `rekey`), as version 1: the
    // column's default, and the one hash an attacker can compute.
    let (raw, t) = token("mallory", secs(3600));
    store.insert(t).await.expect("plant");
    let v = PatValidator::new(store.clone(), &keyed());
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Unknown)));
    // Nothing moves it on its own, however often the server asks.
    assert_eq!(v.validate(&raw).await, Ok(Err(PatRejection::Unknown)));
    assert_eq!(
        store
            .find_by_hash(&format::hash(&raw))
            .await
            .map(|r| r.map(|r| r.hash_version)),
        Ok(Some(HashVersion::Sha256))
    );
}

async fn item12_new_tokens_are_stored_as_hmac(store: Store) {
    setup(&store).await;
    let req = CreateRequest {
        user_id: "hana".into(),
        user_issuer: "https://idp.example".into(),
        username: "hana".into(),
        name: "ci".into(),
        description: None,
        scopes: vec!["a:read".into()],
        expires_at: None,
        rotated_from: None,
    };
    let (raw, rec) = pat::create(&store, &keyed(), req, now())
        .await
        .expect("create");
    assert_eq!(rec.hash_version, HashVersion::Hmac);
    assert_ne!(rec.token_hash, format::hash(&raw));
    let v = PatValidator::new(store.clone(), &keyed());
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));
    // Without the key the stored value cannot be matched.
    let unkeyed = PatValidator::new(store.clone(), &PatConfig::default());
    assert_eq!(unkeyed.validate(&raw).await, Ok(Err(PatRejection::Unknown)));
}
