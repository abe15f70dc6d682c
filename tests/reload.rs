//! Hot reload: a changed config file swaps the policy atomically; an invalid
//! one is refused and the old config keeps serving; loaded keys survive.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis::config::{Config, MapEnv};
use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis::reload::Loader;
use portcullis_testkit::check::{Req, allowed, check, check_until, denied, serve_yaml};
use portcullis_testkit::eventually;

fn policy(scope: &str) -> String {
    format!(
        "policy:\n  routes:\n    - name: x\n      match: {{ path: {{ prefix: /x }} }}\n      require: {{ all_of: [\"{scope}\"] }}\n"
    )
}

fn loader(path: &Path, data_dir: &Path) -> Loader {
    let (path, data_dir) = (path.to_path_buf(), data_dir.to_path_buf());
    Arc::new(move || {
        let mut c = Config::load(Some(&path), &MapEnv::default())?;
        c.data_dir = data_dir.clone();
        Ok(c)
    })
}

fn token(dir: &Path, scopes: &[&str]) -> String {
    DevIssuer::load_existing(dir, None)
        .unwrap()
        .mint(&DevTokenSpec {
            sub: "alice".into(),
            username: None,
            email: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_in: Duration::from_secs(600),
            client: "web".into(),
        })
        .unwrap()
}

#[tokio::test]
async fn changed_file_swaps_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, policy("a:read")).unwrap();
    let srv = serve_yaml(&policy("a:read"), dir.path(), true).await;
    srv.enable_reload(loader(&file, dir.path()), Some(file.clone()));
    let t = token(dir.path(), &["b:read"]);
    let d = denied(&check(srv.grpc_addr, &Req::get("/x").bearer(&t)).await);
    assert_eq!(d.http, 403);

    std::fs::write(&file, policy("b:read")).unwrap();
    let req = Req::get("/x").bearer(&t);
    check_until(
        srv.grpc_addr,
        &req,
        Duration::from_secs(10),
        "reload took effect",
        |c| c == 0,
    )
    .await;
}

#[tokio::test]
async fn invalid_new_config_is_rejected_and_old_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, policy("a:read")).unwrap();
    let srv = serve_yaml(&policy("a:read"), dir.path(), true).await;
    let t = token(dir.path(), &["a:read"]);
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&t)).await);

    for bad in [
        policy("a:*"),
        "policy:\n  default: maybe\n".to_string(),
        "issuers: [".to_string(),
    ] {
        std::fs::write(&file, &bad).unwrap();
        assert!(
            !srv.reloader.reload(&loader(&file, dir.path())),
            "{bad} must be refused"
        );
        allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&t)).await);
    }
    std::fs::write(&file, policy("c:read")).unwrap();
    assert!(srv.reloader.reload(&loader(&file, dir.path())));
    assert_eq!(
        denied(&check(srv.grpc_addr, &Req::get("/x").bearer(&t)).await).http,
        403
    );
}

#[tokio::test]
async fn reload_keeps_loaded_issuer_keys() {
    use portcullis_testkit::keycloak::{Failure, FakeKeycloak, SignOpts};
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let yaml = |scope: &str| {
        format!(
            "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n{}",
            kc.issuer(),
            policy(scope)
        )
    };
    std::fs::write(&file, yaml("a:read")).unwrap();
    let srv = serve_yaml(&yaml("a:read"), dir.path(), false).await;
    let mut c = kc.claims("u");
    c["aud"] = serde_json::json!("portcullis");
    c["scope"] = serde_json::json!("b:read");
    let t = kc.sign(&c, &SignOpts::default());
    eventually(Duration::from_secs(10), "keys loaded", async || {
        let d = denied(&check(srv.grpc_addr, &Req::get("/x").bearer(&t)).await);
        if d.http == 403 { Ok(()) } else { Err(d) }
    })
    .await;
    // With the IdP down, a reload must still verify tokens: keys are kept.
    kc.set_failure(Failure::Down);
    std::fs::write(&file, yaml("b:read")).unwrap();
    assert!(srv.reloader.reload(&loader(&file, dir.path())));
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&t)).await);
    kc.set_failure(Failure::None);
}
