//! Policy holes, closed, through the Check handler in-process (dev issuer +
//! SQLite, no gRPC; tests/e2e.rs proves the same through Envoy): a route
//! named by Envoy keeps its own method and host limits, Envoy's required
//! scopes apply on public routes, and `;` matrix parameters or letter case
//! do not move a request to a broader route.

use std::time::Duration;

use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis_testkit::check::{Req, allowed, denied};
use portcullis_testkit::in_process::InProcess;

const POLICY: &str = r#"
policy:
  default: deny
  routes:
    - name: public
      match: { path: { prefix: /public } }
      auth: none
    - name: uploads-write
      match:
        methods: [POST, PUT, PATCH, DELETE]
        path: { prefix: /api/v1/uploads }
      require: { all_of: ["uploads:write"] }
    - name: uploads
      match:
        methods: [GET, HEAD]
        path: { prefix: /api/v1/uploads }
      require: { all_of: ["uploads:read"] }
    - name: internal
      match:
        hosts: ["internal.example.org", "*.corp.example.org"]
        path: { prefix: /internal }
      require: { all_of: ["internal:read"] }
    - name: api
      match: { path: { prefix: /api } }
"#;

struct Env {
    srv: InProcess,
    dev: DevIssuer,
    _dir: tempfile::TempDir,
}

/// A server with [`POLICY`] plus `extra` keys appended under `policy:`.
async fn env_with(extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("{POLICY}{extra}");
    let srv = InProcess::from_yaml(&yaml, dir.path(), true).await;
    let dev = DevIssuer::load_existing(dir.path(), None).unwrap();
    Env {
        srv,
        dev,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with("").await
}

impl Env {
    fn token(&self, scopes: &[&str]) -> String {
        self.dev
            .mint(&DevTokenSpec {
                sub: "alice".into(),
                username: Some("alice".into()),
                email: None,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_in: Duration::from_secs(600),
                client: "web".into(),
            })
            .unwrap()
    }

    async fn check(&self, req: Req) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        self.srv.check(&req).await
    }

    /// (gRPC code, HTTP status); (0, 200) when allowed.
    async fn status(&self, req: Req) -> (i32, i32) {
        let resp = self.check(req).await;
        if resp.status.as_ref().is_some_and(|s| s.code == 0) {
            allowed(&resp);
            return (0, 200);
        }
        let d = denied(&resp);
        (d.code, d.http)
    }
}

fn named(path: &str, route: &str) -> Req {
    Req::get(path).context("portcullis.route", route)
}

// --- a named route applies its own match ----------------------------

#[tokio::test]
async fn item1_named_route_applies_methods() {
    let e = env().await;
    let read = e.token(&["uploads:read"]);
    // What the old shipped Envoy config did: every method named `uploads`.
    for m in ["DELETE", "POST", "PUT", "PATCH", "OPTIONS"] {
        let resp = e
            .check(
                named("/api/v1/uploads/123", "uploads")
                    .method(m)
                    .bearer(&read),
            )
            .await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{m}: {d:?}");
        assert!(
            d.description()
                .contains(&format!("method {m} is not allowed on route uploads")),
            "{m}: {d:?}"
        );
    }
    for m in ["GET", "HEAD", "get"] {
        let req = named("/api/v1/uploads/123", "uploads").method(m);
        assert_eq!(e.status(req.bearer(&read)).await, (0, 200), "{m}");
    }
}

#[tokio::test]
async fn item1_named_route_method_mismatch_is_403_even_without_credential() {
    let e = env().await;
    // Never a 401 that invites a retry with a token, never a fall-through.
    let req = named("/api/v1/uploads/123", "uploads").method("DELETE");
    assert_eq!(e.status(req).await, (7, 403));
}

#[tokio::test]
async fn item1_named_route_applies_hosts() {
    let e = env().await;
    let t = e.token(&["internal:read"]);
    for host in [
        "internal.example.org",
        "INTERNAL.example.org:8443",
        "a.corp.example.org",
        "a.b.corp.example.org.",
    ] {
        let req = named("/internal/x", "internal").host(host).bearer(&t);
        assert_eq!(e.status(req).await, (0, 200), "{host}");
    }
    for host in [
        "api.example.org",
        "corp.example.org",
        "xcorp.example.org",
        "internal.example.org.evil.org",
    ] {
        let req = named("/internal/x", "internal").host(host).bearer(&t);
        let resp = e.check(req).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{host}: {d:?}");
        assert!(
            d.description()
                .contains("host is not allowed on route internal"),
            "{host}: {d:?}"
        );
    }
}

