//! DPoP-bound access tokens (RFC 9449) from the real Keycloak 26, used
//! through a real Envoy (deploy/envoy.yaml as shipped, on free ports) in
//! front of portcullis with `issuers[].dpop: allowed`.
//!
//! The test realm gets one extra public client, `dpop-cli`, with "DPoP
//! bound access tokens" on (client attribute `dpop.bound.access.tokens`)
//! and the portcullis audience; users log in through it with the password
//! grant and a proof for the token endpoint.
//!
//! Needs Keycloak and Envoy: `scripts/test` provides both; alone, `cargo
//! test --test keycloak_dpop` starts its own Keycloak and needs
//! `$PORTCULLIS_ENVOY` (or `scripts/install-envoy`).

use std::time::Duration;

use portcullis::server::Running;
use portcullis_testkit::check::{serve_yaml, wait_ready};
use portcullis_testkit::dpop::DpopClient;
use portcullis_testkit::echo::Echo;
use portcullis_testkit::envoy::Envoy;
use portcullis_testkit::real_keycloak::{PASSWORD, READY, RealKeycloak, claims, header};
use serde_json::{Value, json};

/// The client the test adds to the realm.
const CLIENT: &str = "dpop-cli";
/// A path Envoy sends to ext_authz on its default route (no
/// context_extensions): portcullis applies `policy.default`.
const PATH: &str = "/things/1";

fn config(kc: &RealKeycloak, mode: &str) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256]
    dpop: {mode}
policy:
  default: authenticated
"#,
        iss = kc.issuer()
    )
}

/// Adds `dpop-cli` (idempotent: a run sharing this Keycloak may have added
/// it already, and then it is brought to the same settings).
async fn ensure_dpop_client(kc: &RealKeycloak) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let rep = json!({
            "clientId": CLIENT,
            "publicClient": true,
            "standardFlowEnabled": false,
            "directAccessGrantsEnabled": true,
            "attributes": {"dpop.bound.access.tokens": "true"},
            "protocolMappers": [{
                "name": "audience-portcullis",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {
                    "included.client.audience": "portcullis",
                    "access.token.claim": "true",
                    "id.token.claim": "false",
                },
            }],
        });
        let (st, v) = kc.admin(reqwest::Method::POST, "/clients", Some(rep)).await;
        match st {
            201 => {}
            409 => {
                kc.update_client(
                    CLIENT,
                    json!({"directAccessGrantsEnabled": true,
                           "attributes": {"dpop.bound.access.tokens": "true"}}),
                )
                .await
            }
            _ => panic!("create {CLIENT}: {st} {v}"),
        }
    })
    .await;
}

/// A password-grant login through `dpop-cli`, with `proof` (if any) in the
/// `DPoP` header of the token request.
async fn login(kc: &RealKeycloak, user: &str, proof: Option<&str>) -> (u16, Value) {
    let form = [
        ("grant_type", "password"),
        ("client_id", CLIENT),
        ("username", user),
        ("password", PASSWORD),
        ("scope", "openid"),
    ];
    match proof {
        Some(p) => kc.token_request_with(&form, &[("dpop", p)]).await,
        None => kc.token_request_with(&form, &[]).await,
    }
}

/// A proof for the token endpoint: `htm` POST, `htu` its URL, no `ath`.
fn token_endpoint_proof(kc: &RealKeycloak, client: &DpopClient) -> String {
    client.proof_with("POST", &kc.token_url(), "", |c| {
        c.remove("ath");
    })
}

struct Env {
    kc: RealKeycloak,
    _srv: Running,
    echo: Echo,
    envoy: Envoy,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn env(mode: &str) -> Env {
    let kc = RealKeycloak::get().await;
    ensure_dpop_client(&kc).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&config(&kc, mode), dir.path(), false).await;
    wait_ready(&srv, READY).await;
    let echo = Echo::start().await;
    let envoy = Envoy::start(srv.grpc_addr, echo.addr).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Env {
        kc,
        _srv: srv,
        echo,
        envoy,
        http,
        _dir: dir,
    }
}

/// What came back through Envoy.
struct Answer {
    status: u16,
    www_authenticate: String,
    body: String,
}

impl Env {
    /// The URL of [`PATH`] at Envoy's listener. reqwest sends
    /// `Host: 127.0.0.1:<port>`, which Envoy reports to portcullis as the
    /// request's host; the scheme is `http`.
    fn url(&self) -> String {
        format!("http://{}{PATH}", self.envoy.addr)
    }

    async fn get(&self, authorization: &str, proof: Option<&str>) -> Answer {
        let mut req = self
            .http
            .get(self.url())
            .header("authorization", authorization);
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET via Envoy: {e}\n{}", self.envoy.log()));
        let www_authenticate = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Answer {
            status: resp.status().as_u16(),
            www_authenticate,
            body: resp.text().await.unwrap_or_default(),
        }
    }
}

/// A 401 with a DPoP challenge naming `error`, whose description has `needle`.
fn assert_dpop_401(a: &Answer, error: &str, needle: &str) {
    assert_eq!(a.status, 401, "{}", a.body);
    let w = &a.www_authenticate;
    assert!(w.starts_with("DPoP "), "challenge {w:?}");
    assert!(w.contains(&format!("error=\"{error}\"")), "challenge {w:?}");
    assert!(w.contains("algs=\""), "challenge {w:?}");
    assert!(a.body.contains(needle), "{:?} lacks {needle:?}", a.body);
}

