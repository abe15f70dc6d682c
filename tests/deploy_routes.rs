//! The shipped configs (`deploy/envoy.yaml`, `deploy/k8s/configmap.yaml`,
//! the Helm chart rendered with its values) as a whole, Envoy and
//! portcullis together:
//!
//! * routes: every Envoy route, for every method, with the
//!   `context_extensions` Envoy would send, goes through `portcullis check`;
//!   writes need write scopes and never fall through to a route needing less;
//! * configs: every shipped portcullis config passes `config check`, a
//!   `pat.exchange.audience` equal to an issuer audience is refused, and a
//!   login token shaped like the shipped realm's is not taken for a PAT.
//!
//! Rendering the chart needs `helm` (`scripts/install-helm`, or
//! `$PORTCULLIS_HELM`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portcullis_testkit::check::{Req, allowed, check, check_until, denied};
use portcullis_testkit::envoy::{self, repo_root};
use serde::Deserialize;
use serde_json::{Value, json};

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PURGE",
];
const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Requests not derived from an Envoy route (those reach the catch-all).
const EXTRA_PATHS: [&str; 8] = [
    "/api/v1/uploads",
    "/api/v1/uploads/1/files/a.txt",
    "/api/v1/users/7",
    "/api/v1/users",
    "/api/v1/users/7/keys",
    "/api/v1/other/1",
    "/healthz",
    "/elsewhere",
];

/// Secrets the Deployment hands portcullis from its Secret.
const SECRET_ENV: [(&str, &str); 2] = [
    (
        "PORTCULLIS__STORE__URL",
        "postgres://portcullis:pw@127.0.0.1:5432/portcullis",
    ),
    ("PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET", "s3cret"),
];

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn configmap(objs: &[Value]) -> &Value {
    let cms: Vec<_> = objs.iter().filter(|o| o["kind"] == "ConfigMap").collect();
    assert_eq!(cms.len(), 1);
    cms[0]
}

fn data<'a>(cm: &'a Value, key: &str) -> &'a str {
    cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap lacks {key}"))
}

/// One shipped Envoy config with the portcullis config it is deployed with.
struct Shipped {
    what: &'static str,
    envoy: Value,
    config: String,
}

