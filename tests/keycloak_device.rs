//! `portcullis login` with the device authorization grant (RFC 8628)
//! against the real Keycloak 26, approved (or refused) in real Chromium on
//! Keycloak's own device page; then `portcullis token … --api` as that
//! user, the PAT checked through Check; refresh on expiry; `logout`; a
//! device code left to expire.
//!
//! The expiry test shortens the shipped `cli` client's device-code
//! lifespan for a moment and puts it back; the tests run one at a time
//! ([`SERIAL`]) so none sees another's change.
//!
//! Needs Keycloak and Chromium: `scripts/test` provides them; alone,
//! `cargo test --test keycloak_device` starts its own Keycloak.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fantoccini::Client;
use portcullis::server::Running;
use portcullis_testkit::browser::{browser, click, start_driver, type_into, visible, wait_text};
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, serve_yaml, wait_ready,
};
use portcullis_testkit::cli::Cli;
use portcullis_testkit::oidc::{ClientSettings, end_sessions, sessions, signin_config};
use portcullis_testkit::real_keycloak::{PASSWORD, READY, RealKeycloak};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const LIMIT: Duration = Duration::from_secs(240);
/// Keycloak's polling interval is 5 s: approval to exit takes up to that.
const POLLING: Duration = Duration::from_secs(40);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Env {
    kc: RealKeycloak,
    srv: Running,
    api: String,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let kc = RealKeycloak::get().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&signin_config(&kc, "", ""), dir.path(), false).await;
    wait_ready(&srv, READY).await;
    Env {
        api: format!("http://{}", srv.http_addr),
        kc,
        srv,
        _dir: dir,
    }
}

/// Keycloak's device page, reached through the complete verification URL
/// the CLI printed: the login form, typed into.
async fn log_in_on_device_page(c: &Client, url: &str, user: &str) {
    c.goto(url).await.unwrap();
    visible(c, "#kc-form-login").await;
    type_into(c, "#username", user).await;
    type_into(c, "#password", PASSWORD).await;
    click(c, "#kc-login").await;
}

