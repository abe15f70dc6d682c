//! JWT validation against the Keycloak stand-in, through the Check handler
//! in-process (no gRPC; the readiness test runs a whole server). Each attack
//! RFC 8725 describes (`alg: none`, HMAC with the RSA public key, algorithms
//! outside the allow-list, embedded or remote keys, `crit`, bad or
//! duplicate JSON, other token kinds, claim checks) has its own test
//! asserting the gRPC code, the HTTP status and the `error` value; so do key
//! rotation, unknown-kid refetches and an IdP that is down or slow.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, denied, serve_yaml, wait_ready,
};
use portcullis_testkit::in_process::InProcess;
use portcullis_testkit::keycloak::{Failure, FakeKeycloak, SignOpts};
use serde_json::{Value, json};

struct Env {
    kc: FakeKeycloak,
    srv: InProcess,
    _dir: tempfile::TempDir,
}

fn yaml(kc: &FakeKeycloak, extra: &str) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256, ES256, EdDSA]
    refetch_min_interval: 10s
    unknown_kid_wait: 2s
    fetch_timeout: 2s
policy:
  default: authenticated
{extra}
"#,
        iss = kc.issuer()
    )
}

/// How long the stand-in's keys may take to load.
const READY: Duration = Duration::from_secs(5);

async fn env_with(extra: &str) -> Env {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The issuer's keys are fetched before `from_yaml` returns.
    let srv = InProcess::from_yaml(&yaml(&kc, extra), dir.path(), false).await;
    Env { kc, srv, _dir: dir }
}

async fn env() -> Env {
    env_with("").await
}

impl Env {
    fn claims(&self) -> Value {
        let mut c = self.kc.claims("user-1");
        c["aud"] = json!(["portcullis", "account"]);
        c
    }

    fn sign(&self, claims: &Value) -> String {
        self.kc.sign(claims, &SignOpts::default())
    }

    fn sign_alg(&self, claims: &Value, alg: Algorithm) -> String {
        self.kc.sign(
            claims,
            &SignOpts {
                alg: Some(alg),
                ..Default::default()
            },
        )
    }

    async fn check(&self, token: &str) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        self.srv.check(&Req::get("/api").bearer(token)).await
    }
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with an arbitrary header and payload and a junk signature.
fn forge(header: &Value, payload: &Value) -> String {
    format!("{}.{}.c2ln", b64(header), b64(payload))
}

// === accepted tokens ===

#[tokio::test]
async fn rs256_es256_eddsa_are_accepted() {
    let e = env().await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let (h, _) = allowed(&e.check(&e.sign_alg(&e.claims(), alg)).await);
        assert_eq!(h["x-auth-subject"], "user-1", "{alg:?}");
        assert_eq!(h["x-auth-method"], "jwt");
    }
}

#[tokio::test]
async fn service_account_is_reported_as_such() {
    let e = env().await;
    let mut c = e.claims();
    c["preferred_username"] = json!("service-account-reporter");
    c["azp"] = json!("reporter");
    c["client_id"] = json!("reporter");
    let (h, _) = allowed(&e.check(&e.sign(&c)).await);
    assert_eq!(h["x-auth-method"], "service_account");
    assert_eq!(h["x-auth-client"], "reporter");
}

// === header attacks ===

#[tokio::test]
async fn alg_none_is_denied() {
    let e = env().await;
    let t = forge(
        &json!({"alg": "none", "kid": e.kc.active_kid(Algorithm::RS256)}),
        &e.claims(),
    );
    assert_invalid_token(&e.check(&t).await, "alg none");
    let t = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&e.claims()));
    assert_invalid_token(&e.check(&t).await, "unsigned");
}

#[tokio::test]
async fn alg_none_any_casing_is_denied() {
    let e = env().await;
    for alg in ["None", "NONE", "nOnE"] {
        let t = forge(&json!({"alg": alg, "kid": "k"}), &e.claims());
        assert_invalid_token(&e.check(&t).await, "alg none");
    }
}