fn helm_rendered() -> Vec<Value> {
    let helm = std::env::var("PORTCULLIS_HELM").unwrap_or_else(|_| "helm".into());
    let out = Command::new(&helm)
        .args(["template", "t", "--kube-version", "1.31.0"])
        .arg(repo_root().join("deploy/helm/portcullis"))
        .output()
        .unwrap_or_else(|e| {
            panic!("helm {helm:?} not found ({e}); run scripts/install-helm, set PORTCULLIS_HELM")
        });
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

fn shipped() -> Vec<Shipped> {
    let k8s = std::fs::read_to_string(repo_root().join("deploy/k8s/configmap.yaml")).unwrap();
    let k8s = yaml_docs(&k8s);
    let k8s_cm = configmap(&k8s);
    let k8s_config = data(k8s_cm, "config.yaml").to_owned();
    let helm = helm_rendered();
    let helm_cm = configmap(&helm);
    let one = |t: &str| yaml_docs(t).remove(0);
    vec![
        Shipped {
            what: "deploy/envoy.yaml + k8s config.yaml",
            envoy: one(&envoy::shipped()),
            config: k8s_config.clone(),
        },
        Shipped {
            what: "deploy/k8s/configmap.yaml",
            envoy: one(data(k8s_cm, "envoy.yaml")),
            config: k8s_config,
        },
        Shipped {
            what: "helm template (values.yaml)",
            envoy: one(data(helm_cm, "envoy.yaml")),
            config: data(helm_cm, "config.yaml").to_owned(),
        },
    ]
}

fn envoy_routes(envoy: &Value) -> &Vec<Value> {
    envoy
        .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")
        .and_then(Value::as_array)
        .expect("Envoy routes")
}

/// Does an Envoy route match `method path`? Only the matchers the shipped
/// configs use are understood; anything else fails the test rather than
/// being guessed.
fn envoy_matches(route: &Value, method: &str, path: &str) -> bool {
    let m = &route["match"];
    let path_ok = match (m["path"].as_str(), m["prefix"].as_str()) {
        (Some(p), None) => path == p,
        (None, Some(p)) => path.starts_with(p),
        _ => panic!("unsupported Envoy route match {m}"),
    };
    let headers = m["headers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    path_ok
        && headers.iter().all(|h| {
            assert_eq!(h["name"], ":method", "unsupported header matcher {h}");
            let sm = &h["string_match"];
            if let Some(e) = sm["exact"].as_str() {
                return e == method;
            }
            let re = sm["safe_regex"]["regex"]
                .as_str()
                .unwrap_or_else(|| panic!("unsupported string_match {sm}"));
            assert!(
                re.bytes().all(|b| b.is_ascii_uppercase() || b == b'|'),
                "only `A|B` method alternatives are simulated: {re}"
            );
            re.split('|').any(|alt| alt == method)
        })
}

/// Sample request paths for an Envoy route.
fn sample_path(route: &Value) -> String {
    let m = &route["match"];
    match (m["path"].as_str(), m["prefix"].as_str()) {
        (Some(p), _) => p.to_owned(),
        (_, Some("/")) => "/x".to_owned(),
        (_, Some(p)) if p.ends_with('/') => format!("{p}123"),
        (_, Some(p)) => format!("{p}/123"),
        _ => panic!("unsupported Envoy route match {m}"),
    }
}

/// What `portcullis check` printed.
#[derive(Debug)]
struct Explained {
    route: String,
    all_of: Vec<String>,
    any_of: Vec<String>,
    decision: String,
}

impl Explained {
    /// Refused before any credential (no route, method or host not allowed).
    fn refused(&self) -> bool {
        self.route.starts_with("(none") || self.route.contains("policy.default = deny")
    }
}

fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
}

fn list(s: &str, name: &str) -> Vec<String> {
    let start = s.find(&format!("{name}=[")).expect(name) + name.len() + 2;
    let end = start + s[start..].find(']').expect("]");
    s[start..end]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `portcullis check` with the secrets from the environment and the store
/// switched to SQLite in `dir` (only the policy matters here).
fn portcullis_check(
    cfg: &Path,
    dir: &Path,
    method: &str,
    path: &str,
    ctx: &[(String, String)],
) -> Explained {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["check", "--config"])
        .arg(cfg)
        .args([
            "--method",
            method,
            "--path",
            path,
            "--host",
            "app.example.org",
        ])
        .envs(SECRET_ENV)
        .env("PORTCULLIS__STORE__KIND", "sqlite")
        .env("PORTCULLIS__DATA_DIR", dir)
        .env("PORTCULLIS__REVOCATION__KIND", "local");
    for (k, v) in ctx {
        cmd.arg("--context").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("run portcullis check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{method} {path}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requires = field(&text, "requires:");
    Explained {
        route: field(&text, "route:").to_owned(),
        all_of: list(requires, "all_of"),
        any_of: list(requires, "any_of"),
        decision: field(&text, "decision:").to_owned(),
    }
}

/// Could a token holding exactly `token` scopes pass `e`'s scope check?
fn satisfied_by(e: &Explained, token: &[String]) -> bool {
    !e.refused()
        && e.all_of.iter().all(|s| token.contains(s))
        && (e.any_of.is_empty() || e.any_of.iter().any(|s| token.contains(s)))
}

/// Every minimal scope set that passes `e` (all_of plus one any_of each).
fn minimal_tokens(e: &Explained) -> Vec<Vec<String>> {
    if e.any_of.is_empty() {
        return vec![e.all_of.clone()];
    }
    e.any_of
        .iter()
        .map(|a| e.all_of.iter().chain([a]).cloned().collect())
        .collect()
}

#[test]
fn item1_every_shipped_route_and_method_needs_the_right_scopes() {
    let dir = tempfile::tempdir().unwrap();
    for s in shipped() {
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, &s.config).unwrap();
        let routes = envoy_routes(&s.envoy);
        let mut paths: Vec<String> = routes.iter().map(sample_path).collect();
        paths.extend(EXTRA_PATHS.map(str::to_owned));
        for path in &paths {
            let mut results = Vec::new();
            for method in METHODS {
                // Envoy's choice: the first route that matches.
                let route = routes
                    .iter()
                    .find(|r| envoy_matches(r, method, path))
                    .unwrap_or_else(|| panic!("{}: no Envoy route for {method} {path}", s.what));
                let per = &route["typed_per_filter_config"]["envoy.filters.http.ext_authz"];
                if per["disabled"] == true {
                    continue; // public, ext_authz never asked
                }
                let ctx: Vec<(String, String)> = per["check_settings"]["context_extensions"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let e = portcullis_check(&cfg, dir.path(), method, path, &ctx);
                let at = format!(
                    "{}: {method} {path} (Envoy route {})",
                    s.what, route["name"]
                );
                assert!(!e.route.contains("misconfigured"), "{at}: {e:?}");
                if e.route.starts_with("(none") {
                    // Method or host outside the named route: 403 at once.
                    assert!(e.decision.starts_with("DENY 403"), "{at}: {e:?}");
                }
                if path.starts_with("/api/v1/uploads") {
                    let scopes = [&e.all_of[..], &e.any_of[..]].concat();
                    let want = match method {
                        "GET" | "HEAD" => Some("uploads:read"),
                        m if WRITES.contains(&m) => Some("uploads:write"),
                        _ => None,
                    };
                    match want {
                        // Reads need uploads:read and nothing more.
                        Some("uploads:read") => {
                            assert_eq!(e.all_of, ["uploads:read"], "{at}: {e:?}")
                        }
                        Some(w) => assert!(
                            e.refused() || e.all_of.iter().any(|x| x == w),
                            "{at}: writes need {w}: {e:?}"
                        ),
                        // Other methods: refused, or some uploads scope.
                        None => assert!(
                            e.refused() || scopes.iter().any(|x| x.starts_with("uploads:")),
                            "{at}: {e:?}"
                        ),
                    }
                }
                if path.starts_with("/api/v1/users") {
                    // The users subtree (list, a user, its sub-resources):
                    // reads need a users scope, everything else users:admin.
                    match method {
                        "GET" | "HEAD" => assert!(
                            e.refused() || !e.any_of.is_empty() || !e.all_of.is_empty(),
                            "{at}: reading users needs a users scope: {e:?}"
                        ),
                        _ => assert!(
                            e.refused() || e.all_of.iter().any(|x| x == "users:admin"),
                            "{at}: writing users needs users:admin: {e:?}"
                        ),
                    }
                }
                results.push((method, e));
            }
            // Reading a protected path never implies writing it, and no
            // method falls to a route needing no scope.
            let Some((_, get)) = results.iter().find(|(m, _)| *m == "GET") else {
                continue;
            };
            if get.refused() || (get.all_of.is_empty() && get.any_of.is_empty()) {
                continue;
            }
            for (m, e) in &results {
                let at = format!("{}: {m} {path}", s.what);
                assert!(
                    e.refused() || !(e.all_of.is_empty() && e.any_of.is_empty()),
                    "{at} falls to a route needing no scope: {e:?}"
                );
                // Some scope set that reads it (the weakest) cannot write it.
                if WRITES.contains(m) {
                    let reads = minimal_tokens(get);
                    assert!(
                        reads.iter().any(|t| !satisfied_by(e, t)),
                        "{at}: every scope set that reads it ({reads:?}) also writes it: {e:?}"
                    );
                }
            }
        }
    }
}

/// Defence in depth: even if Envoy sent a write to a route it names (an
/// Envoy route edited without its `:method` match), portcullis refuses it
/// or asks for a write scope, because the named route keeps its methods.
#[test]
fn item1_shipped_named_routes_refuse_writes_they_do_not_list() {
    let dir = tempfile::tempdir().unwrap();
    for s in shipped() {
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, &s.config).unwrap();
        for route in envoy_routes(&s.envoy) {
            let ctx = &route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]
                ["context_extensions"];
            let Some(name) = ctx["portcullis.route"].as_str() else {
                continue;
            };
            // Only the route name: Envoy's extra scopes are not relied on.
            let only = [("portcullis.route".to_owned(), name.to_owned())];
            let path = sample_path(route);
            for m in WRITES {
                let e = portcullis_check(&cfg, dir.path(), m, &path, &only);
                let at = format!("{}: {m} {path} named {name}", s.what);
                assert!(
                    e.refused()
                        || e.all_of
                            .iter()
                            .any(|x| x.ends_with(":write") || x.ends_with(":admin")),
                    "{at}: {e:?}"
                );
            }
        }
    }
}

// --- shipped portcullis configs ---------------------------------------------

fn config_check(cfg: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "check", "--config"])
        .arg(cfg)
        .envs(SECRET_ENV)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn item14_every_shipped_config_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<(&str, String)> =
        shipped().into_iter().map(|s| (s.what, s.config)).collect();
    configs.dedup_by(|a, b| a.1 == b.1);
    assert!(configs.len() >= 2, "k8s and helm configs");
    for (what, text) in configs {
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, &text).unwrap();
        let (code, out) = config_check(&cfg);
        assert_eq!(code, 0, "{what}: {out}");
        // Detection of PATs is by the marker claim only.
        let v = yaml_docs(&text).remove(0);
        assert!(v["pat"]["exchange"]["audience"].is_null(), "{what}");
        assert_eq!(v["pat"]["jwt_marker"]["claim"], "token_use", "{what}");
        assert_eq!(v["pat"]["jwt_marker"]["value"], "pat", "{what}");
    }
}

