//! Sender-constrained tokens through the Check handler in-process: DPoP
//! (RFC 9449) with the Keycloak stand-in signing bound tokens and a test
//! client holding the key, and certificate-bound tokens (RFC 8705) with the
//! certificate Envoy forwards. Each refusal has its own test; proof checks
//! one by one are unit-tested in `src/dpop/proof_tests.rs`.

use portcullis_testkit::check::{Denied, Req, allowed, denied};
use portcullis_testkit::dpop::{DpopClient, b64_sha256};
use portcullis_testkit::in_process::InProcess;
use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
use serde_json::{Value, json};

struct Env {
    kc: FakeKeycloak,
    srv: InProcess,
    client: DpopClient,
    _dir: tempfile::TempDir,
}

/// The stand-in as the one issuer, with `issuers[0].dpop: <mode>`.
async fn env(mode: &str) -> Env {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n    dpop: {mode}\npolicy:\n  default: authenticated\n",
        kc.issuer()
    );
    let srv = InProcess::from_yaml(&yaml, dir.path(), false).await;
    Env {
        kc,
        srv,
        client: DpopClient::new(),
        _dir: dir,
    }
}

impl Env {
    /// A login token; `cnf` is added when given.
    fn token(&self, cnf: Option<Value>) -> String {
        let mut c = self.kc.claims("alice");
        c["aud"] = json!("portcullis");
        if let Some(cnf) = cnf {
            c["cnf"] = cnf;
        }
        self.kc.sign(&c, &SignOpts::default())
    }

    /// A token bound to this env's client key.
    fn bound(&self) -> String {
        self.token(Some(json!({"jkt": self.client.jkt()})))
    }
}

fn req() -> Req {
    Req::get("/api/v1/uploads/7").method("POST")
}

/// A 401 with a `DPoP` challenge naming `error` and the accepted algs.
fn assert_dpop_401(d: &Denied, error: &str, needle: &str) {
    assert_eq!((d.code, d.http, d.error()), (16, 401, error), "{d:?}");
    assert!(
        d.description().contains(needle),
        "{:?} lacks {needle:?}",
        d.description()
    );
    let www = d.www_authenticate.as_deref().unwrap_or("");
    assert!(www.starts_with("DPoP "), "{www}");
    assert!(www.contains(&format!("error=\"{error}\"")), "{www}");
    assert!(www.contains("algs=\"ES256"), "{www}");
}

#[tokio::test]
async fn a_bound_token_with_its_proof_is_allowed() {
    let e = env("allowed").await;
    let t = e.bound();
    let r = req();
    let proof = e.client.proof("POST", &r.url(), &t);
    let (h, _) = allowed(&e.srv.check(&r.dpop(&t, &proof)).await);
    assert_eq!(h["x-auth-subject"], "alice");
}

/// Keycloak 26 gives a DPoP-bound access token `typ: "DPoP"`, not
/// `Bearer` (tests/keycloak_dpop.rs sees it on the real server).
#[tokio::test]
async fn a_keycloak_dpop_typed_token_is_accepted_only_when_bound() {
    let e = env("allowed").await;
    let mut c = e.kc.claims("alice");
    c["aud"] = json!("portcullis");
    c["typ"] = json!("DPoP");
    c["cnf"] = json!({"jkt": e.client.jkt()});
    let t = e.kc.sign(&c, &SignOpts::default());
    let r = req();
    let proof = e.client.proof("POST", &r.url(), &t);
    let (h, _) = allowed(&e.srv.check(&r.clone().dpop(&t, &proof)).await);
    assert_eq!(h["x-auth-subject"], "alice");
    assert_dpop_401(
        &denied(&e.srv.check(&r.clone().bearer(&t)).await),
        "invalid_token",
        "DPoP-bound",
    );
    // `typ: DPoP` without `cnf.jkt` claims a binding it does not have.
    c.as_object_mut().unwrap().remove("cnf");
    let unbound = e.kc.sign(&c, &SignOpts::default());
    let d = denied(&e.srv.check(&r.bearer(&unbound)).await);
    assert_eq!((d.http, d.error()), (401, "invalid_token"), "{d:?}");
    assert!(d.description().contains("token type"), "{d:?}");
}

