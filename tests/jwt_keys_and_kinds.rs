//! Against the Keycloak stand-in over real gRPC: cached verifications of a
//! key that left the JWKS are refused after the next refresh; service
//! accounts are recognised by Keycloak's `client_id` claim, never by a
//! `service-account-` username alone.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, denied, serve_yaml, wait_ready,
};
use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
use serde_json::{Value, json};

struct Env {
    kc: FakeKeycloak,
    srv: portcullis::server::Running,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256, ES256, EdDSA]
    refetch_min_interval: 10s
    unknown_kid_wait: 2s
policy:
  default: authenticated
  routes:
    - name: robots
      match: {{ path: {{ prefix: /robots }} }}
      credentials: [service_account]
"#,
        iss = kc.issuer()
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, Duration::from_secs(5)).await;
    Env { kc, srv, _dir: dir }
}

impl Env {
    /// A user token (azp `web`) with a fresh `jti`.
    fn claims(&self) -> Value {
        self.kc.claims("user-1")
    }

    fn sign(&self, claims: &Value) -> String {
        self.kc.sign(claims, &SignOpts::default())
    }

    async fn check(
        &self,
        path: &str,
        token: &str,
    ) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        check(self.srv.grpc_addr, &Req::get(path).bearer(token)).await
    }

    fn cached(&self) -> u64 {
        self.srv.engine.load().verifier().cached()
    }

    /// A JWKS refresh, as the background refresher does it; returns once the
    /// new key set is in place (the signal, instead of waiting for the timer).
    async fn refresh_keys(&self) {
        let engine = self.srv.engine.load_full();
        for km in engine.verifier().key_managers() {
            km.refresh().await.expect("JWKS refresh");
        }
    }

    /// A client_credentials token from the stand-in's token endpoint.
    async fn client_credentials(&self, client: &str, secret: &str) -> String {
        let body =
            format!("grant_type=client_credentials&client_id={client}&client_secret={secret}");
        let resp: Value = reqwest::Client::new()
            .post(self.kc.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token endpoint")
            .json()
            .await
            .expect("token response JSON");
        resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {resp}"))
            .to_owned()
    }
}

// === keys removed from the JWKS ===

#[tokio::test]
async fn item16_cached_token_of_a_withdrawn_key_is_refused_after_refresh() {
    let e = env().await;
    let old_kid = e.kc.active_kid(Algorithm::RS256);
    let old = e.sign(&e.claims());
    e.kc.rotate(Algorithm::RS256);
    let new = e.sign(&e.claims());
    // Both verified once, so both answered from the cache from now on.
    allowed(&e.check("/api", &old).await);
    allowed(&e.check("/api", &new).await);
    assert_eq!(e.cached(), 2);

    e.kc.remove_key(&old_kid);
    // Nothing has told us yet: the last fetched key set still has the key.
    allowed(&e.check("/api", &old).await);
    e.refresh_keys().await;

    assert_invalid_token(
        &e.check("/api", &old).await,
        "signing key no longer published",
    );
    // Refused for good, not just once, and without asking the IdP again.
    let fetches = e.kc.jwks_fetches();
    assert_invalid_token(
        &e.check("/api", &old).await,
        "signing key no longer published",
    );
    assert_eq!(e.kc.jwks_fetches(), fetches);
    allowed(&e.check("/api", &new).await);
}

#[tokio::test]
async fn item16_tokens_of_still_published_keys_stay_cached() {
    let e = env().await;
    let old_kid = e.kc.active_kid(Algorithm::RS256);
    e.kc.rotate(Algorithm::RS256);
    let kept = e.sign(&e.claims());
    let ec = e.kc.sign(
        &e.claims(),
        &SignOpts {
            alg: Some(Algorithm::ES256),
            ..Default::default()
        },
    );
    allowed(&e.check("/api", &kept).await);
    allowed(&e.check("/api", &ec).await);
    e.kc.remove_key(&old_kid);
    e.refresh_keys().await;
    let fetches = e.kc.jwks_fetches();
    // The refresh parsed every key anew; the cached entries still hold.
    let (h, _) = allowed(&e.check("/api", &kept).await);
    assert_eq!(h["x-auth-subject"], "user-1");
    allowed(&e.check("/api", &ec).await);
    assert_eq!(e.cached(), 2);
    assert_eq!(e.kc.jwks_fetches(), fetches, "cache hits fetch nothing");
}

