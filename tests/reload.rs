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

/// Two issuers; removing one (reload, then restart) refuses its users'
/// PATs with a clear reason and its JWTs already cached as verified, while
/// the other issuer's tokens keep working; the PATs stay listed (flagged)
/// for the operator; adding the issuer back restores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_issuer_refuses_its_users_pats_and_cached_jwts() {
    use portcullis_testkit::check::assert_invalid_token;
    use portcullis_testkit::cli::Cli;
    use portcullis_testkit::in_process::{InProcess, create_pat};
    use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
    let a = FakeKeycloak::start_with_realm("gone").await;
    let b = FakeKeycloak::start_with_realm("kept").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let yaml = |kcs: &[&FakeKeycloak]| {
        let mut y = "issuers:\n".to_string();
        for k in kcs {
            y += &format!("  - issuer: {}\n    audiences: [portcullis]\n", k.issuer());
        }
        y + &policy("a:read")
    };
    let jwt = |kc: &FakeKeycloak| {
        let mut c = kc.claims("u");
        c["aud"] = serde_json::json!("portcullis");
        c["scope"] = serde_json::json!("a:read");
        kc.sign(&c, &SignOpts::default())
    };
    std::fs::write(&file, yaml(&[&a, &b])).unwrap();
    let srv = serve_yaml(&yaml(&[&a, &b]), dir.path(), false).await;
    let store = srv.engine.load().pats().store().clone();
    let (pat_a, rec_a) = create_pat(&store, "ua", "ua", &a.issuer(), &["a:read"]).await;
    let (pat_b, _) = create_pat(&store, "ub", "ub", &b.issuer(), &["a:read"]).await;
    let (jwt_a, jwt_b) = (jwt(&a), jwt(&b));
    let all_allowed = async |addr| {
        eventually(Duration::from_secs(10), "every token allowed", async || {
            for t in [&jwt_a, &jwt_b, &pat_a, &pat_b] {
                let r = check(addr, &Req::get("/x").bearer(t)).await;
                if r.status.as_ref().map(|s| s.code) != Some(0) {
                    return Err(denied(&r));
                }
            }
            Ok(())
        })
        .await
    };
    // Also leaves jwt_a in the verified-token cache.
    all_allowed(srv.grpc_addr).await;

    std::fs::write(&file, yaml(&[&b])).unwrap();
    assert!(srv.reloader.reload(&loader(&file, dir.path())));
    let at = |t: &str| Req::get("/x").bearer(t);
    assert_invalid_token(&check(srv.grpc_addr, &at(&jwt_a)).await, "untrusted issuer");
    let d = denied(&check(srv.grpc_addr, &at(&pat_a)).await);
    assert_eq!(
        (d.http, d.description()),
        (401, "token owner's issuer is no longer trusted")
    );
    allowed(&check(srv.grpc_addr, &at(&pat_b)).await);
    allowed(&check(srv.grpc_addr, &at(&jwt_b)).await);

    // The operator still sees the PAT, flagged, and can revoke it.
    std::fs::write(&file, yaml(&[&b])).unwrap();
    let cli = Cli::new(env!("CARGO_BIN_EXE_portcullis"));
    let (f, d) = (file.to_str().unwrap(), dir.path().to_str().unwrap());
    let args = ["admin", "token", "list", "--config", f, "--data-dir", d];
    let issuer = a.issuer();
    let ran = cli
        .run(&[&args[..], &["--user", "ua", "--issuer", &issuer, "--json"]].concat())
        .await;
    let listed: serde_json::Value = serde_json::from_str(ran.expect_ok()).unwrap();
    assert_eq!(listed[0]["id"], rec_a.id.to_string());
    assert_eq!(listed[0]["owner_issuer_removed"], true);
    assert!(ran.stderr.contains("is not configured"), "{ran:?}");
    let ran = cli
        .run(&[&args[..], &["--user", "ub", "--json"]].concat())
        .await;
    let listed: serde_json::Value = serde_json::from_str(ran.expect_ok()).unwrap();
    assert!(listed[0].get("owner_issuer_removed").is_none(), "{listed}");

    // A restart with the issuer still gone refuses the same way.
    let restarted = InProcess::from_yaml(&yaml(&[&b]), dir.path(), false).await;
    let d = denied(&restarted.check(&at(&pat_a)).await);
    assert_eq!(d.description(), "token owner's issuer is no longer trusted");
    allowed(&restarted.check(&at(&pat_b)).await);
    let restarted = InProcess::from_yaml(&yaml(&[&a, &b]), dir.path(), false).await;
    allowed(&restarted.check(&at(&pat_a)).await);

    // Adding the issuer back restores its users' PATs (and JWTs).
    std::fs::write(&file, yaml(&[&a, &b])).unwrap();
    assert!(srv.reloader.reload(&loader(&file, dir.path())));
    all_allowed(srv.grpc_addr).await;
}

