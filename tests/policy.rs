//! Per-route policy through the Check handler in-process (dev issuer +
//! SQLite, no gRPC), the `check` and `config check` commands, and Keycloak
//! role mapping.

use std::time::Duration;

use portcullis::dev::{DevIssuer, DevTokenSpec};

use portcullis_testkit::check::{Req, allowed, assert_invalid_token, denied};
use portcullis_testkit::in_process::{InProcess, create_pat};
use serde_json::json;

const POLICY: &str = r#"
policy:
  default: deny
  routes:
    - name: public
      match: { path: { prefix: /public } }
      auth: none
    - name: admin
      match: { path: { prefix: /admin } }
      require: { all_of: ["admin:all"] }
    - name: uploads-read
      match:
        methods: [GET]
        path: { template: "/api/v1/uploads/{id}/files/{*rest}" }
      require: { all_of: ["uploads:read"] }
    - name: uploads-write
      match:
        methods: [PUT, POST]
        path: { template: "/api/v1/uploads/{id}/files/{*rest}" }
      require: { all_of: ["uploads:write"], any_of: ["team:a", "team:b"] }
    - name: tokens
      match: { path: { prefix: /api/v1/tokens } }
      credentials: [jwt]
      require: { all_of: ["tokens:manage"] }
    - name: reports-internal
      match: { hosts: ["internal.example.org"], path: { prefix: /reports } }
      credentials: [service_account]
    - name: reports
      match: { path: { prefix: /reports } }
      require: { all_of: ["reports:read"] }
    - name: by-name
      match: { path: { exact: /never-matched-by-path } }
      require: { all_of: ["named:read"] }
"#;

struct Env {
    srv: InProcess,
    dev: DevIssuer,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let srv = InProcess::from_yaml(POLICY, dir.path(), true).await;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    Env { srv, dev, dir }
}

impl Env {
    fn token(&self, user: &str, scopes: &[&str]) -> String {
        self.dev
            .mint(&DevTokenSpec {
                sub: user.into(),
                username: Some(user.into()),
                email: None,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_in: Duration::from_secs(600),
                client: "web".into(),
            })
            .unwrap()
    }

    async fn pat(&self, scopes: &[&str]) -> String {
        let store = self.srv.store();
        let idp = self.dev.issuer();
        create_pat(&store, "alice", "alice", idp, scopes).await.0
    }

    async fn check(&self, req: Req) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        self.srv.check(&req).await
    }
}

fn assert_forbidden(
    resp: &envoy_types::ext_authz::v3::pb::CheckResponse,
    needle: &str,
) -> portcullis_testkit::check::Denied {
    let d = denied(resp);
    assert_eq!(
        (d.code, d.http, d.error()),
        (7, 403, "insufficient_scope"),
        "{d:?}"
    );
    assert!(
        d.description().contains(needle),
        "{:?} lacks {needle:?}",
        d.description()
    );
    d
}

#[tokio::test]
async fn required_scope_allows_and_missing_scope_is_403_with_scope_attribute() {
    let e = env().await;
    let path = "/api/v1/uploads/42/files/a/b.txt?download=1";
    let ok = e.token("alice", &["uploads:read"]);
    let (h, _) = allowed(&e.check(Req::get(path).bearer(&ok)).await);
    assert_eq!(h["x-auth-scopes"], "uploads:read");

    let wild = e.token("alice", &["uploads:*"]);
    allowed(&e.check(Req::get(path).bearer(&wild)).await);

    let nope = e.token("alice", &["reports:read"]);
    let d = assert_forbidden(
        &e.check(Req::get(path).bearer(&nope)).await,
        "lacks a scope",
    );
    let www = d.www_authenticate.unwrap();
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");
    assert!(www.contains("scope=\"uploads:read\""), "{www}");
}