#[tokio::test]
async fn item16_kid_republished_with_other_material_is_verified_afresh() {
    let e = env().await;
    let kid = e.kc.active_kid(Algorithm::RS256);
    let old = e.sign(&e.claims());
    allowed(&e.check("/api", &old).await);
    e.kc.replace_key_material(&kid);
    e.refresh_keys().await;
    // Same kid, other key: the cached answer no longer applies, and the old
    // signature does not verify under the new material.
    assert_invalid_token(&e.check("/api", &old).await, "invalid signature");
    // A token from the new material under the same kid is fine.
    allowed(&e.check("/api", &e.sign(&e.claims())).await);
}

/// Never-seen tokens are checked against the key parsed from the JWKS in
/// force (each key is parsed into aws-lc once, when the JWKS is): a refresh
/// that republishes a kid with other material, or drops it, takes the old
/// parsed key out of use, for every RSA and EC key alike.
#[tokio::test]
async fn cold_tokens_use_the_parsed_keys_of_the_current_jwks() {
    let e = env().await;
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let opts = SignOpts {
            alg: Some(alg),
            ..Default::default()
        };
        let kid = e.kc.active_kid(alg);
        // Signed by the old material, never presented until after the refresh.
        let unseen = e.kc.sign(&e.claims(), &opts);
        allowed(&e.check("/api", &e.kc.sign(&e.claims(), &opts)).await);
        e.kc.replace_key_material(&kid);
        e.refresh_keys().await;
        assert_invalid_token(&e.check("/api", &unseen).await, "invalid signature");
        allowed(&e.check("/api", &e.kc.sign(&e.claims(), &opts)).await);

        // Rotated away and dropped from the JWKS: its never-seen tokens name
        // a kid nobody publishes any more.
        let unseen = e.kc.sign(&e.claims(), &opts);
        e.kc.rotate(alg);
        e.kc.remove_key(&kid);
        e.refresh_keys().await;
        assert_invalid_token(&e.check("/api", &unseen).await, "unknown signing key");
        allowed(&e.check("/api", &e.kc.sign(&e.claims(), &opts)).await);
    }
}

// === service accounts ===

#[tokio::test]
async fn item11_user_named_service_account_is_a_plain_jwt() {
    let e = env().await;
    let mut c = e.claims();
    // A user who picked this name; Keycloak puts no `client_id` in its tokens.
    c["preferred_username"] = json!("service-account-web");
    let t = e.sign(&c);
    let (h, _) = allowed(&e.check("/api", &t).await);
    assert_eq!(h["x-auth-method"], "jwt");
    let d = denied(&e.check("/robots", &t).await);
    assert_eq!((d.code, d.http, d.error()), (7, 403, "insufficient_scope"));
    assert!(
        d.description()
            .contains("credential kind jwt is not accepted"),
        "{d:?}"
    );
}

#[tokio::test]
async fn item11_client_id_not_naming_azp_is_a_plain_jwt() {
    let e = env().await;
    let mut c = e.claims();
    c["preferred_username"] = json!("service-account-portcullis");
    c["client_id"] = json!("portcullis");
    // Issued to `web`, so `client_id` names some other client.
    let t = e.sign(&c);
    let (h, _) = allowed(&e.check("/api", &t).await);
    assert_eq!(h["x-auth-method"], "jwt");
    let d = denied(&e.check("/robots", &t).await);
    assert_eq!((d.code, d.http), (7, 403));
}

#[tokio::test]
async fn item11_client_credentials_token_is_a_service_account() {
    let e = env().await;
    let t = e
        .client_credentials("portcullis", "portcullis-secret")
        .await;
    let (h, _) = allowed(&e.check("/robots", &t).await);
    assert_eq!(h["x-auth-method"], "service_account");
    assert_eq!(h["x-auth-client"], "portcullis");
}

#[tokio::test]
async fn item11_legacy_clientid_claim_is_a_service_account() {
    let e = env().await;
    let mut c = e.claims();
    c["azp"] = json!("reporter");
    c["clientId"] = json!("reporter");
    // Recognised by the claim, whatever the username.
    c["preferred_username"] = json!("reporter-bot");
    let (h, _) = allowed(&e.check("/robots", &e.sign(&c)).await);
    assert_eq!(h["x-auth-method"], "service_account");
}