#[tokio::test]
async fn item1_named_write_route_needs_the_write_scope() {
    let e = env().await;
    let read = e.token(&["uploads:read"]);
    let write = e.token(&["uploads:write"]);
    let req = || named("/api/v1/uploads/123", "uploads-write").method("DELETE");
    assert_eq!(e.status(req().bearer(&read)).await, (7, 403));
    assert_eq!(e.status(req().bearer(&write)).await, (0, 200));
}

// --- Envoy's required scopes on a public route ---------------------

#[tokio::test]
async fn item2_required_scopes_on_public_route_need_a_credential() {
    let e = env().await;
    for req in [
        Req::get("/public/x"),
        named("/public/x", "public"),
        named("/anything", "public"),
    ] {
        let req = req.context("portcullis.required_scopes", "admin:write");
        let d = denied(&e.check(req.clone()).await);
        assert_eq!((d.code, d.http), (16, 401), "{req:?}: {d:?}");
    }
    // Without required scopes the route stays public.
    assert_eq!(e.status(Req::get("/public/x")).await, (0, 200));
}

#[tokio::test]
async fn item2_required_scopes_on_public_route_need_the_scopes() {
    let e = env().await;
    let req = || Req::get("/public/x").context("portcullis.required_scopes", "admin:write");
    let other = e.token(&["uploads:read"]);
    let resp = e.check(req().bearer(&other)).await;
    let d = denied(&resp);
    assert_eq!((d.code, d.http), (7, 403), "{d:?}");
    assert!(
        d.www_authenticate
            .as_deref()
            .is_some_and(|w| w.contains("scope=\"admin:write\"")),
        "{d:?}"
    );
    let admin = e.token(&["admin:write"]);
    let (h, _) = allowed(&e.check(req().bearer(&admin)).await);
    assert_eq!(h["x-auth-subject"], "alice");
}

// --- `;` parameters and case variants ------------------------------

/// Variants of `POST /api/v1/uploads/123` that Tomcat/Spring serve as that
/// path; before the fix they missed `uploads-write` and matched `api`.
const MATRIX_VARIANTS: [&str; 7] = [
    "/api/v1/uploads;x/123",
    "/api/v1/uploads;jsessionid=abc/123",
    "/api/v1/uploads%3Bx/123",
    "/api/v1/uploads%3bx/123",
    "/api;x/v1/uploads/123",
    "/api/v1;/uploads/123",
    "/api/v1/uploads/123;x",
];

#[tokio::test]
async fn item7_matrix_params_are_rejected_by_default() {
    let e = env().await;
    let t = e.token(&["uploads:read"]);
    for path in MATRIX_VARIANTS {
        let resp = e.check(Req::get(path).method("POST").bearer(&t)).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{path}: {d:?}");
        assert!(d.description().contains("';' parameters"), "{path}: {d:?}");
    }
    // A `;` in a query string is not a path parameter.
    let w = e.token(&["uploads:write"]);
    let req = Req::get("/api/v1/uploads/123?a=1;b=2").method("POST");
    assert_eq!(e.status(req.bearer(&w)).await, (0, 200));
}

#[tokio::test]
async fn item7_matrix_params_strip_matches_the_bare_segment() {
    let e = env_with("  matrix_params: strip\n").await;
    let read = e.token(&["uploads:read"]);
    let write = e.token(&["uploads:write"]);
    for path in MATRIX_VARIANTS
        .into_iter()
        .chain(["/api/v1/;x/uploads/123"])
    {
        let post = || Req::get(path).method("POST");
        let resp = e.check(post().bearer(&read)).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{path}: {d:?}");
        assert!(
            d.www_authenticate
                .as_deref()
                .is_some_and(|w| w.contains("scope=\"uploads:write\"")),
            "{path}: {d:?}"
        );
        assert_eq!(e.status(post().bearer(&write)).await, (0, 200), "{path}");
    }
    // Dot segments with parameters stay refused (Tomcat resolves `..;x` as `..`).
    let d = denied(&e.check(Req::get("/public/..;x/api/v1/uploads/1")).await);
    assert_eq!((d.code, d.http), (7, 403), "{d:?}");
}