#[tokio::test]
async fn missing_alg_is_denied() {
    let e = env().await;
    let t = forge(
        &json!({"kid": e.kc.active_kid(Algorithm::RS256)}),
        &e.claims(),
    );
    assert_invalid_token(&e.check(&t).await, "missing alg");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_denied() {
    let e = env().await;
    let pem = e.kc.rsa_public_key_pem();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(e.kc.active_kid(Algorithm::RS256));
    let t =
        jsonwebtoken::encode(&h, &e.claims(), &EncodingKey::from_secret(pem.as_bytes())).unwrap();
    assert_invalid_token(&e.check(&t).await, "algorithm not allowed");
}

#[tokio::test]
async fn alg_outside_allow_list_is_denied() {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n",
        kc.issuer()
    );
    let srv = InProcess::from_yaml(&cfg, dir.path(), false).await;
    let mut c = kc.claims("u");
    c["aud"] = json!("portcullis");
    let t = kc.sign(
        &c,
        &SignOpts {
            alg: Some(Algorithm::ES256),
            ..Default::default()
        },
    );
    assert_invalid_token(
        &srv.check(&Req::get("/").bearer(&t)).await,
        "algorithm not allowed",
    );
}

#[tokio::test]
async fn alg_not_matching_the_key_type_is_denied() {
    let e = env().await;
    // RS256 signature, but the header points at the EC key.
    let t = e.kc.sign(
        &e.claims(),
        &SignOpts {
            alg: Some(Algorithm::RS256),
            kid: Some(e.kc.active_kid(Algorithm::ES256)),
            ..Default::default()
        },
    );
    assert_invalid_token(&e.check(&t).await, "does not match the key");
}

#[tokio::test]
async fn key_with_use_enc_is_not_used() {
    let e = env().await;
    let t = e.kc.sign_with_enc_key(&e.claims());
    assert_invalid_token(&e.check(&t).await, "unknown signing key");
}

#[tokio::test]
async fn oct_key_is_not_used() {
    let e = env().await;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(e.kc.oct_kid());
    let t = jsonwebtoken::encode(&h, &e.claims(), &EncodingKey::from_secret(b"secret")).unwrap();
    let d = denied(&e.check(&t).await);
    assert_eq!((d.code, d.http, d.error()), (16, 401, "invalid_token"));
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_is_rate_limited() {
    let e = env().await;
    let before = e.kc.jwks_fetches();
    let t1 =
        e.kc.sign_with_unpublished_key(&e.claims(), Algorithm::RS256);
    let t2 =
        e.kc.sign_with_unpublished_key(&e.claims(), Algorithm::ES256);
    // Concurrent misses share one fetch.
    let (a, b) = tokio::join!(e.check(&t1), e.check(&t2));
    assert_invalid_token(&a, "unknown signing key");
    assert_invalid_token(&b, "unknown signing key");
    let after_first = e.kc.jwks_fetches();
    assert_eq!(after_first - before, 1, "one refetch for concurrent misses");
    for _ in 0..5 {
        let t =
            e.kc.sign_with_unpublished_key(&e.claims(), Algorithm::RS256);
        assert_invalid_token(&e.check(&t).await, "unknown signing key");
    }
    assert_eq!(e.kc.jwks_fetches(), after_first, "refetch is rate-limited");
}

#[tokio::test]
async fn kid_with_path_or_sql_characters_is_just_unknown() {
    let e = env().await;
    for kid in ["../../etc/passwd", "' OR 1=1 --", "%00", "k\u{0}id"] {
        let t = e.kc.sign(
            &e.claims(),
            &SignOpts {
                kid: Some(kid.into()),
                ..Default::default()
            },
        );
        let d = denied(&e.check(&t).await);
        assert_eq!(
            (d.code, d.http, d.error()),
            (16, 401, "invalid_token"),
            "{kid:?}"
        );
    }
}

#[tokio::test]
async fn jku_x5u_jwk_x5c_headers_are_ignored() {
    let e = env().await;
    // A valid token carrying the headers: they change nothing.
    let mut extra = serde_json::Map::new();
    extra.insert("jku".into(), json!("http://evil.example/jwks"));
    extra.insert("x5u".into(), json!("http://evil.example/cert"));
    let t = e.kc.sign(
        &e.claims(),
        &SignOpts {
            extra_header: extra,
            ..Default::default()
        },
    );
    allowed(&e.check(&t).await);
    // An attacker's own key, embedded as `jwk`, is never trusted.
    let t =
        e.kc.sign_with_unpublished_key(&e.claims(), Algorithm::RS256);
    let (h, p, s) = {
        let mut it = t.split('.');
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    use base64::Engine;
    let mut header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap();
    header["jwk"] = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
    header["x5c"] = json!(["MIIB"]);
    let t = format!("{}.{p}.{s}", b64(&header));
    let d = denied(&e.check(&t).await);
    assert_eq!((d.code, d.http, d.error()), (16, 401, "invalid_token"));
}

#[tokio::test]
async fn unknown_crit_is_denied() {
    let e = env().await;
    let mut extra = serde_json::Map::new();
    extra.insert("crit".into(), json!(["urn:example:must-understand"]));
    extra.insert("urn:example:must-understand".into(), json!("x"));
    let t = e.kc.sign(
        &e.claims(),
        &SignOpts {
            extra_header: extra,
            ..Default::default()
        },
    );
    assert_invalid_token(&e.check(&t).await, "crit");
}

// === claim attacks ===

#[tokio::test]
async fn expired_token_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c["exp"] = json!(portcullis::jwt::unix_now() - 120);
    assert_invalid_token(&e.check(&e.sign(&c)).await, "token expired");
}

#[tokio::test]
async fn missing_exp_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid_token(&e.check(&e.sign(&c)).await, "exp");
}

