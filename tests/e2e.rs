//! End to end through a real Envoy (deploy/envoy.yaml as shipped, on free
//! ports): client → Envoy → ext_authz → portcullis (in-process, `--dev`) →
//! an echo upstream that reports what it received.
//!
//! Needs the Envoy binary from `scripts/install-envoy` (or
//! `$PORTCULLIS_ENVOY`); without it every test here fails saying so.
//!
//! Every test is bounded (`bounded`), and every wait polls a signal (Envoy's
//! `/ready`, a status change) with a deadline; none sleeps to synchronise.
//!
//! A PAT is allowed and, once revoked, denied (`pat_is_allowed_then_revoked`).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use portcullis::config::{Config, MapEnv};
use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis::server::{Running, ServeOptions, start};
use portcullis_testkit::echo::{Echo, Seen};
use portcullis_testkit::envoy::{Envoy, Response};
use portcullis_testkit::in_process::create_pat;
use portcullis_testkit::wait::poll_until;

/// portcullis config for these tests (plus `--dev`: the built-in issuer).
/// Envoy's uploads routes name the policy route `uploads` (GET, HEAD) or
/// `uploads-write` (other methods) through `context_extensions` and add
/// `portcullis.required_scopes: uploads:read` / `uploads:write`.
const E2E_CONFIG: &str = r#"
# The PATs here belong to users at https://idp.example (no JWT issuer).
pat:
  owner_issuers: ["https://idp.example"]
policy:
  default: authenticated
  routes:
    - name: health
      match: { path: { exact: /healthz } }
      auth: none
    - name: uploads
      match:
        methods: [GET, HEAD]
        path: { prefix: /api/v1/uploads }
      require: { all_of: ["uploads:read"] }
    - name: uploads-write
      match: { path: { prefix: /api/v1/uploads } }
      require: { all_of: ["uploads:write"] }
"#;

/// Upper bound for any one test.
const TEST_BUDGET: Duration = Duration::from_secs(90);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_BUDGET, f)
        .await
        .expect("test exceeded its time budget");
}

/// Starts portcullis in `--dev` mode on the given addresses (port 0 = any).
async fn try_serve_at(data_dir: &Path, grpc: &str, http: &str) -> anyhow::Result<Running> {
    let mut cfg = Config::from_yaml_str(E2E_CONFIG, &MapEnv::default()).expect("config parses");
    cfg.listen.grpc = grpc.parse().unwrap();
    cfg.listen.http = http.parse().unwrap();
    cfg.data_dir = data_dir.to_path_buf();
    cfg.apply_dev_defaults(!E2E_CONFIG.trim().is_empty());
    start(ServeOptions {
        config: cfg,
        dev: true,
    })
    .await
}

async fn serve_at(data_dir: &Path, grpc: &str, http: &str) -> Running {
    try_serve_at(data_dir, grpc, http)
        .await
        .expect("portcullis starts")
}

fn token(data_dir: &Path, sub: &str, scopes: &[&str]) -> String {
    DevIssuer::load_existing(data_dir, None)
        .expect("dev issuer")
        .mint(&DevTokenSpec {
            sub: sub.into(),
            username: Some(format!("{sub}-name")),
            email: Some(format!("{sub}@example.org")),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_in: Duration::from_secs(600),
            client: "web".into(),
        })
        .expect("mint dev token")
}

/// portcullis + echo upstream + Envoy.
struct Stack {
    dir: tempfile::TempDir,
    portcullis: Option<Running>,
    echo: Echo,
    envoy: Envoy,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let portcullis = serve_at(dir.path(), "127.0.0.1:0", "127.0.0.1:0").await;
        let echo = Echo::start().await;
        let envoy = Envoy::start(portcullis.grpc_addr, echo.addr).await;
        Stack {
            dir,
            portcullis: Some(portcullis),
            echo,
            envoy,
        }
    }

    fn token(&self, sub: &str, scopes: &[&str]) -> String {
        token(self.dir.path(), sub, scopes)
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.envoy.get(target, headers).await
    }

    /// Unauthenticated requests the upstream received (should be none but
    /// the public /healthz).
    fn unauthenticated_seen(&self) -> Vec<Seen> {
        self.echo
            .seen()
            .into_iter()
            .filter(|s| !s.authenticated())
            .collect()
    }
}