#[test]
fn item14_exchange_audience_equal_to_an_issuer_audience_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("clash.yaml");
    std::fs::write(
        &cfg,
        "issuers:\n  - issuer: https://kc.example.org/realms/a\n    audiences: [api]\n  - issuer: https://kc.example.org/realms/b\n    audiences: [other, portcullis]\n\
         pat:\n  issuer: keycloak-exchange\n  exchange:\n    token_url: https://kc.example.org/realms/b/protocol/openid-connect/token\n    client_id: pat-issuer\n    client_secret: x\n    audience: portcullis\n",
    )
    .unwrap();
    let (code, out) = config_check(&cfg);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("pat.exchange.audience"), "{out}");
    assert!(out.contains("issuers[1].audiences[1]"), "{out}");
    assert!(!out.contains("issuers[0].audiences"), "{out}");

    // Any other audience, or none (marker detection), is accepted.
    for audience in ["    audience: portcullis-pat\n", ""] {
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("    audience: portcullis\n", audience);
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, text).unwrap();
        let (code, out) = config_check(&ok);
        assert_eq!(code, 0, "{audience:?}: {out}");
    }
}

/// The `aud` the shipped realm gives login tokens: every client the `web`
/// and `cli` clients' audience mappers add.
fn realm_login_audiences() -> Vec<String> {
    let realm: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/keycloak/realm.json")).unwrap(),
    )
    .unwrap();
    let mut aud = Vec::new();
    for c in realm["clients"].as_array().unwrap() {
        if !matches!(c["clientId"].as_str(), Some("web" | "cli")) {
            continue;
        }
        for m in c["protocolMappers"].as_array().into_iter().flatten() {
            if m["protocolMapper"] == "oidc-audience-mapper"
                && let Some(a) = m["config"]["included.client.audience"].as_str()
                && !aud.iter().any(|x| x == a)
            {
                aud.push(a.to_owned());
            }
        }
    }
    assert!(aud.len() >= 2, "{aud:?}");
    aud
}

