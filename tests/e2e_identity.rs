//! Issue 18 through a real Envoy (deploy/envoy.yaml, rendered with free
//! ports): the dynamic metadata portcullis sets shows up in Envoy's access
//! log and keys its per-subject rate limit; a query-parameter credential
//! never reaches the upstream or the access log; `strip_credential` keeps
//! the Authorization header from the upstream.
//!
//! Needs the Envoy binary from `scripts/install-envoy` (or
//! `$PORTCULLIS_ENVOY`). Every wait goes through the testkit's
//! `eventually`; none sleeps to synchronise.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use portcullis::config::{Config, MapEnv};
use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis::server::{Running, ServeOptions, start};
use portcullis_testkit::echo::{Echo, Seen};
use portcullis_testkit::envoy::Envoy;
use portcullis_testkit::in_process::create_pat;

const CONFIG: &str = r#"
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
    - name: private
      match: { path: { prefix: /private } }
      strip_credential: true
    - name: downloads
      match: { path: { prefix: /dl } }
      query_credential: true
"#;

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test exceeded its time budget");
}

struct Stack {
    dir: tempfile::TempDir,
    portcullis: Running,
    echo: Echo,
    envoy: Envoy,
}

impl Stack {
    async fn start(edit: &dyn Fn(String) -> String) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::from_yaml_str(CONFIG, &MapEnv::default()).expect("config parses");
        cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
        cfg.listen.http = "127.0.0.1:0".parse().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        cfg.apply_dev_defaults(true);
        let portcullis = start(ServeOptions {
            config: cfg,
            dev: true,
        })
        .await
        .expect("portcullis starts");
        let echo = Echo::start().await;
        let envoy = Envoy::start_edited(
            portcullis.grpc_addr,
            echo.addr,
            &[("EXT_AUTHZ_TIMEOUT", "5s")],
            edit,
        )
        .await;
        Stack {
            dir,
            portcullis,
            echo,
            envoy,
        }
    }

    fn token(&self, sub: &str) -> String {
        mint(self.dir.path(), sub)
    }

    async fn pat(&self, user: &str) -> (String, String) {
        let store = self.portcullis.engine.load().pats().store().clone();
        let name = format!("{user}-name");
        let (raw, rec) = create_pat(
            &store,
            user,
            &name,
            "https://idp.example",
            &["uploads:read"],
        )
        .await;
        (raw, rec.id.to_string())
    }

    /// Polls Envoy's log until an access-log line for `path` appears.
    async fn access_log_line(&self, path: &str) -> serde_json::Value {
        portcullis_testkit::wait::eventually(
            Duration::from_secs(20),
            &format!("an access log line for {path}"),
            async || {
                let log = self.envoy.log();
                let line = log
                    .lines()
                    .filter(|l| l.starts_with('{'))
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|v| v["path"] == path);
                line.ok_or(log)
            },
        )
        .await
    }
}

fn mint(dir: &Path, sub: &str) -> String {
    DevIssuer::load_existing(dir, None)
        .expect("dev issuer")
        .mint(&DevTokenSpec {
            sub: sub.into(),
            username: Some(format!("{sub}-name")),
            email: Some(format!("{sub}@example.org")),
            scopes: vec!["uploads:read".into(), "reports:read".into()],
            expires_in: Duration::from_secs(600),
            client: "web".into(),
        })
        .expect("mint dev token")
}