#[tokio::test]
async fn item16_cached_exchanged_pat_of_a_withdrawn_key_is_refused_after_refresh() {
    use portcullis::store::{NewToken, TokenKind};
    let e = env().await;
    let kid = e.kc.active_kid(Algorithm::RS256);
    let mut c = e.claims();
    c["token_use"] = json!("pat");
    c["scope"] = json!("a:read");
    let t = e.sign(&c);
    e.kc.rotate(Algorithm::RS256);
    let now = chrono::Utc::now();
    let engine = e.srv.engine.load_full();
    engine
        .pats()
        .store()
        .insert(NewToken {
            id: uuid::Uuid::new_v4(),
            user_id: "user-1".into(),
            user_issuer: c["iss"].as_str().unwrap_or_default().to_owned(),
            username: "user-1".into(),
            name: "exchanged".into(),
            description: None,
            token_hash: portcullis::jwt::token_hash(&t),
            display_hint: "jwt…".into(),
            scopes: vec!["a:read".into()],
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            rotated_from: None,
            kind: TokenKind::Jwt,
            jti: c["jti"].as_str().map(str::to_owned),
            hash_version: Default::default(),
        })
        .await
        .expect("register JWT PAT");
    // Verified and registered: both the JWT and the PAT lookup are cached.
    let (h, _) = allowed(&e.check("/api", &t).await);
    assert_eq!(h["x-auth-method"], "pat");
    e.kc.remove_key(&kid);
    e.refresh_keys().await;
    assert_invalid_token(
        &e.check("/api", &t).await,
        "signing key no longer published",
    );
}

// === the verified-token cache ===

/// The cache has no timers: a token that expired (here one accepted within
/// the issuer's leeway) is refused on its next hit, and the periodic purge
/// drops an expired entry nobody presents again, leaving live ones.
#[tokio::test]
async fn expired_cached_verifications_are_refused_and_purged() {
    let e = env().await;
    let now = portcullis::jwt::unix_now();
    let mut late = e.claims();
    late["exp"] = json!(now - 5);
    let late = e.sign(&late);
    let live = e.sign(&e.claims());
    allowed(&e.check("/api", &late).await);
    allowed(&e.check("/api", &live).await);
    assert_eq!(e.cached(), 2);

    e.srv.engine.load().verifier().purge_expired();
    assert_eq!(e.cached(), 1, "only the expired entry goes");
    allowed(&e.check("/api", &live).await);
    assert_eq!(e.cached(), 1, "the live one was answered from the cache");

    // Cached again (cold path within leeway), then refused on the hit.
    allowed(&e.check("/api", &late).await);
    assert_invalid_token(&e.check("/api", &late).await, "expired");
    assert_eq!(e.cached(), 1, "the expired hit dropped its entry");

    e.srv.engine.load().verifier().forget_all();
    assert_eq!(e.cached(), 0);
}

/// Tokens of one user share what is equal (the scope set) and nothing
/// else: each answer carries its own token's scopes, and a withdrawn key
/// refuses only the tokens it signed.
#[tokio::test]
async fn tokens_of_one_user_keep_their_own_scopes_and_keys() {
    let e = env().await;
    let old_kid = e.kc.active_kid(Algorithm::RS256);
    let mut narrow = e.claims();
    narrow["scope"] = json!("openid orders:read");
    let mut wide = e.claims();
    wide["scope"] = json!("openid orders:read reports:write");
    let narrow = e.sign(&narrow);
    let wide_old = e.sign(&wide);
    e.kc.rotate(Algorithm::RS256);
    wide["exp"] = json!(portcullis::jwt::unix_now() + 900);
    wide["jti"] = json!("another-jti");
    let wide_new = e.sign(&wide);
    let scopes_of = |r: &envoy_types::ext_authz::v3::pb::CheckResponse| {
        let (h, _) = allowed(r);
        h.get("x-auth-scopes").cloned().unwrap_or_default()
    };
    let wide_scopes = "orders:read reports:write";
    assert_eq!(scopes_of(&e.check("/api", &wide_old).await), wide_scopes);
    assert_eq!(scopes_of(&e.check("/api", &narrow).await), "orders:read");
    assert_eq!(scopes_of(&e.check("/api", &wide_new).await), wide_scopes);
    // Answered from the cache: still each token's own.
    assert_eq!(scopes_of(&e.check("/api", &narrow).await), "orders:read");
    assert_eq!(scopes_of(&e.check("/api", &wide_old).await), wide_scopes);
    assert_eq!(e.cached(), 3);

    e.kc.remove_key(&old_kid);
    e.refresh_keys().await;
    assert_invalid_token(
        &e.check("/api", &wide_old).await,
        "signing key no longer published",
    );
    assert_eq!(scopes_of(&e.check("/api", &wide_new).await), wide_scopes);
}
