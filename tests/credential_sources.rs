//! Where a credential may come from, over real gRPC: `Authorization: Basic`
//! with a PAT as the password, a configured header, a query parameter on
//! routes that opt in; each refusal, and two credentials in one request.

use std::time::Duration;

use portcullis::server::Running;
use portcullis_testkit::check::{Req, allowed, check, denied, serve_yaml, wait_ready};
use portcullis_testkit::in_process::create_pat;
use portcullis_testkit::keycloak::FakeKeycloak;

struct Env {
    kc: FakeKeycloak,
    srv: Running,
    _dir: tempfile::TempDir,
}

const ROUTES: &str = r#"
policy:
  default: authenticated
  routes:
    - name: downloads
      match: { path: { prefix: /dl } }
      query_credential: true
"#;

async fn env(credentials: &str) -> Env {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n{ROUTES}{credentials}",
        kc.issuer()
    );
    let srv = serve_yaml(&yaml, dir.path(), false).await;
    wait_ready(&srv, Duration::from_secs(20)).await;
    Env { kc, srv, _dir: dir }
}

impl Env {
    async fn pat(&self, user: &str) -> String {
        let store = self.srv.engine.load().pats().store().clone();
        let name = format!("{user}-name");
        create_pat(&store, user, &name, &self.kc.issuer(), &["a:read"])
            .await
            .0
    }

    fn jwt(&self) -> String {
        self.kc.token("user-1")
    }

    async fn check(&self, req: Req) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        check(self.srv.grpc_addr, &req).await
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A 401 whose description contains `needle`.
fn assert_401(resp: &envoy_types::ext_authz::v3::pb::CheckResponse, needle: &str) {
    let d = denied(resp);
    assert_eq!((d.code, d.http), (16, 401), "{d:?}");
    assert!(d.description().contains(needle), "{needle}: {d:?}");
}

const BASIC: &str = "credentials:\n  basic: { enabled: true }\n";

#[tokio::test]
async fn basic_with_a_pat_password_is_allowed_whatever_the_username() {
    let e = env(BASIC).await;
    let raw = e.pat("alice").await;
    for user in ["git", "", "x-access-token"] {
        let (h, _) = allowed(
            &e.check(Req::get("/a").header("authorization", &basic(user, &raw)))
                .await,
        );
        assert_eq!(h["x-auth-method"], "pat");
        assert_eq!(h["x-auth-subject"], "alice");
    }
}

#[tokio::test]
async fn basic_never_carries_a_jwt() {
    let e = env(BASIC).await;
    let resp = e
        .check(Req::get("/a").header("authorization", &basic("u", &e.jwt())))
        .await;
    assert_401(&resp, "only a personal access token");
    // The same JWT as Bearer is fine.
    allowed(&e.check(Req::get("/a").bearer(&e.jwt())).await);
}

#[tokio::test]
async fn basic_is_refused_when_not_enabled() {
    let e = env("").await;
    let raw = e.pat("alice").await;
    let resp = e
        .check(Req::get("/a").header("authorization", &basic("git", &raw)))
        .await;
    assert_401(&resp, "unsupported authorization scheme");
}

#[tokio::test]
async fn basic_username_is_checked_where_configured() {
    let e = env("credentials:\n  basic: { enabled: true, check_username: true }\n").await;
    let raw = e.pat("alice").await;
    allowed(
        &e.check(Req::get("/a").header("authorization", &basic("alice-name", &raw)))
            .await,
    );
    let resp = e
        .check(Req::get("/a").header("authorization", &basic("mallory", &raw)))
        .await;
    assert_401(&resp, "not the token owner's");
}

#[tokio::test]
async fn basic_with_a_bad_pat_is_refused() {
    let e = env(BASIC).await;
    let resp = e
        .check(Req::get("/a").header("authorization", &basic("git", "pat_nope")))
        .await;
    assert_401(&resp, "malformed token");
}

#[tokio::test]
async fn configured_header_carries_a_pat_or_a_jwt() {
    let e = env("credentials:\n  headers: [x-api-key]\n").await;
    let raw = e.pat("bob").await;
    let (h, _) = allowed(&e.check(Req::get("/a").header("x-api-key", &raw)).await);
    assert_eq!(h["x-auth-subject"], "bob");
    let (h, _) = allowed(
        &e.check(Req::get("/a").header("X-Api-Key", &e.jwt()).raw())
            .await,
    );
    assert_eq!(h["x-auth-method"], "jwt");
    assert_401(
        &e.check(Req::get("/a").header("x-api-key", "pat_forged"))
            .await,
        "malformed token",
    );
}

#[tokio::test]
async fn unconfigured_header_is_not_a_credential() {
    let e = env("").await;
    let raw = e.pat("bob").await;
    let d = denied(&e.check(Req::get("/a").header("x-api-key", &raw)).await);
    assert_eq!(d.http, 401);
    assert_eq!(d.description(), "missing bearer token");
}

#[tokio::test]
async fn query_parameter_on_a_route_that_opts_in() {
    let e = env("").await;
    let raw = e.pat("carol").await;
    let (h, _) = allowed(
        &e.check(Req::get(&format!(
            "/dl/report.pdf?access_token={raw}&inline=1"
        )))
        .await,
    );
    assert_eq!(h["x-auth-subject"], "carol");
}

#[tokio::test]
async fn query_parameter_is_ignored_where_the_route_does_not_opt_in() {
    let e = env("").await;
    let raw = e.pat("carol").await;
    let d = denied(&e.check(Req::get(&format!("/a?access_token={raw}"))).await);
    assert_eq!(d.http, 401);
    assert_eq!(d.description(), "missing bearer token");
}

#[tokio::test]
async fn query_parameter_name_is_configurable_and_bad_values_are_refused() {
    let e = env("credentials:\n  query_param: token\n").await;
    let raw = e.pat("carol").await;
    allowed(&e.check(Req::get(&format!("/dl/x?token={raw}"))).await);
    // The default name is no longer read.
    let d = denied(
        &e.check(Req::get(&format!("/dl/x?access_token={raw}")))
            .await,
    );
    assert_eq!(d.description(), "missing bearer token");
    assert_401(
        &e.check(Req::get(&format!("/dl/x?token={raw}&token={raw}")))
            .await,
        "more than one credential",
    );
    assert_401(&e.check(Req::get("/dl/x?token=")).await, "empty token");
}

#[tokio::test]
async fn two_credentials_in_one_request_are_refused() {
    let e = env("credentials:\n  basic: { enabled: true }\n  headers: [x-api-key]\n").await;
    let a = e.pat("alice").await;
    let b = e.pat("bob").await;
    let cases = [
        // Basic and Bearer: Envoy joins the two Authorization headers.
        Req::get("/a")
            .header("authorization", &basic("git", &a))
            .header("authorization", &format!("Bearer {b}")),
        Req::get("/a").bearer(&a).header("x-api-key", &b),
        Req::get("/a")
            .header("authorization", &basic("git", &a))
            .header("x-api-key", &b),
        Req::get(&format!("/dl/x?access_token={a}")).bearer(&b),
        Req::get(&format!("/dl/x?access_token={a}")).header("x-api-key", &b),
        // Even the same token twice.
        Req::get("/a").bearer(&a).header("x-api-key", &a),
    ];
    for req in cases {
        let resp = e.check(req.clone()).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (16, 401), "{req:?}: {d:?}");
        assert!(d.description().contains("more than one"), "{d:?}");
        assert!(!d.description().contains("pat_"), "{d:?}");
    }
}
