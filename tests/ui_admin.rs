//! The `/ui` page's usage details and admin inventory, in real headless
//! Chromium: a token's last use (address as Envoy reports it, User-Agent)
//! shows in the owner's list; a caller with `api.admin_scope` gets "All
//! tokens" (`GET /api/v1/admin/tokens`, with filters), anyone else does not.

use std::time::Duration;

use fantoccini::{Client, Locator};
use portcullis_testkit::browser::{browser, click, start_driver, target_file, text_of, visible};
use portcullis_testkit::check::{Req, allowed, check, serve_yaml};
use portcullis_testkit::wait::eventually;

// A short flush so the last use reaches the store (and the page) at once.
const YAML: &str = "pat:\n  last_used_flush: 100ms\npolicy:\n  default: authenticated\n";

#[tokio::test]
async fn the_page_shows_last_use_and_admins_see_every_token() {
    tokio::time::timeout(Duration::from_secs(120), flow())
        .await
        .expect("browser test timed out");
}

/// Dev login as `user` with exactly `scopes`.
async fn dev_login(c: &Client, user: &str, scopes: &str) {
    visible(c, "#dev-form:not([hidden])").await;
    for (css, value) in [("#dev-user", user), ("#dev-scopes", scopes)] {
        let field = visible(c, css).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }
    click(c, "#dev-login").await;
    visible(c, "#create:not([hidden])").await;
}

async fn create_token(c: &Client, name: &str) -> String {
    visible(c, "#new-name").await.send_keys(name).await.unwrap();
    click(c, "#scope-boxes input[value='api:read']").await;
    click(c, "#create-token").await;
    visible(c, "#new-token-box:not([hidden])").await;
    let raw = text_of(c, "#new-token").await;
    click(c, "#dismiss-token").await;
    raw
}

async fn flow() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    c.goto(&format!("http://{}/ui", srv.http_addr))
        .await
        .unwrap();

    // bob (no admin scope) makes a token; the page has no admin section.
    dev_login(&c, "bob", "tokens:manage api:read").await;
    create_token(&c, "bob-laptop").await;
    visible(&c, "#admin[hidden]").await;
    click(&c, "#sign-out").await;

    // ada, an admin, makes a token and uses it from 203.0.113.7.
    dev_login(&c, "ada", "tokens:manage tokens:admin api:read").await;
    let raw = create_token(&c, "ci-deploy").await;
    let used = Req::get("/x")
        .bearer(&raw)
        .source_ip("203.0.113.7")
        .header("user-agent", "deploy-bot/1.0 (linux)");
    allowed(&check(srv.grpc_addr, &used).await);
    // The owner's list shows where and with what it was last used.
    // Text and title are read in the same probe: a refresh re-renders the
    // table, so an element kept past it is stale.
    let (text, title) = eventually(
        Duration::from_secs(10),
        "last use on the page",
        async || {
            click(&c, "#refresh").await;
            let row = c
                .find(Locator::Css("#tokens tbody tr td[data-label='Last used']"))
                .await
                .map_err(|e| e.to_string())?;
            let text = row.text().await.map_err(|e| e.to_string())?;
            let title = row.attr("title").await.map_err(|e| e.to_string())?;
            if text.contains("203.0.113.7") {
                Ok((text, title))
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert!(text.contains("deploy-bot/1.0 (linux)"), "{text}");
    assert_eq!(title.as_deref(), Some("deploy-bot/1.0 (linux)"));

    // "All tokens": both users' tokens, then filtered by name.
    visible(&c, "#admin:not([hidden])").await;
    let all = text_of(&c, "#all-tokens tbody").await;
    assert!(
        all.contains("bob-laptop") && all.contains("ci-deploy"),
        "{all}"
    );
    let name = visible(&c, "#admin-name").await;
    name.send_keys("laptop").await.unwrap();
    click(&c, "#admin-search").await;
    eventually(Duration::from_secs(10), "name filter applied", async || {
        let t = text_of(&c, "#all-tokens tbody").await;
        if t.contains("bob-laptop") && !t.contains("ci-deploy") {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
    name.clear().await.unwrap();
    name.send_keys("no-such-token").await.unwrap();
    click(&c, "#admin-search").await;
    visible(&c, "#admin-empty:not([hidden])").await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(target_file("ui-admin.png"), png).unwrap();

    // Signing out clears the inventory from the page.
    click(&c, "#sign-out").await;
    visible(&c, "#admin[hidden]").await;
    let rows = c
        .find_all(Locator::Css("#all-tokens tbody tr"))
        .await
        .unwrap();
    assert!(rows.is_empty());
    c.close().await.unwrap();
}
