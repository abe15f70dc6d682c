//! Security regressions not covered by a topic's own test file: a planted
//! legacy (unkeyed SHA-256) row does not authenticate on a keyed server, a
//! rotation revokes a token whose row was upgraded meanwhile, and huge
//! durations (`revoke-jwt --until`, `pat.cache_ttl`) are refused instead of
//! overflowing. Each failed before its fix.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{TimeDelta, Utc};
use portcullis::config::{Config, MapEnv};
use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis::pat::{PatConfig, PatRejection, PatValidator, format};
use portcullis::revocation::Revoker;
use portcullis::store::{HashVersion, NewToken, Store, StoreConfig, TokenKind};
use portcullis::tokens::{ApiConfig, RotateInput, TokenService};
use portcullis_testkit::wrapped_store::WrappedStore;
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef-review-pepper";

fn legacy_row(raw: &str, issuer: &str, sub: &str, scopes: &[&str]) -> NewToken {
    let now = Utc::now();
    NewToken {
        id: Uuid::new_v4(),
        user_id: sub.into(),
        user_issuer: issuer.into(),
        username: sub.into(),
        name: "legacy".into(),
        description: None,
        token_hash: format::hash(raw),
        display_hint: format::display_hint("pat_", raw),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        created_at: now,
        expires_at: now + TimeDelta::days(3650),
        rotated_from: None,
        kind: TokenKind::Opaque,
        jti: None,
        hash_version: HashVersion::Sha256,
    }
}

async fn sqlite(dir: &std::path::Path) -> Store {
    let cfg = StoreConfig {
        timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, dir).await.expect("connect sqlite");
    store.migrate().await.expect("migrate");
    store
}

/// README (pat.hash_key): "with `pat.hash_key` set, write access to the
/// database alone cannot plant a usable token". A version-1 row (bare
/// SHA-256, the column's DEFAULT) used to be accepted as a legacy row and
/// upgraded on first use, whenever it was written, so an attacker with
/// database write access planted `sha256(a token they made up)` by simply
/// omitting `hash_version`. Now, with a key, only version-2 rows count;
/// legacy rows move once, by the operator's `portcullis token rekey`.
#[tokio::test]
async fn review_planted_legacy_sha256_row_does_not_authenticate_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let raw = format::generate("pat_");
    store
        .insert(legacy_row(&raw, "https://idp.example", "admin", &["*:*"]))
        .await
        .expect("plant");
    let keyed = PatConfig {
        hash_key: Some(KEY.into()),
        ..PatConfig::default()
    };
    let v = PatValidator::new(store.clone(), &keyed);
    let got = v.validate(&raw).await.expect("no store error");
    assert_eq!(
        got,
        Err(PatRejection::Unknown),
        "a token planted in the database without the key authenticated"
    );
}

/// Rotation announced the record it read *before* rotating. If the token
/// was a legacy (SHA-256) row and `token rekey` moved it to the HMAC hash in
/// between, and a Check then cached it, the announcement named the old
/// SHA-256 hash, while this replica's cache holds the token as valid under
/// the HMAC hash: the rotated-away token kept working here for up to
/// `pat.cache_ttl` (and on other replicas until their resync) after the
/// rotation answered 201.
#[tokio::test]
async fn review_rotation_revokes_a_token_upgraded_while_rotating() {
    let dir = tempfile::tempdir().unwrap();
    let dev =
        DevIssuer::load_or_create(dir.path(), "http://127.0.0.1:9/realms/dev".into()).unwrap();
    let mut cfg = Config::from_yaml_str("", &MapEnv::default()).unwrap();
    cfg.pat.hash_key = Some(KEY.into());
    let wrapped = WrappedStore::new(sqlite(dir.path()).await);
    let store = Store::from_backend(wrapped.clone(), Duration::from_secs(5));
    let pats = Arc::new(PatValidator::new(store.clone(), &cfg.pat));
    let engine = portcullis::authz::Engine::build(cfg.engine(), Some(&dev), pats.clone()).unwrap();
    let svc = TokenService::new(
        Arc::new(ArcSwap::from_pointee(engine)),
        Revoker::new(pats.clone()),
        cfg.pat.clone(),
        ApiConfig::default(),
        true,
    )
    .unwrap();

    // A PAT from before the key: a version-1 row, never used since.
    let raw = format::generate("pat_");
    let id = store
        .insert(legacy_row(&raw, dev.issuer(), "alice", &["a:read"]))
        .await
        .unwrap()
        .id;
    let login = dev
        .mint(&DevTokenSpec {
            sub: "alice".into(),
            username: Some("alice".into()),
            email: None,
            scopes: vec!["tokens:manage".into(), "a:read".into()],
            expires_in: Duration::from_secs(600),
            client: "web".into(),
        })
        .unwrap();
    let caller = svc.caller(Some(&format!("Bearer {login}"))).await.unwrap();

    // While the rotation is under way, the operator's rekey moves the row
    // to the HMAC hash and a Check caches the old token as valid.
    let (p, r, st) = (pats.clone(), raw.clone(), store.clone());
    wrapped.before_next_rotate(async move {
        let moved = portcullis::pat::hasher::rekey_legacy(&st, p.hasher()).await;
        assert_eq!(moved, Ok(1));
        assert!(matches!(p.validate(&r).await, Ok(Ok(_))));
    });
    let created = svc
        .rotate(&caller, &id.to_string(), RotateInput::default())
        .await
        .expect("rotate");
    assert_eq!(created.rotated_from, Some(id));

    assert_eq!(
        pats.validate(&raw).await,
        Ok(Err(PatRejection::Revoked)),
        "the rotated-away token still works on the replica that rotated it"
    );
}

/// `revoke-jwt --until` takes a duration from now; a huge one (it parses:
/// up to ~292 million years) overflowed `Utc::now() + d` and panicked
/// instead of naming the bad value (every date on input is checked).
#[test]
fn review_revoke_jwt_until_far_future_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "revoke-jwt",
            "--dev",
            "--sid",
            "s1",
            "--until",
            "100000000y",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("--until"), "{err}");
}

/// A `pat.cache_ttl` that `config check` accepts must not crash `serve`:
/// moka refuses (panics on) time-to-live values over 1000 years, and the
/// tombstone and reuse caches are built with `cache_ttl`.
#[tokio::test]
async fn review_huge_pat_cache_ttl_is_refused_by_config_check_not_a_panic() {
    let yaml = "pat:\n  cache_ttl: 1001years\n";
    let cfg = Config::from_yaml_str(yaml, &MapEnv::default()).expect("parses");
    let errs = cfg.validate().expect_err("refused by validation");
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|t| t.starts_with("pat.cache_ttl")),
        "{text:?}"
    );
}
