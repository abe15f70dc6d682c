//! `pat.issuer: keycloak-exchange` against the Keycloak stand-in: a PAT is
//! the JWT Keycloak returns for the caller's own token (RFC 8693), verified
//! and registered by sha256 + jti; each exchange failure is a 502 naming
//! Keycloak's `error`.

use std::time::Duration;

use portcullis::pat::ExchangeConfig;
use portcullis::server::Running;
use portcullis::tokens::ExchangeClient;
use portcullis_testkit::api::Api;
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, serve_yaml, wait_ready,
};
use portcullis_testkit::keycloak::{Failure, FakeKeycloak, SignOpts};
use serde_json::json;

struct Setup {
    kc: FakeKeycloak,
    srv: Running,
    api: Api,
    login: String,
    _dir: tempfile::TempDir,
}

fn login_token(kc: &FakeKeycloak, sub: &str) -> String {
    let mut claims = kc.claims(sub);
    claims["scope"] = json!("tokens:manage api:read");
    kc.sign(&claims, &SignOpts::default())
}

/// A server exchanging through `client_id`/`secret`; the stand-in knows the
/// confidential `portcullis` client (exchange enabled) and the audience.
/// No `pat.exchange.audience` (it may not equal an issuer audience): the
/// PAT keeps the login's `aud` and is recognised by its `token_use` claim.
async fn setup(client_id: &str, secret: &str) -> Setup {
    setup_with(client_id, secret, "").await
}