fn read_json(p: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[tokio::test]
async fn device_login_approved_in_chromium_then_tokens_through_the_api() {
    let _s = SERIAL.lock().await;
    tokio::time::timeout(LIMIT, approved())
        .await
        .expect("device login test timed out");
}

async fn approved() {
    let e = env().await;
    end_sessions(&e.kc, "erin").await;
    let cli = Cli::new(BIN);
    let login = cli.start_device_login(&["--issuer", &e.kc.issuer()]).await;
    assert!(
        login.verification_uri_complete.contains(&login.user_code),
        "{}",
        login.verification_uri_complete
    );

    let driver = start_driver().await;
    let c = browser(&driver).await;
    log_in_on_device_page(&c, &login.verification_uri_complete, "erin").await;
    // Keycloak always asks before it lets a device in (RFC 8628 §5.4:
    // the user must see what they approve).
    wait_text(&c, "body", "Do you grant these access privileges?").await;
    click(&c, "#kc-login").await;
    wait_text(&c, "body", "Device Login Successful").await;
    let ran = login.finish(POLLING).await;
    assert!(ran.ok(), "{ran:?}");
    assert!(ran.stderr.contains("as erin"), "{ran:?}");
    let creds = cli.credentials();
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::metadata(creds.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // A PAT through the API, as erin: the raw token alone on stdout.
    let api = e.api.as_str();
    let out = cli
        .run(&[
            "token",
            "create",
            "--api",
            api,
            "--name",
            "laptop",
            "--scopes",
            "uploads:read",
        ])
        .await;
    let pat = out.expect_ok().trim().to_owned();
    assert_eq!(out.stdout, format!("{pat}\n"), "stdout is the token alone");
    assert!(pat.starts_with("pat_"), "{pat}");
    let (h, _) =
        allowed(&check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&pat)).await);
    assert_eq!(h["x-auth-username"], "erin");
    assert_eq!(h["x-auth-method"], "pat");

    // The API's rules apply: no scope erin does not hold.
    let out = cli
        .run(&[
            "token",
            "create",
            "--api",
            api,
            "--name",
            "w",
            "--scopes",
            "uploads:write",
        ])
        .await;
    out.expect_err("insufficient_scope");

    let out = cli.run(&["token", "list", "--api", api, "--json"]).await;
    let list: Value = serde_json::from_str(out.expect_ok()).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["name"], "laptop");
    assert!(!out.stdout.contains(&pat));
    let out = cli.run(&["token", "get", "--api", api, &id]).await;
    assert!(out.expect_ok().contains("laptop"), "{out:?}");

    // Rotate: a new raw token alone on stdout; the old one is refused.
    let out = cli.run(&["token", "rotate", "--api", api, &id]).await;
    let new = out.expect_ok().trim().to_owned();
    assert_eq!(out.stdout, format!("{new}\n"));
    allowed(&check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&new)).await);
    assert_invalid_token(
        &check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&pat)).await,
        "token revoked",
    );

    // An expired access token is renewed with the refresh token.
    let mut stored = read_json(&creds);
    let old_access = stored["access_token"].clone();
    stored["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(&creds, serde_json::to_vec(&stored).unwrap()).unwrap();
    let out = cli.run(&["token", "list", "--api", api]).await;
    assert!(out.expect_ok().contains("laptop"), "{out:?}");
    let renewed = read_json(&creds);
    assert_ne!(renewed["access_token"], old_access, "not renewed");
    assert_ne!(renewed["expires_at"], json!("2020-01-01T00:00:00Z"));
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Presenting the rotated-away token again revoked the whole chain
    // (reuse detection), the successor too.
    portcullis_testkit::wait::eventually(Duration::from_secs(10), "chain revoked", async || {
        let r = check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&new)).await;
        if portcullis_testkit::check::code(&r) == 16 {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;

    // Revoke through the API.
    let out = cli
        .run(&[
            "token",
            "create",
            "--api",
            api,
            "--name",
            "second",
            "--scopes",
            "uploads:read",
        ])
        .await;
    let second = out.expect_ok().trim().to_owned();
    allowed(
        &check(
            e.srv.grpc_addr,
            &Req::get("/api/v1/uploads/1").bearer(&second),
        )
        .await,
    );
    let out = cli.run(&["token", "list", "--api", api, "--json"]).await;
    let v: Value = serde_json::from_str(out.expect_ok()).unwrap();
    let second_id = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "second")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_owned();
    let out = cli
        .run(&["token", "revoke", "--api", api, &second_id])
        .await;
    assert!(out.expect_ok().contains("revoked"), "{out:?}");
    assert_invalid_token(
        &check(
            e.srv.grpc_addr,
            &Req::get("/api/v1/uploads/1").bearer(&second),
        )
        .await,
        "token revoked",
    );
    // Not erin's: 404, like an id that does not exist.
    let out = cli
        .run(&[
            "token",
            "revoke",
            "--api",
            api,
            "00000000-0000-4000-8000-000000000000",
        ])
        .await;
    out.expect_err("404");

    // Two commands at once on an expired login: one renews, the other
    // waits for its lock and uses the result (Keycloak rotates refresh
    // tokens, so two renewals with the same one would fail the second).
    let mut stored = read_json(&creds);
    stored["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(&creds, serde_json::to_vec(&stored).unwrap()).unwrap();
    let list = ["token", "list", "--api", api];
    let (a, b) = tokio::join!(cli.run(&list), cli.run(&list));
    a.expect_ok();
    b.expect_ok();
    cli.run(&["token", "list", "--api", api]).await.expect_ok();

    // Logout ends the Keycloak session and forgets the tokens, even (above
    // all) when the file turned out readable by others.
    assert!(!sessions(&e.kc, "erin").await.is_empty());
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli.run(&["logout"]).await;
    assert!(out.ok(), "{out:?}");
    assert!(out.stderr.contains("has mode 0644"), "{out:?}");
    assert!(
        out.stderr.contains("ending its session all the same"),
        "{out:?}"
    );
    let left = sessions(&e.kc, "erin").await;
    assert!(left.is_empty(), "session left: {left:?}");
    assert!(!creds.exists());
    cli.run(&["token", "list", "--api", api])
        .await
        .expect_err("not logged in");

    c.close().await.unwrap();
    end_sessions(&e.kc, "erin").await;
}

#[tokio::test]
async fn device_login_refused_in_the_browser_exits_non_zero() {
    let _s = SERIAL.lock().await;
    tokio::time::timeout(LIMIT, refused())
        .await
        .expect("refusal test timed out");
}

async fn refused() {
    let e = env().await;
    let cli = Cli::new(BIN);
    let login = cli.start_device_login(&["--issuer", &e.kc.issuer()]).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    log_in_on_device_page(&c, &login.verification_uri_complete, "erin").await;
    wait_text(&c, "body", "Do you grant these access privileges?").await;
    click(&c, "#kc-cancel").await;
    let ran = login.finish(POLLING).await;
    ran.expect_err("access denied");
    assert!(!cli.credentials().exists());
    c.close().await.unwrap();
    end_sessions(&e.kc, "erin").await;
}

#[tokio::test]
async fn device_code_left_to_expire_exits_non_zero() {
    let _s = SERIAL.lock().await;
    tokio::time::timeout(LIMIT, expired())
        .await
        .expect("expiry test timed out");
}

async fn expired() {
    let e = env().await;
    let short =
        ClientSettings::set(&e.kc, "cli", &[], &[("oauth2.device.code.lifespan", "3")]).await;
    let cli = Cli::new(BIN);
    let login = cli.start_device_login(&["--issuer", &e.kc.issuer()]).await;
    short.restore(&e.kc).await;
    let ran = login.finish(POLLING).await;
    ran.expect_err("device code expired");
    assert!(!cli.credentials().exists());
}
