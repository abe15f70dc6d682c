//! The real Keycloak 26 goes down and comes back.
//!
//! One test, run alone in this binary (cargo runs test binaries one after
//! another), because it kills the run's Keycloak process.

use jsonwebtoken::Algorithm;
use portcullis_testkit::check::{Req, allowed, check, denied, serve_yaml, wait_ready};
use portcullis_testkit::keycloak::FakeKeycloak;
use portcullis_testkit::real_keycloak::{POLL, READY, RealKeycloak, claims};
use portcullis_testkit::wait::eventually_every;

#[tokio::test]
async fn keycloak_down_known_keys_work_unknown_kid_is_503_then_recovers() {
    let kc = RealKeycloak::get().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256]
    refresh_interval: 1s
    refetch_min_interval: 1s
    unknown_kid_wait: 3s
    fetch_timeout: 1s
policy:
  default: authenticated
"#,
        iss = kc.issuer()
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, READY).await;

    // Two tokens: one verified before the outage, one first seen during it.
    let seen = kc.login("alice", "openid").await.access_token;
    let unseen = kc.login("bob", "openid").await.access_token;
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&seen)).await);

    kc.kill();
    assert!(
        reqwest::get(format!("{}/realms/example", kc.base))
            .await
            .is_err(),
        "Keycloak still answers after kill"
    );

    // Known keys keep working, cached or not.
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&seen)).await);
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&unseen)).await);

    // A token whose kid portcullis has never seen: the refetch fails, so
    // it cannot decide: 503, never an allow.
    let mut forged = claims(&seen);
    forged["jti"] = "forged-during-outage".into();
    let signer = FakeKeycloak::start().await;
    let unknown = signer.sign_with_unpublished_key(&forged, Algorithm::RS256);
    let d = denied(&check(srv.grpc_addr, &Req::get("/x").bearer(&unknown)).await);
    assert_eq!((d.code, d.http), (14, 503), "{d:?}");

    // Back up: portcullis recovers by itself. Fresh tokens verify, and a
    // kid it has not seen is looked up again (now found missing: 401).
    kc.restart().await;
    let fresh = kc.login("alice", "openid").await.access_token;
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&fresh)).await);
    let what = "unknown kid 401 (no longer 503) after Keycloak came back";
    eventually_every(READY, POLL, what, async || {
        let r = check(srv.grpc_addr, &Req::get("/x").bearer(&unknown)).await;
        if r.http_response.is_some() && denied(&r).http == 401 {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
}