#[tokio::test]
async fn item7_case_variants_are_denied_by_default() {
    let e = env().await;
    let t = e.token(&["uploads:read"]);
    // Case-sensitive (default): `/API/...` matches no route → default deny.
    // (`/api/V1/...` would match the `/api` prefix route: upstreams that
    // fold case need `case_insensitive_paths`, tested below.)
    for path in ["/API/v1/uploads/123", "/Api/v1/uploads/123"] {
        let resp = e.check(Req::get(path).method("POST").bearer(&t)).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{path}: {d:?}");
        assert!(d.description().contains("no route matches"), "{d:?}");
    }
}

#[tokio::test]
async fn item7_case_insensitive_paths_match_the_lower_case_route() {
    let e = env_with("  case_insensitive_paths: true\n").await;
    let read = e.token(&["uploads:read"]);
    let write = e.token(&["uploads:write"]);
    for path in [
        "/API/V1/UPLOADS/123",
        "/Api/v1/Uploads/123",
        "/api/V1/Uploads/123",
        "/api/v1/UPLOADS%2f",
        "/API/V1/UPLOADS%3Bx/123",
    ] {
        let post = || Req::get(path).method("POST");
        let resp = e.check(post().bearer(&read)).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{path}: {d:?}");
        if !path.contains('%') {
            assert_eq!(e.status(post().bearer(&write)).await, (0, 200), "{path}");
        }
    }
    // Reads of a case variant need the read scope, and get it.
    let req = Req::get("/API/V1/UPLOADS/123").bearer(&read);
    assert_eq!(e.status(req).await, (0, 200));
}

#[test]
fn item7_bad_path_option_values_name_the_key() {
    use portcullis::config::{Config, MapEnv};
    let err = Config::from_yaml_str("policy:\n  matrix_params: keep\n", &MapEnv::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy.matrix_params"), "{err}");
    assert!(err.contains("strip") && err.contains("reject"), "{err}");
    let err = Config::from_yaml_str(
        "policy:\n  case_insensitive_paths: sometimes\n",
        &MapEnv::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("policy.case_insensitive_paths"), "{err}");
}

// --- review: a named route still refuses paths normalisation refuses ------

/// Paths portcullis refuses when it matches them itself (403): a dot
/// segment with `;` parameters (Tomcat/Spring resolve `..;x` as `..`), an
/// encoded slash, NUL, `..` above the root, `;` parameters under the default
/// `matrix_params: reject`. Envoy naming the route must not wave them
/// through: Envoy decodes `%2e%2e;` without resolving it, so
/// `/api/v1/uploads/%2e%2e;/users/1` lands on the `uploads` route and
/// reaches the app as `/api/v1/uploads/..;/users/1` (`/api/v1/users/1`).
const NAMED_BAD_PATHS: [&str; 7] = [
    "/api/v1/uploads/..;/users/1",
    "/api/v1/uploads/%2e%2e;/users/1",
    "/api/v1/uploads/x/.;/..;x/users/1",
    "/api/v1/uploads/x%2F..%2F..%2Fusers/1",
    "/api/v1/uploads/x%00",
    "/api/v1/uploads/../../../../x",
    "/api/v1/uploads/1;jsessionid=abc",
];

#[tokio::test]
async fn review_named_route_refuses_paths_normalisation_refuses() {
    let e = env().await;
    let read = e.token(&["uploads:read"]);
    for path in NAMED_BAD_PATHS {
        let resp = e.check(named(path, "uploads").bearer(&read)).await;
        let d = denied(&resp);
        assert_eq!((d.code, d.http), (7, 403), "{path}: {d:?}");
        assert!(
            d.description().contains("request path rejected"),
            "{path}: {d:?}"
        );
    }
    // Without a credential too: refused, not a 401 inviting a retry.
    let d = denied(&e.check(named(NAMED_BAD_PATHS[1], "uploads")).await);
    assert_eq!((d.code, d.http), (7, 403), "{d:?}");
    // A clean path on the named route is unaffected.
    let req = named("/api/v1/uploads/1", "uploads").bearer(&read);
    assert_eq!(e.status(req).await, (0, 200));
}

#[tokio::test]
async fn review_named_route_follows_matrix_params_strip() {
    let e = env_with("  matrix_params: strip\n").await;
    let read = e.token(&["uploads:read"]);
    // Stripped parameters are fine on a named route, as on a matched one...
    let req = named("/api/v1/uploads/1;jsessionid=abc", "uploads").bearer(&read);
    assert_eq!(e.status(req).await, (0, 200));
    // ...dot segments with parameters never are.
    for path in &NAMED_BAD_PATHS[..3] {
        let d = denied(&e.check(named(path, "uploads").bearer(&read)).await);
        assert_eq!((d.code, d.http), (7, 403), "{path}: {d:?}");
    }
}