#[tokio::test]
async fn any_of_needs_one_of_them() {
    let e = env().await;
    let path = "/api/v1/uploads/42/files/x";
    let t = e.token("alice", &["uploads:write", "team:b"]);
    allowed(&e.check(Req::get(path).method("PUT").bearer(&t)).await);
    let t = e.token("alice", &["uploads:write"]);
    let d = assert_forbidden(
        &e.check(Req::get(path).method("PUT").bearer(&t)).await,
        "scope",
    );
    assert!(
        d.www_authenticate
            .unwrap()
            .contains("scope=\"uploads:write team:a team:b\"")
    );
}

#[tokio::test]
async fn pat_on_a_jwt_only_route_is_refused() {
    let e = env().await;
    let p = e.pat(&["uploads:read"]).await;
    assert_forbidden(
        &e.check(Req::get("/api/v1/tokens").bearer(&p)).await,
        "credential kind pat is not accepted on route tokens (accepted: jwt)",
    );
}

#[tokio::test]
async fn service_account_only_route() {
    let e = env().await;
    let sa = e.token("service-account-ci", &[]);
    let (h, _) = allowed(
        &e.check(
            Req::get("/reports/1")
                .host("internal.example.org")
                .bearer(&sa),
        )
        .await,
    );
    assert_eq!(h["x-auth-method"], "service_account");
    let user = e.token("alice", &["reports:read"]);
    assert_forbidden(
        &e.check(
            Req::get("/reports/1")
                .host("internal.example.org:443")
                .bearer(&user),
        )
        .await,
        "credential kind jwt is not accepted",
    );
    // The same path on another host falls to the less specific route.
    allowed(
        &e.check(Req::get("/reports/1").host("api.example.org").bearer(&user))
            .await,
    );
}

#[tokio::test]
async fn no_route_is_denied_by_default() {
    let e = env().await;
    let t = e.token("alice", &["*:*"]);
    assert_forbidden(
        &e.check(Req::get("/elsewhere").bearer(&t)).await,
        "no route matches",
    );
    // Without a credential it is a 401 first.
    let d = denied(&e.check(Req::get("/elsewhere")).await);
    assert_eq!((d.code, d.http), (16, 401));
}

#[tokio::test]
async fn public_route_without_credential_strips_spoofed_identity() {
    let e = env().await;
    let resp = e
        .check(Req::get("/public/info").header("x-auth-subject", "admin"))
        .await;
    let (h, removed) = allowed(&resp);
    assert!(h.is_empty());
    assert_eq!(removed, vec!["x-auth-subject"]);
}

#[tokio::test]
async fn public_route_still_validates_a_presented_credential() {
    let e = env().await;
    let t = e.token("alice", &[]);
    let (h, _) = allowed(&e.check(Req::get("/public/info").bearer(&t)).await);
    assert_eq!(h["x-auth-subject"], "alice");
    assert_invalid_token(
        &e.check(Req::get("/public/info").bearer("garbage.token.here"))
            .await,
        "malformed",
    );
}

#[tokio::test]
async fn dot_segments_and_encoding_do_not_bypass_a_route() {
    let e = env().await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/public/./../admin",
        "//admin",
        "/public/..%2fadmin",
    ] {
        let d = denied(&e.check(Req::get(path)).await);
        assert_ne!(d.code, 0, "{path}");
        // Either a 401 (it is the admin route) or a 403 (path rejected): never public.
        assert!(
            matches!((d.code, d.http), (16, 401) | (7, 403)),
            "{path}: {d:?}"
        );
    }
    let t = e.token("alice", &["uploads:read"]);
    let d = denied(&e.check(Req::get("/public/%2e%2e/admin").bearer(&t)).await);
    assert_eq!(
        (d.code, d.http),
        (7, 403),
        "the admin route's scope applies"
    );
    let d = denied(&e.check(Req::get("/admin%2Fx").bearer(&t)).await);
    assert_eq!((d.code, d.http), (7, 403));
    assert!(d.description().contains("path rejected"), "{d:?}");
}

