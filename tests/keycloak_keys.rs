//! The real Keycloak 26: key rotation through its admin REST API.
//!
//! One test, run alone in this binary: it changes the realm's keys, which
//! the metrics assertions (process-wide registry) rely on.

use portcullis_testkit::check::{Req, allowed, check, code, denied, serve_yaml, wait_ready};
use portcullis_testkit::real_keycloak::{POLL, READY, RealKeycloak, header};
use portcullis_testkit::wait::eventually_every;
use serde_json::{Value, json};

fn config(kc: &RealKeycloak) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256]
    refresh_interval: 1s
    refetch_min_interval: 1s
    unknown_kid_wait: 5s
    fetch_timeout: 5s
    scopes:
      from: ["realm_roles"]
      map:
        uploads-reader: ["uploads:read"]
policy:
  default: authenticated
"#,
        iss = kc.issuer()
    )
}

async fn serve(kc: &RealKeycloak) -> (portcullis::server::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&config(kc), dir.path(), false).await;
    wait_ready(&srv, READY).await;
    (srv, dir)
}

/// `portcullis_jwks_fetches_total{issuer=…,outcome="ok"}` from /metrics.
async fn jwks_fetches(srv: &portcullis::server::Running, issuer: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", srv.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("portcullis_jwks_fetches_total{"))
        .filter(|l| l.contains(&format!("issuer=\"{issuer}\"")) && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn realm_id(kc: &RealKeycloak) -> String {
    let (st, v) = kc.admin(reqwest::Method::GET, "", None).await;
    assert_eq!(st, 200, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The realm's RSA signing key providers (components).
async fn rsa_providers(kc: &RealKeycloak) -> Vec<Value> {
    let (st, v) = kc
        .admin(
            reqwest::Method::GET,
            "/components?type=org.keycloak.keys.KeyProvider",
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["providerId"] == "rsa-generated")
        .cloned()
        .collect()
}

async fn set_provider(kc: &RealKeycloak, mut comp: Value, active: &str, enabled: &str) {
    comp["config"]["active"] = json!([active]);
    comp["config"]["enabled"] = json!([enabled]);
    let id = comp["id"].as_str().unwrap().to_owned();
    let (st, v) = kc
        .admin(
            reqwest::Method::PUT,
            &format!("/components/{id}"),
            Some(comp),
        )
        .await;
    assert!((200..300).contains(&st), "update provider: {st} {v}");
}

#[tokio::test]
async fn key_rotation_new_passive_and_removed_keys() {
    let kc = RealKeycloak::get().await;
    let (srv, _d) = serve(&kc).await;
    let iss = kc.issuer();

    // A token of the current key, verified (and cached) once.
    let old = kc.login("alice", "openid").await.access_token;
    let old_kid = header(&old)["kid"].as_str().unwrap().to_owned();
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&old)).await);

    // 1. A new provider with a higher priority: new tokens carry its kid.
    let before = rsa_providers(&kc).await;
    let max_priority = before
        .iter()
        .filter_map(|c| c["config"]["priority"][0].as_str()?.parse::<i64>().ok())
        .max()
        .unwrap_or(0);
    let name = format!("rsa-rotated-{}", std::process::id());
    let (st, v) = kc
        .admin(
            reqwest::Method::POST,
            "/components",
            Some(json!({
                "name": name,
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id(&kc).await,
                "config": {
                    "priority": [(max_priority + 100).to_string()],
                    "enabled": ["true"], "active": ["true"],
                    "keySize": ["2048"], "algorithm": ["RS256"],
                },
            })),
        )
        .await;
    assert_eq!(st, 201, "create key provider: {v}");
    let new = kc.login("alice", "openid").await.access_token;
    let new_kid = header(&new)["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid, "Keycloak signs with the new key");

    // Accepted through one refetch (the periodic refresh may add its own;
    // what matters is that the unknown kid did not cause a storm).
    let fetches = jwks_fetches(&srv, &iss).await;
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&new)).await);
    for _ in 0..20 {
        allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&new)).await);
    }
    let after = jwks_fetches(&srv, &iss).await;
    assert!(
        after - fetches <= 3,
        "21 checks of a new kid made {} JWKS fetches",
        after - fetches
    );

    // 2. The old key passive: still published, so its tokens still verify,
    // also on a replica that never saw them.
    for comp in before
        .iter()
        .filter(|c| c["config"]["active"][0] != "false")
    {
        set_provider(&kc, comp.clone(), "false", "true").await;
    }
    let (fresh, _d2) = serve(&kc).await;
    allowed(&check(fresh.grpc_addr, &Req::get("/x").bearer(&old)).await);
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&old)).await);

    // 3. The old provider disabled: its key leaves the JWKS, and after the
    // next key refresh its tokens are refused, cached verification or not.
    for comp in &before {
        set_provider(&kc, comp.clone(), "false", "false").await;
    }
    let what = "a token of a removed key refused (1 s refreshes)";
    eventually_every(READY, POLL, what, async || {
        let r = check(srv.grpc_addr, &Req::get("/x").bearer(&old)).await;
        if code(&r) != 0 { Ok(()) } else { Err(r) }
    })
    .await;
    let d = denied(&check(srv.grpc_addr, &Req::get("/x").bearer(&old)).await);
    assert_eq!((d.code, d.http), (16, 401), "{d:?}");
    let (third, _d3) = serve(&kc).await;
    let d = denied(&check(third.grpc_addr, &Req::get("/x").bearer(&old)).await);
    assert_eq!((d.code, d.http), (16, 401), "{d:?}");
    // The new key's tokens are unaffected.
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&new)).await);

    restore_keys(&kc, &before, &name).await;
}

/// Puts the realm's keys back as they were: the other tests share this
/// Keycloak. (Left with its original providers disabled, Keycloak 26.5
/// stopped sending back-channel logout tokens at all.)
async fn restore_keys(kc: &RealKeycloak, before: &[Value], added: &str) {
    for comp in before {
        let active = comp["config"]["active"][0].as_str().unwrap_or("true");
        let enabled = comp["config"]["enabled"][0].as_str().unwrap_or("true");
        set_provider(kc, comp.clone(), active, enabled).await;
    }
    for comp in rsa_providers(kc).await {
        if comp["name"] == added {
            let id = comp["id"].as_str().unwrap();
            let (st, v) = kc
                .admin(reqwest::Method::DELETE, &format!("/components/{id}"), None)
                .await;
            assert!((200..300).contains(&st), "delete provider: {st} {v}");
        }
    }
}
