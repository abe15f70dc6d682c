//! The `/ui` token page signing in through the real Keycloak 26, in real
//! headless Chromium: "Sign in" → Keycloak's own login form (typed into) →
//! back on the page with no code in the address bar and no token in
//! storage → create a PAT (Keycloak-exchanged: the Volundr flow, the
//! signed-in user's own access token exchanged) → shown once → allowed
//! through a real Envoy → revoked → refused → "Sign out" ends the Keycloak
//! session (admin API). Also: the session renews before the access token
//! expires. Screenshot: `target/keycloak-signin.png`.
//!
//! The shipped `web` client gets this test's page origin added for the
//! test and removed after (`SigninPage`); each test signs in its own user.
//!
//! Needs Keycloak, Envoy and Chromium: `scripts/test` provides them; alone,
//! `cargo test --test keycloak_signin` starts its own Keycloak.

use std::time::Duration;

use fantoccini::Locator;
use portcullis_testkit::browser::{
    browser, click, screenshot, start_driver, text_of, type_into, visible, wait_text,
};
use portcullis_testkit::echo::Echo;
use portcullis_testkit::envoy::Envoy;
use portcullis_testkit::oidc::{ClientSettings, end_sessions, sessions};
use portcullis_testkit::real_keycloak::{RealKeycloak, SHIPPED_SECRET};
use portcullis_testkit::signin::SigninPage;
use portcullis_testkit::wait::eventually_every;

const LIMIT: Duration = Duration::from_secs(240);

#[tokio::test]
async fn browser_signs_in_at_keycloak_creates_uses_revokes_and_signs_out() {
    tokio::time::timeout(LIMIT, signin_flow())
        .await
        .expect("browser sign-in test timed out");
}

async fn signin_flow() {
    let exchange = format!(
        r#"
pat:
  issuer: keycloak-exchange
  grantable_scopes: ["uploads:*"]
  exchange:
    token_url: {}
    client_id: portcullis-pat-issuer
    client_secret: {SHIPPED_SECRET}
  jwt_marker: {{ claim: token_use, value: pat }}
"#,
        RealKeycloak::get().await.token_url()
    );
    let p = SigninPage::start(&exchange).await;
    end_sessions(&p.kc, "dana").await;
    let echo = Echo::start().await;
    let envoy = Envoy::start(p.srv.grpc_addr, echo.addr).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    p.sign_in(&c, "dana").await;
    assert!(text_of(&c, "#whoami").await.contains("dana"));
    p.assert_nothing_stored(&c).await;
    let live = sessions(&p.kc, "dana").await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0]["clients"].to_string().contains("web"), "{live:?}");

    // The scopes dana may grant are offered; create one with uploads:read.
    type_into(&c, "#new-name", "laptop").await;
    click(&c, "#scope-boxes input[value='uploads:read']").await;
    click(&c, "#create-token").await;
    visible(&c, "#new-token-box:not([hidden])").await;
    let raw = text_of(&c, "#new-token").await;
    // Keycloak-exchanged: a JWT Keycloak signed for dana, marked as a PAT.
    assert_eq!(raw.split('.').count(), 3, "{raw}");
    visible(&c, "#tokens tbody tr .badge.active").await;
    screenshot(&c, "keycloak-signin.png").await;
    let row = text_of(&c, "#tokens tbody tr").await;
    assert!(row.contains("laptop") && row.contains("never"), "{row}");

    // Through Envoy: allowed, as dana's PAT.
    let auth = format!("Bearer {raw}");
    let r = envoy
        .get("/api/v1/uploads/1", &[("authorization", auth.as_str())])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-auth-method"], "pat", "{seen}");
    assert_eq!(seen["headers"]["x-auth-username"], "dana", "{seen}");

    // Shown once: dismissed, it is gone from the page.
    click(&c, "#dismiss-token").await;
    visible(&c, "#new-token-box[hidden]").await;
    assert!(!c.source().await.unwrap().contains(&raw));

    // Revoke → refused through Envoy.
    click(&c, "#tokens tbody tr button.revoke").await;
    c.accept_alert().await.unwrap();
    visible(&c, "#tokens tbody tr .badge.revoked").await;
    let r = envoy
        .get("/api/v1/uploads/1", &[("authorization", auth.as_str())])
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // Sign out: RP-initiated logout ends the Keycloak session, and the
    // browser comes back to the page, signed out.
    click(&c, "#sign-out").await;
    wait_text(&c, "#status", "Signed out, also of Keycloak").await;
    visible(&c, "#oidc-signin:not([hidden])").await;
    p.assert_nothing_stored(&c).await;
    assert!(sessions(&p.kc, "dana").await.is_empty(), "session left");
    // Signing in again asks for the password again (no SSO session left).
    click(&c, "#sign-in-button").await;
    visible(&c, "#kc-form-login").await;

    c.close().await.unwrap();
    p.finish(&["dana"]).await;
}

#[tokio::test]
async fn the_session_renews_before_the_access_token_expires() {
    tokio::time::timeout(LIMIT, renewal_flow())
        .await
        .expect("renewal test timed out");
}

async fn renewal_flow() {
    let p = SigninPage::start("").await;
    end_sessions(&p.kc, "frank").await;
    // 15 s access tokens: the page renews a fifth of that before expiry.
    let short = ClientSettings::set(&p.kc, "web", &[], &[("access.token.lifespan", "15")]).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    p.sign_in(&c, "frank").await;
    // Past the first token's expiry, twice renewed, the page still works.
    eventually_every(
        Duration::from_secs(40),
        Duration::from_secs(1),
        "the page renewed its session twice",
        async || {
            let t = c
                .find(Locator::Css("#renewed"))
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let n: u32 = t
                .split_whitespace()
                .find_map(|w| w.parse().ok())
                .unwrap_or(0);
            if n >= 2 { Ok(()) } else { Err(t) }
        },
    )
    .await;
    click(&c, "#refresh").await;
    type_into(&c, "#new-name", "after-renewal").await;
    click(&c, "#scope-boxes input[value='uploads:read']").await;
    click(&c, "#create-token").await;
    visible(&c, "#new-token-box:not([hidden])").await;
    wait_text(&c, "#status", "created").await;
    c.close().await.unwrap();
    short.restore(&p.kc).await;
    p.finish(&["frank"]).await;
}