#[tokio::test]
async fn nbf_in_the_future_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c["nbf"] = json!(portcullis::jwt::unix_now() + 300);
    assert_invalid_token(&e.check(&e.sign(&c)).await, "not yet valid");
    // Within leeway (30 s) it is fine.
    let mut c = e.claims();
    c["nbf"] = json!(portcullis::jwt::unix_now() + 10);
    allowed(&e.check(&e.sign(&c)).await);
}

/// A time claim that is not a number is refused with its name, not as a
/// bad signature (jsonwebtoken's `InvalidClaimFormat` for `nbf` used to
/// fall through to "invalid signature").
#[tokio::test]
async fn malformed_time_claims_are_denied_by_what_is_wrong() {
    let e = env().await;
    for value in [json!("tomorrow"), json!(-5)] {
        let mut c = e.claims();
        c["nbf"] = value;
        assert_invalid_token(&e.check(&e.sign(&c)).await, "nbf is not a number");
    }
    // Shapes the claims reader itself cannot take: a malformed token.
    for (claim, value) in [
        ("nbf", json!([1])),
        ("exp", json!("soon")),
        ("exp", json!({"at": 1})),
    ] {
        let mut c = e.claims();
        c[claim] = value;
        assert_invalid_token(&e.check(&e.sign(&c)).await, "malformed token");
    }
}

#[tokio::test]
async fn iat_in_the_future_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c["iat"] = json!(portcullis::jwt::unix_now() + 300);
    assert_invalid_token(&e.check(&e.sign(&c)).await, "iat");
}

#[tokio::test]
async fn missing_aud_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid_token(&e.check(&e.sign(&c)).await, "audience");
}

#[tokio::test]
async fn aud_not_containing_ours_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c["aud"] = json!(["account", "other-api"]);
    assert_invalid_token(&e.check(&e.sign(&c)).await, "audience");
    c["aud"] = json!("portcullis");
    allowed(&e.check(&e.sign(&c)).await);
}

#[tokio::test]
async fn iss_of_another_realm_is_denied() {
    let e = env().await;
    let mut c = e.claims();
    c["iss"] = json!(e.kc.issuer().replace("/realms/test", "/realms/other"));
    assert_invalid_token(&e.check(&e.sign(&c)).await, "untrusted issuer");
}

#[tokio::test]
async fn iss_with_other_scheme_or_trailing_slash_is_denied() {
    let e = env().await;
    for iss in [
        e.kc.issuer().replacen("http://", "https://", 1),
        format!("{}/", e.kc.issuer()),
    ] {
        let mut c = e.claims();
        c["iss"] = json!(iss);
        assert_invalid_token(&e.check(&e.sign(&c)).await, "untrusted issuer");
    }
}