#[tokio::test]
async fn context_extensions_name_a_route_and_add_scopes() {
    let e = env().await;
    let t = e.token("alice", &["named:read"]);
    allowed(
        &e.check(
            Req::get("/whatever")
                .bearer(&t)
                .context("portcullis.route", "by-name"),
        )
        .await,
    );
    let t2 = e.token("alice", &["reports:read"]);
    assert_forbidden(
        &e.check(
            Req::get("/whatever")
                .bearer(&t2)
                .context("portcullis.route", "by-name"),
        )
        .await,
        "scope",
    );
    // Extra required scopes on top of the matched route.
    let req = Req::get("/reports/x")
        .bearer(&t2)
        .context("portcullis.required_scopes", "reports:read audit:read");
    let d = assert_forbidden(&e.check(req).await, "scope");
    assert!(d.www_authenticate.unwrap().contains("audit:read"));
    let t3 = e.token("alice", &["reports:read", "audit:read"]);
    let req = Req::get("/reports/x")
        .bearer(&t3)
        .context("portcullis.required_scopes", "reports:read audit:read");
    allowed(&e.check(req).await);
}

#[tokio::test]
async fn unknown_route_name_from_envoy_is_503() {
    let e = env().await;
    let t = e.token("alice", &["*:*"]);
    let d = denied(
        &e.check(
            Req::get("/x")
                .bearer(&t)
                .context("portcullis.route", "nope"),
        )
        .await,
    );
    assert_eq!((d.code, d.http), (14, 503));
    let d = denied(
        &e.check(
            Req::get("/reports/x")
                .bearer(&t)
                .context("portcullis.required_scopes", "bad*:x"),
        )
        .await,
    );
    assert_eq!(
        (d.code, d.http),
        (14, 503),
        "a malformed Envoy scope list is a misconfiguration"
    );
}

#[tokio::test]
async fn keycloak_roles_map_to_scopes() {
    use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
issuers:
  - issuer: {}
    audiences: [portcullis]
    scopes:
      from: ["claim:scope", realm_roles, "client_roles:api"]
      map:
        uploader: [uploads:read, uploads:write]
      default: [self:read]
policy:
  routes:
    - name: up
      match: {{ path: {{ prefix: /up }} }}
      require: {{ all_of: [uploads:write, self:read, reports:read] }}
"#,
        kc.issuer()
    );
    // Keys are fetched from the stand-in before `from_yaml` returns.
    let srv = InProcess::from_yaml(&yaml, dir.path(), false).await;
    let mut c = kc.claims("u1");
    c["realm_access"] = json!({"roles": ["uploader", "offline_access"]});
    c["resource_access"] = json!({"api": {"roles": ["reports:read"]}});
    c["scope"] = json!("openid profile");
    let t = kc.sign(&c, &SignOpts::default());
    let (h, _) = allowed(&srv.check(&Req::get("/up").bearer(&t)).await);
    assert_eq!(
        h["x-auth-scopes"],
        "reports:read self:read uploads:read uploads:write"
    );
}

#[test]
fn config_check_names_bad_policy_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
policy:
  routes:
    - name: a
      match: { path: { prefix: /a } }
      require: { all_of: ["uploads:*"] }
    - name: a
      match: { path: { prefix: /b } }
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.routes[0].require.all_of[0]"), "{err}");
    assert!(err.contains("wildcard"), "{err}");
    assert!(err.contains("policy.routes[1].name"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "check", "--config"])
        .arg(path.with_file_name("missing.yaml"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));

    std::fs::write(
        &path,
        "policy:\n  routes:\n    - name: x\n      credentials: [cookie]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cookie") && err.contains("service_account"),
        "{err}"
    );
}

#[tokio::test]
async fn check_command_prints_the_decision() {
    let e = env().await;
    let cfg = e.dir.path().join("policy.yaml");
    std::fs::write(&cfg, POLICY).unwrap();
    let t = e.token("alice", &["uploads:read"]);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--dev", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(e.dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--path", "/api/v1/uploads/1/files/x", "--token", &t]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("route:       uploads-read"), "{text}");
    assert!(text.contains("all_of=[uploads:read]"), "{text}");
    assert!(text.contains("ALLOW"), "{text}");
    let out = run(&["--path", "/admin", "--token", &t]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DENY 403"), "{text}");
}
