//! A PAT rotating itself cannot outlive its rotation chain: every successor
//! expires at the latest `pat.max_lifetime_days` after the chain's first
//! token was created (otherwise rotation makes a PAT live forever).

use chrono::{DateTime, TimeDelta, Utc};
use portcullis::server::Running;
use portcullis_testkit::api::{Api, dev_login};
use portcullis_testkit::check::serve_yaml;
use portcullis_testkit::store_suite;
use serde_json::json;

const YAML: &str = "policy:\n  default: authenticated\npat:\n  max_lifetime_days: 365\n";

/// A PAT of `alice` created `age_days` ago, expiring in `left_days`
/// (straight into the store, as if it had lived that long).
async fn aged_pat(srv: &Running, age_days: i64, left_days: i64) -> (String, String, DateTime<Utc>) {
    let (raw, mut row) = store_suite::token("alice", TimeDelta::days(1));
    row.created_at = store_suite::now() - TimeDelta::days(age_days);
    row.expires_at = store_suite::now() + TimeDelta::days(left_days);
    row.scopes = vec!["api:read".into()];
    // The dev issuer's user, so a dev login owns it.
    row.user_issuer = srv
        .engine
        .load()
        .verifier()
        .issuer_names()
        .next()
        .unwrap()
        .to_owned();
    let store = srv.engine.load().pats().store().clone();
    let rec = store.insert(row).await.expect("insert PAT");
    srv.revoker.announce_created(&rec).await;
    (rec.id.to_string(), raw, rec.created_at)
}

fn expiry(v: &serde_json::Value) -> DateTime<Utc> {
    v["expires_at"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn self_rotation_never_extends_the_chain_past_its_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let (id, raw, origin) = aged_pat(&srv, 360, 5).await;
    let cap = origin + TimeDelta::days(365);

    // Same lifetime as the old token (365 days) would end past the cap.
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &raw, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(expiry(&r.body) <= cap, "{} > {cap}", r.body["expires_at"]);
    let (id2, raw2) = (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["token"].as_str().unwrap().to_owned(),
    );

    // The successor rotating itself is still bound by the first token.
    let r = api
        .post(&format!("/api/v1/tokens/{id2}/rotate"), &raw2, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(expiry(&r.body) <= cap, "{} > {cap}", r.body["expires_at"]);
    let raw3 = r.body["token"].as_str().unwrap().to_owned();
    let id3 = r.body["id"].as_str().unwrap().to_owned();

    // Asking for more than the chain has left is refused, naming the rule.
    api.post(
        &format!("/api/v1/tokens/{id3}/rotate"),
        &raw3,
        json!({"expires_in_days": 30}),
    )
    .await
    .assert_error(400, "invalid_request", "pat.max_lifetime_days");
}

#[tokio::test]
async fn a_login_rotating_a_token_starts_from_now() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let login = dev_login(dir.path(), "alice", "tokens:manage api:read");
    let (id, _raw, origin) = aged_pat(&srv, 360, 5).await;
    // The owner, re-authenticated, could create a new token anyway.
    let r = api
        .post(
            &format!("/api/v1/tokens/{id}/rotate"),
            &login,
            json!({"expires_in_days": 30}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(expiry(&r.body) > origin + TimeDelta::days(365));
}

#[tokio::test]
async fn a_chain_already_past_its_lifetime_cannot_rotate_itself() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    // Rotated into before the rule existed: still valid, chain too old.
    let (id, raw, _) = aged_pat(&srv, 400, 5).await;
    api.post(&format!("/api/v1/tokens/{id}/rotate"), &raw, json!({}))
        .await
        .assert_error(409, "conflict", "pat.max_lifetime_days");
}
