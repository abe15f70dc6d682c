//! Signed identity assertions over real gRPC and HTTP: a route with
//! `assertion.audience` gets `x-auth-assertion`, verifiable with the keys at
//! `/.well-known/jwks.json`, cached per identity, route and audience.

use std::time::Duration;

use portcullis_testkit::check::{Req, allowed, check, serve_yaml, wait_ready};
use portcullis_testkit::keycloak::FakeKeycloak;

async fn start(extra: &str) -> (FakeKeycloak, portcullis::server::Running, tempfile::TempDir) {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
issuers:
  - issuer: {}
    audiences: [portcullis]
policy:
  default: authenticated
  routes:
    - name: orders
      match: {{ path: {{ prefix: /orders }} }}
      assertion: {{ audience: orders-api }}
    - name: billing
      match: {{ path: {{ prefix: /billing }} }}
      assertion: {{ audience: billing-api }}
{extra}"#,
        kc.issuer()
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, Duration::from_secs(20)).await;
    (kc, srv, dir)
}

async fn verify(
    srv: &portcullis::server::Running,
    token: &str,
    alg: jsonwebtoken::Algorithm,
    audience: &str,
) -> serde_json::Value {
    let url = format!("http://{}/.well-known/jwks.json", srv.http_addr);
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[audience]);
    v.set_issuer(&["portcullis"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .expect("assertion verifies")
        .claims
}

#[tokio::test]
async fn route_gets_a_verifiable_cached_assertion() {
    let (kc, srv, _dir) = start("").await;
    let t = kc.token("user-1");
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/orders/1").bearer(&t)).await);
    let a1 = h["x-auth-assertion"].clone();
    let claims = verify(&srv, &a1, jsonwebtoken::Algorithm::ES256, "orders-api").await;
    assert_eq!(claims["sub"], "user-1");
    assert_eq!(claims["route"], "orders");
    assert_eq!(claims["auth_method"], "jwt");
    assert_eq!(claims["idp_iss"], kc.issuer());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((1..=300).contains(&lifetime), "{claims}");
    // Cached: the same assertion again, not a new signature.
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/orders/2").bearer(&t)).await);
    assert_eq!(h["x-auth-assertion"], a1);
    // Another route and audience: another assertion.
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/billing").bearer(&t)).await);
    let b = &h["x-auth-assertion"];
    assert_ne!(b, &a1);
    verify(&srv, b, jsonwebtoken::Algorithm::ES256, "billing-api").await;
}

#[tokio::test]
async fn routes_without_it_strip_a_spoofed_assertion() {
    let (kc, srv, _dir) = start("").await;
    let t = kc.token("user-1");
    let (h, removed) = allowed(
        &check(
            srv.grpc_addr,
            &Req::get("/other")
                .bearer(&t)
                .header("x-auth-assertion", "forged"),
        )
        .await,
    );
    assert!(!h.contains_key("x-auth-assertion"));
    assert_eq!(removed, ["x-auth-assertion"]);
    // Where it is set, the client's copy is replaced.
    let (h, removed) = allowed(
        &check(
            srv.grpc_addr,
            &Req::get("/orders")
                .bearer(&t)
                .header("x-auth-assertion", "forged"),
        )
        .await,
    );
    assert_ne!(h["x-auth-assertion"], "forged");
    assert!(removed.is_empty());
}

#[tokio::test]
async fn eddsa_key_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ed.pem");
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    std::fs::write(
        &key,
        pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec())),
    )
    .unwrap();
    let extra = format!(
        "assertion:\n  algorithm: EdDSA\n  key_file: {}\n  lifetime: 1m\n",
        key.display()
    );
    let (kc, srv, _d) = start(&extra).await;
    let t = kc.token("user-2");
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/orders").bearer(&t)).await);
    let claims = verify(
        &srv,
        &h["x-auth-assertion"],
        jsonwebtoken::Algorithm::EdDSA,
        "orders-api",
    )
    .await;
    assert_eq!(claims["sub"], "user-2");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime <= 60, "{claims}");
}

#[tokio::test]
async fn jwks_is_404_without_assertions() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml("policy:\n  default: authenticated\n", dir.path(), false).await;
    let url = format!("http://{}/.well-known/jwks.json", srv.http_addr);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
}