/// Polls `GET target` until `want(status)` or `within` passes; returns the
/// last response either way (the caller asserts on it, with Envoy's log).
async fn poll_status(
    envoy: &Envoy,
    target: &str,
    headers: &[(&str, &str)],
    within: Duration,
    want: impl Fn(u16) -> bool,
) -> Response {
    poll_until(within, Duration::from_millis(25), async || {
        let r = envoy.get(target, headers).await;
        if want(r.status) { Ok(r) } else { Err(r) }
    })
    .await
    .unwrap_or_else(|last| last)
}

#[tokio::test]
async fn no_token_is_401_with_challenge_from_portcullis() {
    bounded(async {
        let s = Stack::start().await;
        for target in ["/api/v1/things", "/api/v1/uploads/x", "/"] {
            let r = s.get(target, &[]).await;
            assert_eq!(r.status, 401, "{target}: {r:?}");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"portcullis\""),
                "{target}"
            );
            let body = r.json();
            assert_eq!(body["error_description"], "missing bearer token", "{body}");
            assert!(body["error"].is_string(), "{body}");
        }
        // A bad token: 401 invalid_token, still from portcullis.
        let r = s
            .get("/api/v1/things", &[("authorization", "Bearer not.a.jwt")])
            .await;
        assert_eq!(r.status, 401, "{r:?}");
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
            "{www}"
        );
        assert_eq!(r.json()["error"], "invalid_token");
        assert!(
            s.echo.seen().is_empty(),
            "upstream reached: {:?}",
            s.echo.seen()
        );
    })
    .await
}

#[tokio::test]
async fn valid_jwt_reaches_upstream_with_identity_headers() {
    bounded(async {
        let s = Stack::start().await;
        let t = s.token("alice", &["uploads:read", "a:write"]);
        let auth = format!("Bearer {t}");
        for target in ["/api/v1/uploads/report.csv?x=1", "/other"] {
            let r = s
                .get(
                    target,
                    &[
                        ("authorization", &auth),
                        // Client-sent identity headers are replaced or removed.
                        ("x-auth-subject", "admin"),
                        ("x-auth-method", "pat"),
                        ("x-auth-role", "root"),
                        ("x-auth-token-id", "forged"),
                    ],
                )
                .await;
            assert_eq!(r.status, 200, "{target}: {r:?}");
            let seen = Seen::from_body(&r.body);
            assert_eq!(seen.path, target);
            assert_eq!(seen.header("x-auth-subject"), Some("alice"), "{seen:?}");
            assert_eq!(seen.header("x-auth-username"), Some("alice-name"));
            assert_eq!(seen.header("x-auth-email"), Some("alice@example.org"));
            assert_eq!(seen.header("x-auth-client"), Some("web"));
            assert_eq!(seen.header("x-auth-method"), Some("jwt"));
            assert_eq!(seen.header("x-auth-scopes"), Some("a:write uploads:read"));
            assert_eq!(seen.header("x-auth-role"), None, "{seen:?}");
            assert_eq!(seen.header("x-auth-token-id"), None, "{seen:?}");
        }
        assert!(s.unauthenticated_seen().is_empty());
    })
    .await
}