#[tokio::test]
async fn access_log_shows_the_caller_from_dynamic_metadata() {
    bounded(async {
        let s = Stack::start(&|c| c).await;
        let t = s.token("alice");
        let auth = format!("Bearer {t}");
        let r = s
            .envoy
            .get("/api/v1/uploads/a.txt", &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let line = s.access_log_line("/api/v1/uploads/a.txt").await;
        assert_eq!(line["subject"], "alice", "{line}");
        assert_eq!(line["username"], "alice-name", "{line}");
        assert_eq!(line["client"], "web", "{line}");
        assert_eq!(line["auth_method"], "jwt", "{line}");
        assert_eq!(line["auth_route"], "uploads", "{line}");
        let scopes = line["scopes"].as_str().unwrap_or_default();
        let mut scopes: Vec<&str> = scopes.split(' ').collect();
        scopes.sort();
        assert_eq!(scopes, ["reports:read", "uploads:read"], "{line}");
        assert_eq!(line["status"], 200, "{line}");

        let (pat, id) = s.pat("bob").await;
        let auth = format!("Bearer {pat}");
        let r = s.envoy.get("/api/other", &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let line = s.access_log_line("/api/other").await;
        assert_eq!(line["subject"], "bob", "{line}");
        assert_eq!(line["auth_method"], "pat", "{line}");
        assert_eq!(line["token_id"], id.as_str(), "{line}");
        assert_eq!(line["auth_route"], "(default)", "{line}");

        // A denied request: no caller in the log.
        let r = s.envoy.get("/api/denied", &[]).await;
        assert_eq!(r.status, 401);
        let line = s.access_log_line("/api/denied").await;
        assert!(line["subject"].is_null(), "{line}");
        let log = s.envoy.log();
        assert!(
            !log.contains(&t) && !log.contains(&pat),
            "a token in Envoy's log"
        );
    })
    .await;
}

#[tokio::test]
async fn query_credential_reaches_neither_upstream_nor_access_log() {
    bounded(async {
        let s = Stack::start(&|c| c).await;
        let (pat, _) = s.pat("carol").await;
        let target = format!("/dl/report.pdf?inline=1&access_token={pat}&x=2");
        let r = s.envoy.get(&target, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.header("x-auth-subject"), Some("carol"));
        assert!(!seen.path.contains(&pat), "upstream saw {}", seen.path);
        assert!(seen.path.starts_with("/dl/report.pdf?"), "{}", seen.path);
        assert!(seen.path.contains("inline=1") && seen.path.contains("x=2"));
        let line = s.access_log_line("/dl/report.pdf").await;
        assert_eq!(line["subject"], "carol", "{line}");
        assert!(!s.envoy.log().contains(&pat), "the PAT is in Envoy's log");
        // Elsewhere the parameter is not a credential at all.
        let r = s
            .envoy
            .get(&format!("/api/x?access_token={pat}"), &[])
            .await;
        assert_eq!(r.status, 401);
    })
    .await;
}

#[tokio::test]
async fn strip_credential_keeps_authorization_from_the_upstream() {
    bounded(async {
        let s = Stack::start(&|c| c).await;
        let auth = format!("Bearer {}", s.token("dave"));
        let r = s
            .envoy
            .get("/private/doc", &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.header("x-auth-subject"), Some("dave"));
        assert_eq!(seen.header("authorization"), None, "{seen:?}");
        // Other routes pass it on.
        let r = s.envoy.get("/api/doc", &[("authorization", &auth)]).await;
        let seen = Seen::from_body(&r.body);
        assert_eq!(seen.header("authorization"), Some(auth.as_str()));
        assert!(s.echo.seen().iter().all(|x| x.authenticated()));
    })
    .await;
}

#[tokio::test]
async fn rate_limit_descriptor_keys_on_the_subject_from_metadata() {
    bounded(async {
        // The shipped per-subject bucket, shrunk to 2 requests an hour.
        let shrink = |c: String| {
            let from = "token_bucket: { max_tokens: 200, tokens_per_fill: 100, fill_interval: 1s }";
            assert!(
                c.contains(from),
                "deploy/envoy.yaml's per-subject bucket changed"
            );
            c.replace(
                from,
                "token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 3600s }",
            )
        };
        let s = Stack::start(&shrink).await;
        let alice = format!("Bearer {}", s.token("alice"));
        let bob = format!("Bearer {}", s.token("bob"));
        for _ in 0..2 {
            let r = s.envoy.get("/api/a", &[("authorization", &alice)]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = s.envoy.get("/api/a", &[("authorization", &alice)]).await;
        assert_eq!(r.status, 429, "{}", r.text());
        // Another subject has a bucket of its own.
        let r = s.envoy.get("/api/a", &[("authorization", &bob)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        // Denied requests never reach the limiter (ext_authz runs first).
        let r = s.envoy.get("/api/a", &[]).await;
        assert_eq!(r.status, 401);
    })
    .await;
}