#[tokio::test]
async fn keycloak_id_refresh_logout_tokens_are_denied() {
    let e = env().await;
    for typ in ["ID", "Refresh", "Offline", "Logout"] {
        let mut c = e.claims();
        c["typ"] = json!(typ);
        assert_invalid_token(&e.check(&e.sign(&c)).await, "token type");
    }
    let mut c = e.claims();
    c.as_object_mut().unwrap().remove("typ");
    assert_invalid_token(&e.check(&e.sign(&c)).await, "token type");
}

#[tokio::test]
async fn jwe_is_denied() {
    let e = env().await;
    let t = format!(
        "{}.ZW5j.aXY.Y2lwaGVy.dGFn",
        b64(&json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": e.kc.enc_kid()}))
    );
    assert_invalid_token(&e.check(&t).await, "JWE");
}

#[tokio::test]
async fn bad_base64_is_denied() {
    let e = env().await;
    let good = e.sign(&e.claims());
    let parts: Vec<&str> = good.split('.').collect();
    let t = format!("{}.{}!!.{}", parts[0], parts[1], parts[2]);
    // '!' is outside the bearer alphabet; '*' tests the base64 decoder itself.
    assert_invalid_token(&e.check(&t).await, "malformed");
    let t = format!("{}.{}.{}", "e3+/", parts[1], parts[2]);
    assert_invalid_token(&e.check(&t).await, "malformed");
}

#[tokio::test]
async fn duplicate_json_keys_are_denied() {
    let e = env().await;
    let good = e.sign(&e.claims());
    let parts: Vec<&str> = good.split('.').collect();
    let claims = e.claims().to_string();
    let dup = format!(
        "{{\"iss\":\"{}\",{}",
        "https://evil.example/realms/x",
        &claims[1..]
    );
    use base64::Engine;
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(dup);
    let t = format!("{}.{}.{}", parts[0], p, parts[2]);
    assert_invalid_token(&e.check(&t).await, "duplicate");
}

#[tokio::test]
async fn tampered_payload_fails_the_signature() {
    let e = env().await;
    let good = e.sign(&e.claims());
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = e.claims();
    c["sub"] = json!("admin");
    let t = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_invalid_token(&e.check(&t).await, "invalid signature");
}

// === keys over time ===

#[tokio::test]
async fn rotation_is_picked_up_and_old_keys_still_verify() {
    let e = env().await;
    let old = e.sign(&e.claims());
    let new_kid = e.kc.rotate(Algorithm::RS256);
    let new = e.sign(&e.claims());
    assert!(new.len() > 10 && new_kid == e.kc.active_kid(Algorithm::RS256));
    allowed(&e.check(&new).await);
    allowed(&e.check(&old).await);
}

#[tokio::test]
async fn idp_down_keeps_last_good_keys() {
    let e = env().await;
    e.kc.set_failure(Failure::Down);
    // A token never seen before (not in the verified cache).
    let mut c = e.claims();
    c["jti"] = json!("fresh-after-outage");
    allowed(&e.check(&e.sign(&c)).await);
    e.kc.set_failure(Failure::None);
}

#[tokio::test]
async fn no_keys_at_start_is_503_and_not_ready_then_recovers() {
    let kc = FakeKeycloak::start().await;
    kc.set_failure(Failure::Status500);
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(&kc, ""), dir.path(), false).await;
    let r = reqwest::get(format!("http://{}/readyz", srv.http_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let mut c = kc.claims("u");
    c["aud"] = json!("portcullis");
    let t = kc.sign(&c, &SignOpts::default());
    let d = denied(&check(srv.grpc_addr, &Req::get("/").bearer(&t)).await);
    assert_eq!(
        (d.code, d.http, d.error()),
        (14, 503, "temporarily_unavailable")
    );
    assert!(d.www_authenticate.is_none());
    kc.set_failure(Failure::None);
    wait_ready(&srv, READY).await;
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&t)).await);
}

#[tokio::test]
async fn slow_idp_on_unknown_kid_is_503_not_allow() {
    let e = env_with("").await;
    e.kc.set_failure(Failure::Slow(Duration::from_secs(5)));
    let t =
        e.kc.sign_with_unpublished_key(&e.claims(), Algorithm::RS256);
    let d = denied(&e.check(&t).await);
    assert_eq!((d.code, d.http), (14, 503));
    e.kc.set_failure(Failure::None);
}