#[tokio::test]
async fn a_bound_token_sent_as_bearer_is_refused() {
    let e = env("allowed").await;
    let d = denied(&e.srv.check(&req().bearer(&e.bound())).await);
    assert_dpop_401(&d, "invalid_token", "DPoP-bound");
}

#[tokio::test]
async fn the_proof_is_checked_on_every_request_even_when_the_token_is_cached() {
    let e = env("allowed").await;
    let t = e.bound();
    let r = req();
    let first = e.client.proof("POST", &r.url(), &t);
    allowed(&e.srv.check(&r.clone().dpop(&t, &first)).await);
    // The token is now in the verified-token cache; the proof is not.
    let d = denied(
        &e.srv
            .check(&r.clone().header("authorization", &format!("DPoP {t}")))
            .await,
    );
    assert_dpop_401(&d, "invalid_dpop_proof", "missing");
    let d = denied(&e.srv.check(&r.clone().dpop(&t, &first)).await);
    assert_dpop_401(&d, "invalid_dpop_proof", "already used");
    let second = e.client.proof("POST", &r.url(), &t);
    allowed(&e.srv.check(&r.dpop(&t, &second)).await);
}

#[tokio::test]
async fn two_dpop_headers_are_refused() {
    let e = env("allowed").await;
    let t = e.bound();
    let r = req();
    let (p1, p2) = (
        e.client.proof("POST", &r.url(), &t),
        e.client.proof("POST", &r.url(), &t),
    );
    for raw in [false, true] {
        let mut two = r.clone().dpop(&t, &p1).header("dpop", &p2);
        if raw {
            two = two.raw();
        }
        let d = denied(&e.srv.check(&two).await);
        assert_dpop_401(&d, "invalid_dpop_proof", "exactly one");
    }
}

#[tokio::test]
async fn a_proof_for_another_method_or_url_is_refused() {
    let e = env("allowed").await;
    let t = e.bound();
    let r = req();
    let get = e.client.proof("GET", &r.url(), &t);
    assert_dpop_401(
        &denied(&e.srv.check(&r.clone().dpop(&t, &get)).await),
        "invalid_dpop_proof",
        "htm",
    );
    let other = e
        .client
        .proof("POST", "https://api.example.org/api/v1/other", &t);
    assert_dpop_401(
        &denied(&e.srv.check(&r.clone().dpop(&t, &other)).await),
        "invalid_dpop_proof",
        "htu",
    );
    // The query is not part of htu: a proof without it matches.
    let with_query = Req::get("/api/v1/uploads/7?part=2").method("POST");
    let p = e.client.proof("POST", &r.url(), &t);
    allowed(&e.srv.check(&with_query.dpop(&t, &p)).await);
}

#[tokio::test]
async fn a_stale_proof_is_refused() {
    let e = env("allowed").await;
    let t = e.bound();
    let r = req();
    let old = e.client.proof_with("POST", &r.url(), &t, |c| {
        c.insert("iat".into(), json!(chrono::Utc::now().timestamp() - 600));
    });
    assert_dpop_401(
        &denied(&e.srv.check(&r.dpop(&t, &old)).await),
        "invalid_dpop_proof",
        "iat",
    );
}

#[tokio::test]
async fn a_proof_for_another_token_is_refused() {
    let e = env("allowed").await;
    let (t, other) = (e.bound(), e.bound());
    let r = req();
    let p = e.client.proof("POST", &r.url(), &other);
    assert_ne!(b64_sha256(t.as_bytes()), b64_sha256(other.as_bytes()));
    assert_dpop_401(
        &denied(&e.srv.check(&r.dpop(&t, &p)).await),
        "invalid_dpop_proof",
        "ath",
    );
}