/// [`setup`] with extra `pat:` keys (each line indented two spaces).
async fn setup_with(client_id: &str, secret: &str, pat_extra: &str) -> Setup {
    let kc = FakeKeycloak::start().await;
    kc.add_client("portcullis", Some("portcullis-secret"), true);
    kc.add_client("portcullis-pat", None, false);
    kc.set_exchange_extra_claims(json!({"token_use": "pat"}));
    let yaml = format!(
        "policy:\n  default: authenticated\nissuers:\n  - issuer: {iss}\n    audiences: [portcullis]\npat:\n  issuer: keycloak-exchange\n  exchange:\n    token_url: {url}\n    client_id: {client_id}\n    client_secret: {secret}\n{pat_extra}",
        iss = kc.issuer(),
        url = kc.token_url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    // Wait (bounded) until the issuer's keys are loaded.
    wait_ready(&srv, Duration::from_secs(10)).await;
    let api = Api::new(srv.http_addr);
    let login = login_token(&kc, "alice-sub");
    Setup {
        kc,
        srv,
        api,
        login,
        _dir: dir,
    }
}

async fn create(s: &Setup) -> portcullis_testkit::api::Answer {
    s.api
        .post(
            "/api/v1/tokens",
            &s.login,
            json!({"name": "exchanged", "scopes": ["api:read"]}),
        )
        .await
}

#[tokio::test]
async fn exchange_mints_a_registered_jwt_pat() {
    let s = setup("portcullis", "portcullis-secret").await;
    let a = create(&s).await;
    assert_eq!(a.status, 201, "{a:?}");
    let raw = a.body["token"].as_str().unwrap().to_owned();
    assert_eq!(raw.split('.').count(), 3, "a JWT");
    assert!(a.body["display_hint"].as_str().unwrap().starts_with("jwt:"));
    let id = a.body["id"].as_str().unwrap().to_owned();

    let list = s.api.get("/api/v1/tokens", &s.login).await;
    assert_eq!(list.body[0]["kind"], "jwt", "{list:?}");
    assert_eq!(list.body[0]["user_id"], "alice-sub");

    // Presented to the API, the exchanged JWT is recognised as a PAT.
    let me = s.api.get("/api/v1/tokens/self", &raw).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["id"], id);
    s.api.get("/api/v1/tokens", &raw).await.assert_error(
        403,
        "insufficient_scope",
        "personal access token",
    );

    // Check accepts it as a PAT while registered, with the stored scopes.
    let (h, _) = allowed(&check(s.srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
    assert_eq!(h["x-auth-method"], "pat");
    assert_eq!(h["x-auth-token-id"], id);
    assert_eq!(h["x-auth-scopes"], "api:read");

    s.api
        .delete(&format!("/api/v1/tokens/{id}"), &s.login)
        .await;
    s.api.get("/api/v1/tokens/self", &raw).await.assert_error(
        401,
        "invalid_token",
        "token revoked",
    );
    assert_invalid_token(
        &check(s.srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "token revoked",
    );
}

/// A long-lived exchanged JWT gets the requested expiry, or the
/// default capped by `pat.max_lifetime_days`, never Keycloak's later `exp`;
/// and Check enforces the stored expiry although the JWT's `exp` is later.
#[tokio::test]
async fn item8_exchanged_pat_expiry_is_the_earliest_of_exp_request_and_max_lifetime() {
    let s = setup_with(
        "portcullis",
        "portcullis-secret",
        "  default_lifetime_days: 10\n  max_lifetime_days: 10\n",
    )
    .await;
    // Keycloak would let the exchanged token live 400 days.
    s.kc.set_exchange_lifetime(Duration::from_secs(400 * 86_400));
    let days = |a: &portcullis_testkit::api::Answer| {
        let at = a.body["expires_at"].as_str().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0
    };

    let requested = s
        .api
        .post(
            "/api/v1/tokens",
            &s.login,
            json!({"name": "two days", "scopes": ["api:read"], "expires_in_days": 2}),
        )
        .await;
    assert_eq!(requested.status, 201, "{requested:?}");
    let d = days(&requested);
    assert!(d > 1.9 && d <= 2.0, "requested 2 days, stored {d} days");

    let defaulted = create(&s).await;
    assert_eq!(defaulted.status, 201, "{defaulted:?}");
    let d = days(&defaulted);
    assert!(d > 9.9 && d <= 10.0, "max 10 days, stored {d} days");
    let list = s.api.get("/api/v1/tokens", &s.login).await;
    for t in list.body.as_array().unwrap() {
        let at = chrono::DateTime::parse_from_rfc3339(t["expires_at"].as_str().unwrap()).unwrap();
        assert!(at < chrono::Utc::now() + chrono::TimeDelta::days(10), "{t}");
    }

    // The JWT's own exp is 400 days away; move the stored expiry into the
    // past (no sleeping) and Check must refuse the still-valid JWT.
    let raw = requested.body["token"].as_str().unwrap().to_owned();
    let id = requested.body["id"].as_str().unwrap().to_owned();
    let past = (chrono::Utc::now() - chrono::TimeDelta::minutes(1)).timestamp_micros();
    let db = rusqlite::Connection::open(s._dir.path().join("portcullis.db")).unwrap();
    let n = db
        .execute(
            "UPDATE personal_access_tokens SET expires_at = ?1 WHERE id = ?2",
            rusqlite::params![past, id],
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_invalid_token(
        &check(s.srv.grpc_addr, &Req::get("/").bearer(&raw)).await,
        "token expired",
    );
    s.api.get("/api/v1/tokens/self", &raw).await.assert_error(
        401,
        "invalid_token",
        "token expired",
    );
}

fn assert_502(a: &portcullis_testkit::api::Answer, upstream: &str, needle: &str) {
    a.assert_error(502, "exchange_failed", needle);
    assert_eq!(a.body["upstream_error"], upstream, "{a:?}");
    assert!(a.description().contains(upstream), "{a:?}");
}

#[tokio::test]
async fn public_client_is_a_502_naming_invalid_client() {
    let s = setup("web-exchanger", "anything").await;
    s.kc.add_client("web-exchanger", None, true);
    assert_502(
        &create(&s).await,
        "invalid_client",
        "Public client is not allowed",
    );
}

#[tokio::test]
async fn client_outside_the_subject_audience_is_a_502_naming_access_denied() {
    let s = setup("other", "other-secret").await;
    s.kc.add_client("other", Some("other-secret"), true);
    assert_502(
        &create(&s).await,
        "access_denied",
        "not within the token audience",
    );
}

#[tokio::test]
async fn wrong_subject_token_type_is_a_502_naming_invalid_request() {
    let s = setup("portcullis", "portcullis-secret").await;
    let client = ExchangeClient::new(&ExchangeConfig {
        token_url: Some(s.kc.token_url()),
        client_id: Some("portcullis".into()),
        client_secret: Some("portcullis-secret".into()),
        audience: Some("portcullis-pat".into()),
        scope: None,
    })
    .unwrap();
    let e = client
        .exchange_as(&s.login, "urn:ietf:params:oauth:token-type:id_token")
        .await
        .unwrap_err();
    assert_eq!(e.status, 502);
    assert_eq!(e.upstream_error.as_deref(), Some("invalid_request"));
    assert!(
        e.description.contains("supports access tokens only"),
        "{e:?}"
    );
    // The right type works with the same client.
    assert!(client.exchange(&s.login).await.is_ok());
}

#[tokio::test]
async fn exchange_not_enabled_is_a_502_naming_invalid_request() {
    let s = setup("portcullis", "portcullis-secret").await;
    s.kc.add_client("portcullis", Some("portcullis-secret"), false);
    assert_502(
        &create(&s).await,
        "invalid_request",
        "Standard token exchange is not enabled",
    );
}

#[tokio::test]
async fn wrong_client_secret_is_a_502_naming_unauthorized_client() {
    let s = setup("portcullis", "wrong-secret").await;
    assert_502(&create(&s).await, "unauthorized_client", "Invalid client");
}

#[tokio::test]
async fn keycloak_down_is_a_502() {
    let s = setup("portcullis", "portcullis-secret").await;
    s.kc.set_failure(Failure::Down);
    let a = create(&s).await;
    a.assert_error(502, "exchange_failed", "connection failed");
    assert!(a.body.get("upstream_error").is_none(), "{a:?}");
}

#[tokio::test]
async fn exchange_config_keys_are_required() {
    let cfg = portcullis::config::Config::from_yaml_str(
        "pat:\n  issuer: keycloak-exchange\n  exchange:\n    token_url: http://kc/token\n    client_id: c\n",
        &portcullis::config::MapEnv::default(),
    )
    .unwrap();
    let errs = cfg.validate().unwrap_err();
    assert!(
        errs.iter().any(|e| e.key == "pat.exchange.client_secret"),
        "{errs:?}"
    );
}