/// A PAT-only deployment (no JWT issuer) names its owners' issuer in
/// `pat.owner_issuers`; an owner issuer in neither list is refused.
#[tokio::test]
async fn pat_owner_issuers_vouch_for_owners_without_a_jwt_issuer() {
    use portcullis_testkit::in_process::{InProcess, create_pat};
    let dir = tempfile::tempdir().unwrap();
    let with = format!(
        "pat:\n  owner_issuers: [\"https://idp.example\"]\n{}",
        policy("a:read")
    );
    let srv = InProcess::from_yaml(&with, dir.path(), false).await;
    let (raw, _) = create_pat(&srv.store(), "u", "u", "https://idp.example", &["a:read"]).await;
    let (other, _) = create_pat(&srv.store(), "u", "u", "https://other.example", &["a:read"]).await;
    allowed(&srv.check(&Req::get("/x").bearer(&raw)).await);
    let d = denied(&srv.check(&Req::get("/x").bearer(&other)).await);
    assert_eq!(d.description(), "token owner's issuer is no longer trusted");
    let without = InProcess::from_yaml(&policy("a:read"), dir.path(), false).await;
    let d = denied(&without.check(&Req::get("/x").bearer(&raw)).await);
    assert_eq!(d.description(), "token owner's issuer is no longer trusted");
}

/// A reload that changes `identity_headers` (prefix, set, mapped claims)
/// applies to a token already seen (cached and rendered once): the next
/// allows carry the new names with the same values made safe, remove the
/// forged copies the new configuration owns, and never the old names.
#[tokio::test]
async fn identity_headers_reload_applies_to_a_token_already_seen() {
    let a = "policy:\n  default: authenticated\n".to_owned();
    let b = "identity_headers:\n  prefix: x-user-\n  set: [subject, username]\n  claims:\n    preferred_username: x-name\n    azp: X-Client-App\npolicy:\n  default: authenticated\n".to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &a).unwrap();
    let srv = serve_yaml(&a, dir.path(), true).await;
    let t = DevIssuer::load_existing(dir.path(), None)
        .unwrap()
        .mint(&DevTokenSpec {
            sub: "alice".into(),
            username: Some("al\r\nx-evil: 1".into()),
            email: None,
            scopes: vec!["a:read".into()],
            expires_in: Duration::from_secs(600),
            client: "web".into(),
        })
        .unwrap();
    let req = Req::get("/x")
        .bearer(&t)
        .header("x-auth-subject", "admin")
        .header("x-user-subject", "admin")
        .header("x-user-email", "admin@example.org")
        .header("X-Name", "admin");
    for round in 0..2 {
        std::fs::write(&file, &a).unwrap();
        assert!(srv.reloader.reload(&loader(&file, dir.path())));
        for _ in 0..2 {
            let (h, removed) = allowed(&check(srv.grpc_addr, &req).await);
            assert_eq!(h["x-auth-subject"], "alice", "{round}");
            assert_eq!(h["x-auth-username"], "al  x-evil: 1", "{round}");
            assert!(!h.keys().any(|k| k.starts_with("x-user-")), "{h:?}");
            assert!(!h.contains_key("x-name"), "{h:?}");
            assert!(removed.is_empty(), "{removed:?}");
        }
        std::fs::write(&file, &b).unwrap();
        assert!(srv.reloader.reload(&loader(&file, dir.path())));
        for _ in 0..2 {
            let (h, mut removed) = allowed(&check(srv.grpc_addr, &req).await);
            let mut names: Vec<&str> = h.keys().map(String::as_str).collect();
            names.sort();
            assert_eq!(
                names,
                [
                    "x-client-app",
                    "x-name",
                    "x-user-subject",
                    "x-user-username"
                ],
                "{round}"
            );
            assert_eq!(h["x-user-subject"], "alice");
            assert_eq!(h["x-user-username"], "al  x-evil: 1");
            assert_eq!(h["x-name"], "al  x-evil: 1");
            assert_eq!(h["x-client-app"], "web");
            removed.sort();
            assert_eq!(removed, ["x-user-email"], "{round}");
        }
    }
}
