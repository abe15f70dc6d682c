//! RFC 9728 protected resource metadata (`api.resource_metadata`): the
//! document on the HTTP port, the `resource_metadata` parameter of Check's
//! 401 challenges (and only those), a client following it through a real
//! Envoy, the config errors, and a policy reload showing in the document.

use std::path::Path;

use portcullis::config::{Config, MapEnv};
use portcullis::server::Running;
use portcullis_testkit::check::{Req, check, denied, serve_yaml};
use portcullis_testkit::envoy::{self, Envoy};
use serde_json::{Value, json};

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

fn config(resource: Option<&str>, extra_api: &str, routes: &str) -> String {
    let api = match resource {
        Some(r) => format!("api:\n  resource_metadata:\n    resource: {r}\n{extra_api}"),
        None => String::new(),
    };
    format!("{api}policy:\n  default: authenticated\n  routes:\n{routes}")
}

const ROUTES: &str = r#"    - name: health
      match: { path: { exact: /healthz } }
      auth: none
    - name: uploads
      match: { methods: [GET, HEAD], path: { prefix: /api/v1/uploads } }
      require: { all_of: ["uploads:read"] }
    - name: uploads-write
      match: { path: { prefix: /api/v1/uploads } }
      require: { all_of: ["uploads:write"], any_of: ["uploads:admin", "uploads:write"] }
"#;

async fn get(srv: &Running, target: &str) -> envoy::Response {
    envoy::request(srv.http_addr, "GET", target, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

fn dev_issuer(srv: &Running) -> String {
    format!("http://{}/realms/dev", srv.http_addr)
}

async fn start(dir: &Path, resource: Option<&str>, extra_api: &str) -> Running {
    serve_yaml(&config(resource, extra_api, ROUTES), dir, true).await
}

#[tokio::test]
async fn document_names_resource_issuers_scopes_and_bearer_methods() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(
        dir.path(),
        Some("https://api.example.org"),
        "    resource_name: Example uploads\n",
    )
    .await;
    let r = get(&srv, WELL_KNOWN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.json(),
        json!({
            "resource": "https://api.example.org",
            "authorization_servers": [dev_issuer(&srv)],
            "scopes_supported": ["uploads:admin", "uploads:read", "uploads:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Example uploads",
        })
    );
    // Only at the well-known path of this resource.
    assert_eq!(get(&srv, &format!("{WELL_KNOWN}/other")).await.status, 404);
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn configured_servers_and_scopes_replace_the_derived_ones() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(
        dir.path(),
        Some("https://api.example.org/uploads"),
        "    authorization_servers: [https://kc.example.org/realms/main]\n    scopes_supported: [openid, uploads]\n    resource_documentation: https://docs.example.org/uploads\n",
    )
    .await;
    // A resource with a path: the well-known segment goes before it.
    assert_eq!(get(&srv, WELL_KNOWN).await.status, 404);
    let r = get(&srv, &format!("{WELL_KNOWN}/uploads")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["resource"], "https://api.example.org/uploads");
    assert_eq!(
        doc["authorization_servers"],
        json!(["https://kc.example.org/realms/main"])
    );
    assert_eq!(doc["scopes_supported"], json!(["openid", "uploads"]));
    assert_eq!(
        doc["resource_documentation"],
        "https://docs.example.org/uploads"
    );
    let d = denied(&check(srv.grpc_addr, &Req::get("/api/v1/uploads/1")).await);
    assert_eq!(
        d.www_authenticate.as_deref(),
        Some(
            "Bearer realm=\"portcullis\", resource_metadata=\"https://api.example.org/.well-known/oauth-protected-resource/uploads\""
        )
    );
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn every_401_points_to_the_metadata_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Some("https://api.example.org"), "").await;
    let param =
        "resource_metadata=\"https://api.example.org/.well-known/oauth-protected-resource\"";

    let none = denied(&check(srv.grpc_addr, &Req::get("/api/v1/uploads/1")).await);
    assert_eq!((none.code, none.http), (16, 401));
    assert_eq!(
        none.www_authenticate.as_deref(),
        Some(format!("Bearer realm=\"portcullis\", {param}").as_str())
    );

    let bad = denied(
        &check(
            srv.grpc_addr,
            &Req::get("/api/v1/uploads/1").bearer("not.a.jwt"),
        )
        .await,
    );
    assert_eq!((bad.code, bad.http), (16, 401));
    let www = bad.www_authenticate.unwrap();
    assert!(
        www.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
        "{www}"
    );
    assert!(www.ends_with(&format!(", {param}")), "{www}");

    // 403: the client has a token; the challenge names the scope instead.
    let token = portcullis_testkit::api::dev_login(dir.path(), "alice", "uploads:read");
    let forbidden = denied(
        &check(
            srv.grpc_addr,
            &Req::get("/api/v1/uploads/1").method("PUT").bearer(&token),
        )
        .await,
    );
    assert_eq!(forbidden.http, 403, "{forbidden:?}");
    let www = forbidden.www_authenticate.unwrap();
    assert!(www.contains("insufficient_scope"), "{www}");
    assert!(!www.contains("resource_metadata"), "{www}");
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn without_a_resource_there_is_no_document_and_no_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), None, "").await;
    let r = get(&srv, WELL_KNOWN).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("api.resource_metadata.resource"),
        "{}",
        r.text()
    );
    let d = denied(&check(srv.grpc_addr, &Req::get("/api/v1/uploads/1")).await);
    assert_eq!(
        d.www_authenticate.as_deref(),
        Some("Bearer realm=\"portcullis\"")
    );
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_policy_reload_shows_in_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Some("https://api.example.org"), "").await;
    let text = config(
        Some("https://api.example.org"),
        "",
        "    - name: reports\n      match: { path: { prefix: /reports } }\n      require: { any_of: [\"reports:read\"] }\n",
    );
    let mut cfg = Config::from_yaml_str(&text, &MapEnv::default()).unwrap();
    cfg.apply_dev_defaults(true);
    srv.reloader.apply(cfg).expect("reload");
    let doc = get(&srv, WELL_KNOWN).await.json();
    assert_eq!(doc["scopes_supported"], json!(["reports:read"]), "{doc}");
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}

