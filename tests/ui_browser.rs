//! The `/ui` page in real headless Chromium (Debian's `chromium` +
//! `chromium-driver`; `scripts/test` installs them), driven over WebDriver:
//! dev login → create → the token is shown once → it works in a Check over
//! gRPC → revoke → the Check is denied. Screenshots: `target/ui-e2e.png`
//! (desktop) and `target/ui-e2e-phone.png` (phone width).

use std::time::Duration;

use fantoccini::Locator;
use portcullis_testkit::browser::{browser, start_driver, target_file, visible, wait_text};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check, serve_yaml};

const YAML: &str = "policy:\n  default: authenticated\n";

#[tokio::test]
async fn ui_create_see_once_check_revoke_in_chromium() {
    tokio::time::timeout(Duration::from_secs(120), flow())
        .await
        .expect("browser test timed out");
}

async fn flow() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    let base = format!("http://{}", srv.http_addr);

    c.goto(&format!("{base}/ui")).await.unwrap();
    assert!(c.title().await.unwrap().contains("personal access tokens"));
    // --dev: the dev login form is shown; sign in as alice.
    visible(&c, "#dev-form:not([hidden])").await;
    c.find(Locator::Css("#dev-login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(&c, "#create:not([hidden])").await;
    visible(&c, "#signin[hidden]").await;
    let who = c.find(Locator::Css("#whoami")).await.unwrap();
    assert!(who.text().await.unwrap().contains("alice"));

    // Create: name, one scope checkbox, expiry.
    let name = c.find(Locator::Css("#new-name")).await.unwrap();
    name.send_keys("browser-ci").await.unwrap();
    c.find(Locator::Css("#scope-boxes input[value='api:read']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("#create-token"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(&c, "#new-token-box:not([hidden])").await;
    let raw = c
        .find(Locator::Css("#new-token"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(raw.starts_with("pat_"), "{raw:?}");
    visible(&c, "#tokens tbody tr .badge.active").await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(target_file("ui-e2e.png"), png).unwrap();

    // The token works in a Check over gRPC.
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&raw)).await);
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-scopes"], "api:read");

    // Shown once: dismissed, it is gone from the page; a reload lists only
    // the display hint.
    c.find(Locator::Css("#dismiss-token"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(&c, "#new-token-box[hidden]").await;
    assert!(!c.source().await.unwrap().contains(&raw));
    let row = c.find(Locator::Css("#tokens tbody tr")).await.unwrap();
    let row_text = row.text().await.unwrap();
    assert!(row_text.contains("browser-ci") && row_text.contains("api:read"));
    assert!(!row_text.contains(&raw));

    // Phone width: the table turns into stacked cards.
    c.set_window_size(390, 844).await.unwrap();
    c.execute("document.getElementById('list').scrollIntoView()", vec![])
        .await
        .unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(target_file("ui-e2e-phone.png"), png).unwrap();
    c.set_window_size(1100, 1000).await.unwrap();

    // Revoke (confirmed) → the Check is denied.
    c.find(Locator::Css("#tokens tbody tr button.revoke"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    visible(&c, "#tokens tbody tr .badge.revoked").await;
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/x").bearer(&raw)).await,
        "token revoked",
    );
    c.close().await.unwrap();
}

/// A sign-in answer (`?code=…&state=…`) leaves the address bar and history
/// as the page loads, whatever happens next: here the provider cannot be
/// reached (its discovery fails), and a page with no `api.ui.oidc` at all
/// never handles an answer. Either way the code must not stay in the
/// history for whoever opens the browser next.
#[tokio::test]
async fn a_sign_in_answer_leaves_the_address_bar_even_when_the_page_cannot_sign_in() {
    tokio::time::timeout(Duration::from_secs(120), answer_cleared())
        .await
        .expect("browser test timed out");
}

async fn answer_cleared() {
    // An issuer nobody answers for (port 1 on loopback).
    let iss = "http://127.0.0.1:1/realms/gone";
    let yaml = format!(
        "issuers:\n  - issuer: {iss}\n    audiences: [portcullis]\napi:\n  ui:\n    oidc:\n      issuer: {iss}\n      client_id: web\npolicy:\n  default: authenticated\n"
    );
    let d1 = tempfile::tempdir().unwrap();
    let unreachable = serve_yaml(&yaml, d1.path(), false).await;
    let d2 = tempfile::tempdir().unwrap();
    let no_oidc = serve_yaml(YAML, d2.path(), true).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    let answer = "?code=c0de-from-the-provider&state=st4te&session_state=s&iss=x";

    c.goto(&format!("http://{}/ui{answer}", unreachable.http_addr))
        .await
        .unwrap();
    wait_text(&c, "#status", "Cannot reach the sign-in service").await;
    let url = c.current_url().await.unwrap();
    assert_eq!(url.query(), None, "{url}");
    assert_eq!(url.path(), "/ui");

    c.goto(&format!("http://{}/ui{answer}", no_oidc.http_addr))
        .await
        .unwrap();
    visible(&c, "#dev-form:not([hidden])").await;
    let url = c.current_url().await.unwrap();
    assert_eq!(url.query(), None, "{url}");
    c.close().await.unwrap();
}