#[tokio::test]
async fn keycloak_binds_the_token_to_the_proof_key() {
    let kc = RealKeycloak::get().await;
    ensure_dpop_client(&kc).await;
    // The attribute name is the one the server acts on: without a proof
    // the token request itself is refused.
    let (st, body) = login(&kc, "alice", None).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("DPoP proof is missing")),
        "{body}"
    );

    let client = DpopClient::new();
    let (st, body) = login(&kc, "alice", Some(&token_endpoint_proof(&kc, &client))).await;
    assert_eq!(st, 200, "{body}");
    // What Keycloak 26 sends: token_type "DPoP"; the access token's `typ`
    // claim is "DPoP" too (not "Bearer"); its JOSE header is plain "JWT";
    // `cnf.jkt` is the RFC 7638 thumbprint of the proof's key.
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let at = body["access_token"].as_str().unwrap();
    let c = claims(at);
    assert_eq!(c["cnf"], json!({"jkt": client.jkt()}), "{c}");
    assert_eq!(c["typ"], "DPoP", "{c}");
    assert_eq!(c["azp"], CLIENT, "{c}");
    assert_eq!(header(at)["typ"], "JWT");
    // The refresh token of a public client is bound to the same key.
    let rt = body["refresh_token"].as_str().unwrap();
    assert_eq!(claims(rt)["cnf"]["jkt"], client.jkt());
}

#[tokio::test]
async fn a_keycloak_dpop_token_through_envoy_needs_a_fresh_proof_for_this_url() {
    let e = env("allowed").await;
    let client = DpopClient::new();
    let (st, body) = login(&e.kc, "alice", Some(&token_endpoint_proof(&e.kc, &client))).await;
    assert_eq!(st, 200, "{body}");
    let at = body["access_token"].as_str().unwrap().to_owned();
    let auth = format!("DPoP {at}");

    // A correct proof for the URL Envoy serves: allowed, and the upstream
    // sees alice and the Host the proof names.
    let proof = client.proof("GET", &e.url(), &at);
    let a = e.get(&auth, Some(&proof)).await;
    assert_eq!(a.status, 200, "{}\n{}", a.body, e.envoy.log());
    let seen = e.echo.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-auth-username"), Some("alice"));
    assert_eq!(
        seen[0].header("host"),
        Some(e.envoy.addr.to_string().as_str())
    );
    e.echo.clear();

    // The same proof again: a replay.
    assert_dpop_401(
        &e.get(&auth, Some(&proof)).await,
        "invalid_dpop_proof",
        "already used",
    );
    // No proof.
    assert_dpop_401(&e.get(&auth, None).await, "invalid_dpop_proof", "missing");
    // A stale proof (issued 10 minutes ago).
    let stale = client.proof_with("GET", &e.url(), &at, |c| {
        c.insert("iat".into(), json!(chrono::Utc::now().timestamp() - 600));
    });
    assert_dpop_401(
        &e.get(&auth, Some(&stale)).await,
        "invalid_dpop_proof",
        "iat",
    );
    // A proof for another URL: another path, another port, https.
    let other_port = format!("http://127.0.0.1:{}{PATH}", e.envoy.addr.port() + 1);
    let https = e.url().replacen("http:", "https:", 1);
    let other_path = format!("http://{}/things/2", e.envoy.addr);
    for url in [other_path, other_port, https] {
        let p = client.proof("GET", &url, &at);
        assert_dpop_401(&e.get(&auth, Some(&p)).await, "invalid_dpop_proof", "htu");
    }
    // The bound token as a bearer token.
    assert_dpop_401(
        &e.get(&format!("Bearer {at}"), None).await,
        "invalid_token",
        "DPoP-bound",
    );
    // None of the refused requests reached the upstream; a new proof works.
    assert!(e.echo.seen().is_empty(), "{:?}", e.echo.seen());
    let again = client.proof("GET", &e.url(), &at);
    assert_eq!(e.get(&auth, Some(&again)).await.status, 200);
}

#[tokio::test]
async fn required_mode_refuses_keycloak_bearer_tokens_through_envoy() {
    let e = env("required").await;
    // An ordinary login through the shipped `cli` client: a bearer token.
    let bearer = e.kc.login("bob", "openid").await.access_token;
    assert_eq!(claims(&bearer)["typ"], "Bearer");
    assert_dpop_401(
        &e.get(&format!("Bearer {bearer}"), None).await,
        "invalid_token",
        "must be DPoP-bound",
    );
    let client = DpopClient::new();
    let (st, body) = login(&e.kc, "bob", Some(&token_endpoint_proof(&e.kc, &client))).await;
    assert_eq!(st, 200, "{body}");
    let at = body["access_token"].as_str().unwrap();
    let proof = client.proof("GET", &e.url(), at);
    let a = e.get(&format!("DPoP {at}"), Some(&proof)).await;
    assert_eq!(a.status, 200, "{}", a.body);
}
