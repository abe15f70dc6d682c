//! PATs by token exchange against the real Keycloak 26: a user's login
//! becomes a long-lived, Keycloak-signed PAT through standard token exchange
//! (RFC 8693) at the shipped `portcullis-pat-issuer` client, registered by
//! hash, used through a real Envoy, revoked on one replica and refused on
//! another.

use std::time::Duration;

use portcullis::server::Running;
use portcullis_testkit::api::Api;
use portcullis_testkit::check::{Req, allowed, check, code, denied, serve_yaml, wait_ready};
use portcullis_testkit::echo::Echo;
use portcullis_testkit::envoy::Envoy;
use portcullis_testkit::pg::TempPostgres;
use portcullis_testkit::real_keycloak::{
    PASSWORD, POLL, READY, RealKeycloak, SHIPPED_SECRET, claims,
};
use portcullis_testkit::redis_server::TempRedis;
use portcullis_testkit::wait::eventually_every;
use serde_json::{Value, json};

/// portcullis as a deployment would run it: Postgres, Redis, the exchange
/// issuer. Users hold `tokens:manage` through the realm's default roles.
fn config(kc: &RealKeycloak, pg: &str, redis: &str, client: &str, secret: &str) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256]
    scopes:
      from: ["claim:scope", "realm_roles"]
      map:
        default-roles-example: ["tokens:manage"]
        uploads-reader: ["uploads:read"]
        uploads-writer: ["uploads:read", "uploads:write"]
store:
  kind: postgres
  url: {pg}
  timeout: 2s
revocation:
  kind: redis
  redis_url: {redis}
  resync_interval: 10m
pat:
  issuer: keycloak-exchange
  grantable_scopes: ["uploads:*"]
  max_lifetime_days: 365
  exchange:
    token_url: {token_url}
    client_id: {client}
    client_secret: {secret}
  jwt_marker: {{ claim: token_use, value: pat }}
policy:
  default: deny
  routes:
    - name: uploads-write
      match:
        methods: [POST, PUT, PATCH, DELETE]
        path: {{ prefix: /api/v1/uploads }}
      require: {{ all_of: ["uploads:write"] }}
    - name: uploads
      match: {{ path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:read"] }}
"#,
        iss = kc.issuer(),
        token_url = kc.token_url(),
    )
}

struct Cluster {
    kc: RealKeycloak,
    a: Running,
    b: Running,
    _pg: TempPostgres,
    _redis: TempRedis,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn cluster_with(client: &str, secret: &str) -> Cluster {
    let kc = RealKeycloak::get().await;
    let pg = TempPostgres::start().await;
    let redis = TempRedis::start().await;
    let yaml = config(&kc, &pg.url, &redis.url, client, secret);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve_yaml(&yaml, da.path(), false).await;
    let b = serve_yaml(&yaml, db.path(), false).await;
    wait_ready(&a, READY).await;
    wait_ready(&b, READY).await;
    Cluster {
        kc,
        a,
        b,
        _pg: pg,
        _redis: redis,
        _dirs: (da, db),
    }
}

async fn cluster() -> Cluster {
    cluster_with("portcullis-pat-issuer", SHIPPED_SECRET).await
}

#[tokio::test]
async fn exchanged_pat_through_envoy_then_revoked_on_every_replica() {
    let c = cluster().await;
    let login = c.kc.login("bob", "openid").await.access_token;
    let api = Api::new(c.a.http_addr);
    let created = api
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "ci", "scopes": ["uploads:read"], "expires_in_days": 30}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let pat = created.body["token"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();

    // Keycloak-signed, marked, for bob.
    let pc = claims(&pat);
    assert_eq!(pc["iss"], c.kc.issuer());
    assert_eq!(pc["azp"], "portcullis-pat-issuer");
    assert_eq!(pc["token_use"], "pat");
    assert_eq!(pc["sub"], c.kc.user_id("bob").await.unwrap());
    // Shown once: the listing carries metadata only.
    let listed = api.get("/api/v1/tokens", &login).await;
    assert!(!listed.body.to_string().contains(&pat), "raw token listed");

    // Through Envoy: a PAT, with its own scopes (not bob's login scopes).
    let echo = Echo::start().await;
    let envoy = Envoy::start(c.a.grpc_addr, echo.addr).await;
    let auth = format!("Bearer {pat}");
    let r = envoy
        .get("/api/v1/uploads/1", &[("authorization", auth.as_str())])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-auth-method"], "pat", "{seen}");
    assert_eq!(seen["headers"]["x-auth-token-id"], id.as_str(), "{seen}");
    assert_eq!(seen["headers"]["x-auth-scopes"], "uploads:read", "{seen}");
    // The other replica accepts it too (shared store).
    allowed(&check(c.b.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&pat)).await);