#[tokio::test]
async fn item14_login_token_is_not_a_pat_under_the_shipped_configs() {
    use portcullis::config::{Config, MapEnv};
    use portcullis::revocation::RevocationKind;
    use portcullis::server::{ServeOptions, start};
    use portcullis::store::StoreKind;
    use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};

    let kc = FakeKeycloak::start_with_realm("example").await;
    let env = MapEnv(
        SECRET_ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let aud = realm_login_audiences();
    assert!(aud.contains(&"portcullis-pat-issuer".to_owned()), "{aud:?}");
    let configs: Vec<(&str, String)> = shipped().into_iter().map(|s| (s.what, s.config)).collect();
    for (what, text) in configs.iter().skip(1) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::from_yaml_str(text, &env).unwrap();
        // The shipped config, pointed at the stand-in Keycloak and local stores.
        cfg.issuers[0].issuer = kc.issuer();
        cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
        cfg.listen.http = "127.0.0.1:0".parse().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        cfg.store.kind = StoreKind::Sqlite;
        cfg.store.url = None;
        cfg.revocation.kind = RevocationKind::Local;
        let srv = start(ServeOptions {
            config: cfg,
            dev: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));

        // A login token as the realm issues it: `aud` from the web/cli
        // mappers (PAT issuer included), realm roles, no token_use.
        let mut c = kc.claims("alice");
        c["aud"] = json!(aud);
        c["azp"] = json!("web");
        c["realm_access"] = json!({"roles": ["uploads-reader"]});
        let login = kc.sign(&c, &SignOpts::default());
        // The same, marked as the PAT-issuer client marks exchanged tokens.
        c["token_use"] = json!("pat");
        c["azp"] = json!("portcullis-pat-issuer");
        let marked = kc.sign(&c, &SignOpts::default());

        let req = |t: &str| {
            Req::get("/api/v1/uploads/1")
                .context("portcullis.route", "uploads")
                .context("portcullis.required_scopes", "uploads:read")
                .bearer(t)
        };
        // 503 (code 14) while the issuer's keys are still loading.
        let keys = format!("{what}: keys loaded");
        let resp = check_until(
            srv.grpc_addr,
            &req(&login),
            Duration::from_secs(5),
            &keys,
            |c| c != 14,
        )
        .await;
        let (h, _) = allowed(&resp);
        assert_eq!(h["x-auth-method"], "jwt", "{what}");
        // The marker still makes a PAT, which must be registered.
        let d = denied(&check(srv.grpc_addr, &req(&marked)).await);
        assert_eq!((d.code, d.http), (16, 401), "{what}: {d:?}");
        assert!(d.description().contains("unregistered"), "{what}: {d:?}");
        srv.shutdown(Duration::from_secs(5)).await;
    }
}