/// /healthz skips ext_authz (per-route `disabled: true`), so portcullis
/// cannot replace identity headers there: the Envoy route strips them
/// instead (`request_headers_to_remove`), and the HCM drops headers with
/// underscores (`x_auth_subject`, which CGI-style apps read as
/// X-Auth-Subject) everywhere. What the upstream sees on /healthz is an
/// anonymous request, token or not.
#[tokio::test]
async fn public_healthz_skips_authz_and_strips_forged_identity() {
    bounded(async {
        let s = Stack::start().await;
        let r = s
            .get(
                "/healthz",
                &[
                    ("x-auth-subject", "admin"),
                    ("x-auth-method", "jwt"),
                    ("x-auth-scopes", "*:*"),
                    ("x-auth-issuer", "https://idp.example"),
                    ("x_auth_subject", "admin"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.path, "/healthz");
        for h in [
            "x-auth-subject",
            "x-auth-method",
            "x-auth-scopes",
            "x-auth-issuer",
            "x_auth_subject",
        ] {
            assert_eq!(seen.header(h), None, "{h} reached the upstream: {seen:?}");
        }

        // With a valid token: still anonymous (ext_authz does not run).
        let t = s.token("alice", &["uploads:read"]);
        let r = s
            .get("/healthz", &[("authorization", &format!("Bearer {t}"))])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(Seen::from_body(&r.body).header("x-auth-subject"), None);

        // Underscore headers are dropped on protected routes too.
        let r = s
            .get(
                "/api/v1/uploads/x",
                &[
                    ("authorization", &format!("Bearer {t}")),
                    ("x_auth_scopes", "*:*"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(Seen::from_body(&r.body).header("x_auth_scopes"), None);

        // Only the exact /healthz skips ext_authz in Envoy.
        for target in ["/healthz/x", "/healthzx", "/HEALTHZ"] {
            let r = s.get(target, &[("x-auth-subject", "admin")]).await;
            assert_eq!(r.status, 401, "{target}: {r:?}");
        }
        // `/healthz/` goes through ext_authz (Envoy's match is exact), where
        // portcullis drops the trailing slash and lands on its public
        // `health` policy route: an anonymous allow, and portcullis itself
        // removes the forged identity header.
        let r = s.get("/healthz/", &[("x-auth-subject", "admin")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.header("x-auth-subject"), None, "{seen:?}");
        assert_eq!(seen.header("x-auth-method"), None, "{seen:?}");

        let anon: Vec<_> = s
            .unauthenticated_seen()
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert!(
            anon.iter().all(|p| p == "/healthz" || p == "/healthz/"),
            "{anon:?}"
        );
    })
    .await
}

/// Fail closed: with portcullis gone Envoy answers 503 (`status_on_error`,
/// `failure_mode_allow: false`), token or not, and recovers by itself once
/// portcullis listens again on the same port.
#[tokio::test]
async fn portcullis_down_is_503_and_recovers() {
    bounded(async {
        let mut s = Stack::start().await;
        let t = s.token("alice", &["uploads:read"]);
        let auth = format!("Bearer {t}");
        let with_token = [("authorization", auth.as_str())];
        let r = s.get("/api/v1/uploads/x", &with_token).await;
        assert_eq!(r.status, 200, "{r:?}");

        let running = s.portcullis.take().unwrap();
        let (grpc, http) = (running.grpc_addr, running.http_addr);
        running.shutdown(Duration::from_secs(5)).await;

        let r = poll_status(
            &s.envoy,
            "/api/v1/uploads/x",
            &with_token,
            Duration::from_secs(10),
            |st| st == 503,
        )
        .await;
        assert_eq!(r.status, 503, "with portcullis down: {r:?}");
        assert_eq!(s.get("/api/v1/uploads/x", &[]).await.status, 503);
        assert_eq!(s.get("/", &with_token).await.status, 503);
        // The public route does not depend on portcullis.
        assert_eq!(s.get("/healthz", &[]).await.status, 200);
        s.echo.clear();

        // Same ports (same dev issuer URL, so the token stays valid).
        let (g, h) = (grpc.to_string(), http.to_string());
        let again = poll_until(
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || {
                try_serve_at(s.dir.path(), &g, &h)
                    .await
                    .inspect_err(|e| eprintln!("restart on {grpc} failed, retrying: {e:#}"))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("could not restart portcullis on {grpc}: {e:#}"));
        assert_eq!(again.grpc_addr, grpc);
        s.portcullis = Some(again);

        let r = poll_status(
            &s.envoy,
            "/api/v1/uploads/x",
            &with_token,
            Duration::from_secs(15),
            |st| st == 200,
        )
        .await;
        assert_eq!(r.status, 200, "after restart: {r:?}\n{}", s.envoy.log());
        assert_eq!(
            Seen::from_body(&r.body).header("x-auth-subject"),
            Some("alice")
        );
        assert_eq!(s.get("/api/v1/uploads/x", &[]).await.status, 401);
        assert!(s.unauthenticated_seen().is_empty());
    })
    .await
}

/// Paths that try to reach a protected route through the public /healthz.
/// Envoy resolves dot segments (also `%2e`) before routing, so they land
/// on the protected route and portcullis answers 401; encoded slashes are
/// rejected by Envoy with 400. Whatever the status, the upstream never
/// sees an unauthenticated request for anything but exactly /healthz.
#[tokio::test]
async fn path_normalisation_bypass_attempts_never_reach_upstream_unauthenticated() {
    bounded(async {
        let s = Stack::start().await;
        // (target, expected status)
        let cases: &[(&str, u16)] = &[
            ("/healthz/../api/v1/uploads/x", 401),
            ("/healthz/%2e%2e/api/v1/uploads/x", 401),
            ("/healthz/%2E%2E/api/v1/uploads/x", 401),
            ("/healthz/.%2e/api/v1/uploads/x", 401),
            ("/healthz%2F..%2Fapi", 400),
            ("/healthz%2f..%2fapi/v1/uploads/x", 400),
            ("/healthz/..%2Fapi/v1/uploads/x", 400),
            ("/healthz%5C..%5Capi", 400),
            ("//healthz/../api/v1/uploads/x", 401),
            ("/./healthz/./../api/v1/uploads/x", 401),
            ("/healthz/..;/api/v1/uploads/x", 401),
            ("/healthz;/../api/v1/uploads/x", 401),
            ("/healthz/%252e%252e/api/v1/uploads/x", 401),
            ("/api/v1/uploads/../../healthz/../api/v1/uploads/x", 401),
            ("http://127.0.0.1/healthz/../api/v1/uploads/x", 401),
        ];
        let mut report = Vec::new();
        for (target, want) in cases {
            let r = s.get(target, &[("x-auth-subject", "admin")]).await;
            report.push(format!("{} {target}", r.status));
            if r.status == 200 {
                let seen = Seen::from_body(&r.body);
                assert!(
                    seen.authenticated(),
                    "{target} reached the upstream unauthenticated as {seen:?}"
                );
            }
            assert_eq!(r.status, *want, "{target}: {r:?}");
        }
        eprintln!("bypass attempts:\n  {}", report.join("\n  "));
        let anon = s.unauthenticated_seen();
        assert!(
            anon.is_empty(),
            "unauthenticated requests reached the upstream: {anon:?}"
        );
    })
    .await
}

/// A valid JWT without the route's scope: portcullis answers 403 with an
/// RFC 6750 `insufficient_scope` challenge, Envoy passes it on, and the
/// upstream sees nothing.
#[tokio::test]
async fn insufficient_scope_is_403_from_portcullis() {
    bounded(async {
        let s = Stack::start().await;
        let t = s.token("bob", &["other:read"]);
        let auth = format!("Bearer {t}");
        let r = s
            .get("/api/v1/uploads/x", &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 403, "{r:?}");
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer realm=\"portcullis\", error=\"insufficient_scope\""),
            "{www}"
        );
        assert!(www.contains("scope=\"uploads:read\""), "{www}");
        assert_eq!(r.json()["error"], "insufficient_scope");
        // The same token is fine where no scope is required.
        assert_eq!(
            s.get("/other", &[("authorization", &auth)]).await.status,
            200
        );
        let seen: Vec<_> = s.echo.seen().into_iter().map(|x| x.path).collect();
        assert_eq!(seen, ["/other"]);
    })
    .await
}

#[tokio::test]
async fn pat_is_allowed_then_revoked() {
    bounded(async {
        let s = Stack::start().await;
        let running = s.portcullis.as_ref().expect("running");
        let store = running.engine.load().pats().store().clone();
        let (raw, rec) = create_pat(
            &store,
            "alice",
            "alice",
            "https://idp.example",
            &["uploads:read"],
        )
        .await;
        let auth = format!("Bearer {raw}");
        let r = s
            .get("/api/v1/uploads/x", &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.header("x-auth-method"), Some("pat"));
        assert_eq!(seen.header("x-auth-subject"), Some("alice"));
        assert_eq!(
            seen.header("x-auth-token-id"),
            Some(rec.id.to_string().as_str())
        );

        running
            .revoker
            .revoke(rec.id)
            .await
            .expect("revoke")
            .expect("found");
        s.echo.clear();
        let r = poll_status(
            &s.envoy,
            "/api/v1/uploads/x",
            &[("authorization", &auth)],
            Duration::from_secs(10),
            |c| c == 401,
        )
        .await;
        assert_eq!(r.status, 401, "{r:?}");
        let www = r.header("www-authenticate").unwrap_or_default().to_string();
        assert!(www.contains("error=\"invalid_token\""), "{www}");
        assert!(r.text().contains("token revoked"), "{}", r.text());
        assert!(
            s.echo.seen().is_empty(),
            "the upstream saw a request after the revoke"
        );
    })
    .await
}

/// Through a real Envoy, a read scope does not allow a write (DELETE).
#[tokio::test]
async fn item1_writes_through_envoy_need_the_write_scope() {
    bounded(async {
        let s = Stack::start().await;
        let read = s.token("alice", &["uploads:read"]);
        let write = s.token("alice", &["uploads:write"]);
        let send = |method: &'static str, token: String| {
            let addr = s.envoy.addr;
            async move {
                let auth = format!("Bearer {token}");
                portcullis_testkit::envoy::request(
                    addr,
                    method,
                    "/api/v1/uploads/123",
                    &[("authorization", &auth)],
                )
                .await
                .unwrap()
            }
        };
        for m in ["DELETE", "POST", "PUT", "PATCH"] {
            let r = send(m, read.clone()).await;
            assert_eq!(r.status, 403, "{m} with uploads:read: {r:?}");
            let r = send(m, write.clone()).await;
            assert_eq!(r.status, 200, "{m} with uploads:write: {r:?}");
        }
        // Any other method is a write too.
        let r = send("OPTIONS", read.clone()).await;
        assert_eq!(r.status, 403, "{r:?}");
        assert_eq!(send("GET", read.clone()).await.status, 200);
    })
    .await
}

/// A `..;` dot segment (which Tomcat and Spring resolve as `..`) behind an
/// Envoy route that names a portcullis route. Envoy resolves a literal
/// `..;` itself, but `%2e%2e;` only decodes, so `/api/v1/uploads/%2e%2e;/x`
/// stays on the named `uploads` route and reaches the app as
/// `/api/v1/uploads/..;/x`, i.e. `/api/v1/x` for a Tomcat upstream.
/// portcullis must refuse such a path on a named route exactly as it does on
/// a route it matches itself, never let it reach the upstream.
#[tokio::test]
async fn review_dot_segment_with_params_behind_a_named_route_is_refused() {
    bounded(async {
        let s = Stack::start().await;
        let read = s.token("alice", &["uploads:read"]);
        let auth = format!("Bearer {read}");
        for target in [
            "/api/v1/uploads/%2e%2e;/users/1",
            "/api/v1/uploads/%2E%2E;x/users/1",
            "/api/v1/uploads/x/.%2e;/%2e%2e;/users/1",
        ] {
            s.echo.clear();
            let r = s.get(target, &[("authorization", &auth)]).await;
            let seen: Vec<String> = s.echo.seen().into_iter().map(|x| x.path).collect();
            assert_eq!(r.status, 403, "{target}: {r:?}; upstream saw {seen:?}");
            assert!(seen.is_empty(), "{target} reached the upstream as {seen:?}");
        }
        // The plain path still works.
        let r = s
            .get("/api/v1/uploads/1", &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    })
    .await
}

/// A caller whose identity has an empty value (a token without scopes: the
/// header `x-auth-scopes` is set to "") still never lets a client-sent copy
/// of that header through: the upstream sees our value (empty or absent),
/// never the forged one, whatever its case or however often it was sent.
#[tokio::test]
async fn an_empty_identity_value_never_lets_a_forged_header_through() {
    bounded(async {
        let s = Stack::start().await;
        let t = s.token("alice", &[]);
        let auth = format!("Bearer {t}");
        let r = s
            .get(
                "/other",
                &[
                    ("authorization", &auth),
                    ("x-auth-scopes", "*:*"),
                    ("X-Auth-Scopes", "admin:all"),
                    ("x-auth-subject", "admin"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.header("x-auth-subject"), Some("alice"), "{seen:?}");
        let scopes = seen.header("x-auth-scopes").unwrap_or_default();
        assert!(
            !scopes.contains("*:*") && !scopes.contains("admin"),
            "a forged x-auth-scopes reached the upstream: {seen:?}"
        );
    })
    .await
}