#[tokio::test]
async fn a_proof_signed_with_another_key_is_refused() {
    let e = env("allowed").await;
    let t = e.bound();
    let r = req();
    let thief = DpopClient::new();
    let p = thief.proof("POST", &r.url(), &t);
    assert_dpop_401(
        &denied(&e.srv.check(&r.dpop(&t, &p)).await),
        "invalid_dpop_proof",
        "cnf.jkt",
    );
}

#[tokio::test]
async fn an_unbound_token_with_the_dpop_scheme_is_refused() {
    let e = env("allowed").await;
    let t = e.token(None);
    let r = req();
    let p = e.client.proof("POST", &r.url(), &t);
    assert_dpop_401(
        &denied(&e.srv.check(&r.dpop(&t, &p)).await),
        "invalid_token",
        "not DPoP-bound",
    );
    // Allowed mode: the same token as a bearer token is fine.
    allowed(&e.srv.check(&req().bearer(&t)).await);
}

#[tokio::test]
async fn required_mode_refuses_plain_bearer_tokens() {
    let e = env("required").await;
    let d = denied(&e.srv.check(&req().bearer(&e.token(None))).await);
    assert_dpop_401(&d, "invalid_token", "must be DPoP-bound");
    let t = e.bound();
    let p = e.client.proof("POST", &req().url(), &t);
    allowed(&e.srv.check(&req().dpop(&t, &p)).await);
}

#[tokio::test]
async fn off_mode_refuses_the_dpop_scheme_and_bound_tokens_stay_unusable() {
    let e = env("off").await;
    let t = e.bound();
    let p = e.client.proof("POST", &req().url(), &t);
    assert_dpop_401(
        &denied(&e.srv.check(&req().dpop(&t, &p)).await),
        "invalid_token",
        "not enabled",
    );
    assert_dpop_401(
        &denied(&e.srv.check(&req().bearer(&t)).await),
        "invalid_token",
        "DPoP-bound",
    );
}

#[tokio::test]
async fn a_pat_with_the_dpop_scheme_is_refused() {
    let e = env("allowed").await;
    let pat = portcullis::pat::format::generate("pat_");
    let p = e.client.proof("POST", &req().url(), &pat);
    assert_dpop_401(
        &denied(&e.srv.check(&req().dpop(&pat, &p)).await),
        "invalid_token",
        "personal access token",
    );
}

#[tokio::test]
async fn a_malformed_cnf_makes_the_token_unusable() {
    let e = env("allowed").await;
    for cnf in [json!("jkt"), json!({"jkt": 5}), json!({"jkt": ""})] {
        let t = e.token(Some(cnf.clone()));
        let d = denied(&e.srv.check(&req().bearer(&t)).await);
        assert_eq!((d.http, d.error()), (401, "invalid_token"), "{cnf}: {d:?}");
    }
}

// === certificate-bound tokens (RFC 8705) ===

/// Envoy's `source.certificate` for a DER body: URL-encoded PEM.
fn envoy_cert(der: &[u8]) -> String {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    pem.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_certificate_bound_token_needs_that_certificate() {
    let e = env("off").await;
    let (mine, other) = (
        b"client certificate one".as_slice(),
        b"another one".as_slice(),
    );
    let t = e.token(Some(json!({"x5t#S256": b64_sha256(mine)})));
    let (h, _) = allowed(
        &e.srv
            .check(&req().bearer(&t).peer_certificate(&envoy_cert(mine)))
            .await,
    );
    assert_eq!(h["x-auth-subject"], "alice");
    let d = denied(
        &e.srv
            .check(&req().bearer(&t).peer_certificate(&envoy_cert(other)))
            .await,
    );
    assert_eq!((d.http, d.error()), (401, "invalid_token"), "{d:?}");
    assert!(d.description().contains("does not match"), "{d:?}");
    let d = denied(&e.srv.check(&req().bearer(&t)).await);
    assert_eq!((d.http, d.error()), (401, "invalid_token"), "{d:?}");
    assert!(d.description().contains("no client certificate"), "{d:?}");
}