    // Revoked on replica A: refused through Envoy at once, and on replica B
    // through the Redis bus (resync is 10 minutes away).
    let revoked = api.delete(&format!("/api/v1/tokens/{id}"), &login).await;
    assert!(
        revoked.status == 200 || revoked.status == 204,
        "{:?}",
        revoked.body
    );
    let r = envoy
        .get("/api/v1/uploads/1", &[("authorization", auth.as_str())])
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let what = "replica B refusing the PAT revoked on A";
    eventually_every(Duration::from_secs(5), POLL, what, async || {
        let r = check(c.b.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&pat)).await;
        if code(&r) == 16 { Ok(()) } else { Err(r) }
    })
    .await;
}

#[tokio::test]
async fn token_exchanged_directly_at_keycloak_is_refused() {
    let c = cluster().await;
    let login = c.kc.login("alice", "openid").await.access_token;
    // What a user could do without portcullis: exchange at Keycloak with the
    // PAT issuer's credentials (say, leaked). Never registered: refused.
    let (st, body) =
        c.kc.token_request(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("client_id", "portcullis-pat-issuer"),
            ("client_secret", SHIPPED_SECRET),
            ("subject_token", &login),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ])
        .await;
    assert_eq!(st, 200, "{body}");
    let direct = body["access_token"].as_str().unwrap();
    assert_eq!(claims(direct)["token_use"], "pat");
    let d = denied(&check(c.a.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(direct)).await);
    assert_eq!(
        (d.code, d.http, d.error()),
        (16, 401, "invalid_token"),
        "{d:?}"
    );
    assert!(d.description().contains("unregistered"), "{d:?}");
}

#[tokio::test]
async fn exchanged_pat_expiry_is_the_earliest_of_keycloak_request_and_maximum() {
    let c = cluster().await;
    let login = c.kc.login("alice", "openid").await.access_token;
    let api = Api::new(c.a.http_addr);
    // Keycloak caps an exchanged token at the realm's SSO session maximum
    // (10 h in the shipped realm), below the 30 days asked for.
    let created = api
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "long", "scopes": ["uploads:read"], "expires_in_days": 30}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let pat = created.body["token"].as_str().unwrap();
    let kc_exp = claims(pat)["exp"].as_i64().unwrap();
    let stored = chrono::DateTime::parse_from_rfc3339(created.body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (stored - kc_exp).abs() <= 1,
        "stored expiry {stored} is not Keycloak's exp {kc_exp}"
    );
    let now = chrono::Utc::now().timestamp();
    assert!(
        kc_exp - now <= 10 * 3600 + 60,
        "Keycloak's exp is past 10 h"
    );

    // A request past the maximum lifetime is refused before Keycloak is asked.
    let too_long = api
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "too-long", "scopes": ["uploads:read"], "expires_in_days": 366}),
        )
        .await;
    too_long.assert_error(400, "invalid_request", "max_lifetime_days");
}

#[tokio::test]
async fn keycloak_exchange_errors_are_502_with_keycloaks_error() {
    // 1. A subject token whose `aud` lacks the PAT issuer: a login through a
    // client that only adds the portcullis audience.
    let c = cluster().await;
    let (st, v) = c
        .kc
        .admin(
            reqwest::Method::POST,
            "/clients",
            Some(json!({
                "clientId": "portcullis-only",
                "publicClient": true,
                "directAccessGrantsEnabled": true,
                "standardFlowEnabled": false,
                "protocolMappers": [{
                    "name": "audience-portcullis",
                    "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {"included.client.audience": "portcullis", "access.token.claim": "true"},
                }],
            })),
        )
        .await;
    assert!(st == 201 || st == 409, "create portcullis-only: {st} {v}");
    let (st, body) =
        c.kc.token_request(&[
            ("grant_type", "password"),
            ("client_id", "portcullis-only"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(st, 200, "{body}");
    let login = body["access_token"].as_str().unwrap();
    let aud = claims(login)["aud"].to_string();
    assert!(!aud.contains("portcullis-pat-issuer"), "{aud}");
    let api = Api::new(c.a.http_addr);
    let r = api
        .post(
            "/api/v1/tokens",
            login,
            json!({"name": "x", "scopes": ["uploads:read"]}),
        )
        .await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.error(), "exchange_failed");
    let upstream = r.body["upstream_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !upstream.is_empty(),
        "no Keycloak error named: {:?}",
        r.body
    );
    assert!(r.description().contains(&upstream), "{:?}", r.body);
    drop(c);

    // 2. A client that may not exchange (the shipped uploads-worker).
    let c = cluster_with("uploads-worker", SHIPPED_SECRET).await;
    let login = c.kc.login("alice", "openid").await.access_token;
    let r = Api::new(c.a.http_addr)
        .post(
            "/api/v1/tokens",
            &login,
            json!({"name": "x", "scopes": ["uploads:read"]}),
        )
        .await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.error(), "exchange_failed");
    let upstream: Value = r.body["upstream_error"].clone();
    assert!(
        upstream.as_str().is_some_and(|s| !s.is_empty()),
        "{:?}",
        r.body
    );
}
