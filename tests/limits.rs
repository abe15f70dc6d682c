//! Floods: random PATs and many distinct tokens cannot grow memory without
//! bound or hammer the store; malformed PATs never reach it.

mod support;

use std::time::Duration;

use portcullis::dev::{DevIssuer, DevTokenSpec};
use support::check::{Req, allowed, assert_invalid_token, check};

const YAML: &str =
    "pat:\n  cache_capacity: 100\njwt:\n  cache_capacity: 50\npolicy:\n  default: authenticated\n";

#[tokio::test]
async fn random_pat_flood_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = support::check::serve_yaml(YAML, dir.path(), true).await;
    let engine = srv.engine.load_full();
    let lookups = || engine.pats.store().lookup_count();

    // Malformed (bad checksum): never reaches the store or the cache.
    let before = lookups();
    for _ in 0..500 {
        let mut t = portcullis::pat::format::generate("pat_");
        t.replace_range(4..5, if t.as_bytes()[4] == b'A' { "B" } else { "A" });
        let resp = engine
            .check(&portcullis::authz::request::RequestView::new(
                &Req::get("/").bearer(&t).build(),
            ))
            .await;
        assert!(matches!(resp, portcullis::authz::Decision::Deny(_)));
    }
    assert_eq!(
        lookups(),
        before,
        "malformed PATs must not cost a store query"
    );

    // Well-formed unknown ones: only the unknown-hash budget reaches the
    // store (issue 12 item 10), and the cache stays bounded.
    for _ in 0..1500 {
        let t = portcullis::pat::format::generate("pat_");
        let d = engine
            .check(&portcullis::authz::request::RequestView::new(
                &Req::get("/").bearer(&t).build(),
            ))
            .await;
        assert!(matches!(d, portcullis::authz::Decision::Deny(_)));
    }
    let used = lookups() - before;
    assert!(used < 150, "{used} store lookups for 1500 forged PATs");
    engine.pats.settle().await;
    let entries = engine.pats.cache_stats().entries;
    assert!(
        entries <= 100,
        "PAT cache holds {entries} entries, capacity 100"
    );

    // The same unknown token again and again: at most one lookup (none
    // when the flood above used up the budget).
    let t = portcullis::pat::format::generate("pat_");
    let before = lookups();
    for _ in 0..50 {
        assert_invalid_token(
            &check(srv.grpc_addr, &Req::get("/").bearer(&t)).await,
            "unknown token",
        );
    }
    assert!(lookups() - before <= 1);
}

#[tokio::test]
async fn verified_jwt_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = support::check::serve_yaml(YAML, dir.path(), true).await;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    for i in 0..300 {
        let t = dev
            .mint(&DevTokenSpec {
                sub: format!("user-{i}"),
                username: None,
                email: None,
                scopes: vec![],
                expires_in: Duration::from_secs(600),
                client: "web".into(),
            })
            .unwrap();
        allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&t)).await);
    }
    let cached = srv.engine.load().verifier.cached();
    assert!(cached <= 50, "JWT cache holds {cached}, capacity 50");
}