#[test]
fn config_check_names_the_key_what_is_wrong_and_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for (resource, why) in [
        ("http://api.example.org", "https"),
        ("https://api.example.org/#top", "fragment"),
        ("https://api.example.org/?x=1", "query"),
        ("api.example.org", "not a URL"),
    ] {
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            format!("api:\n  resource_metadata:\n    resource: \"{resource}\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["config", "check", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{resource}: {err}");
        assert!(
            err.contains("api.resource_metadata.resource: "),
            "{resource}: {err}"
        );
        assert!(
            err.contains(why) && err.contains("accepted"),
            "{resource}: {err}"
        );
    }
}

/// What an OAuth client does: a 401 through Envoy names the metadata URL,
/// and the shipped Envoy route for that path (ext_authz off) serves the
/// document from portcullis's HTTP port, naming the authorization server.
#[tokio::test]
async fn a_client_behind_envoy_finds_the_authorization_server() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), Some("http://127.0.0.1:10000"), "").await;
    let echo = portcullis_testkit::echo::Echo::start().await;
    let http_port = srv.http_addr.port().to_string();
    let envoy = Envoy::start_with(
        srv.grpc_addr,
        echo.addr,
        &[
            ("EXT_AUTHZ_TIMEOUT", "5s"),
            ("PORTCULLIS_HTTP_PORT", http_port.as_str()),
        ],
    )
    .await;
    let r = envoy.get("/api/v1/uploads/1", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    let www = r.header("www-authenticate").unwrap_or_default().to_owned();
    let url = www
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {www:?}"));
    assert_eq!(
        url,
        "http://127.0.0.1:10000/.well-known/oauth-protected-resource"
    );
    let path = url.trim_start_matches("http://127.0.0.1:10000");
    let r = envoy.get(path, &[("x-auth-subject", "forged")]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log());
    let doc: Value = r.json();
    assert_eq!(doc["resource"], "http://127.0.0.1:10000");
    assert_eq!(doc["authorization_servers"], json!([dev_issuer(&srv)]));
    assert_eq!(
        doc["scopes_supported"],
        json!(["uploads:admin", "uploads:read", "uploads:write"])
    );
    // Only that path reaches the HTTP port: the token API stays behind ext_authz.
    assert_eq!(envoy.get("/api/v1/meta", &[]).await.status, 401);
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());
    drop(envoy);
    srv.shutdown(std::time::Duration::from_secs(5)).await;
}
