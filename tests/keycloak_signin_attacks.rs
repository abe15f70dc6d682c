//! Attacks on the `/ui` page's sign-in (an in-page public client: PKCE
//! S256, `state` and `nonce`, tokens in memory only), with the real
//! Keycloak 26 and real Chromium.
//!
//! - **Forged state** (login CSRF / code injection): an attacker signs in
//!   as themselves, keeps the code, and sends the victim to the page with
//!   it. The page refuses the answer it did not ask for, signs nobody in,
//!   and never spends the code: the test redeems it afterwards.
//! - **Replayed code**: a sign-in answer seen once (history, logs, a
//!   shoulder) and opened again: the page refuses it (its one-time state is
//!   gone), and Keycloak refuses the code a second time.
//!
//! A backend-for-frontend would add cross-site POSTs and cookies from
//! other origins to this list; this shape has no session cookie at all
//! (the API is bearer-only), which the tests check too.

use std::time::Duration;

use fantoccini::Client;
use portcullis_testkit::browser::{browser, start_driver, text_of, visible, wait_text};
use portcullis_testkit::oidc::{Pkce, authorize_url, form_login, param, random, redeem};
use portcullis_testkit::real_keycloak::PASSWORD;
use portcullis_testkit::signin::SigninPage;

const LIMIT: Duration = Duration::from_secs(180);

/// A code the attacker got for their own account, for the page's
/// redirect URI, with their own state and PKCE verifier.
async fn attackers_code(p: &SigninPage) -> (String, String, Pkce) {
    let pkce = Pkce::new();
    let state = random();
    let url = authorize_url(&p.kc, "web", &p.url(), &state, &random(), &pkce);
    let back = form_login(&url, "mallory", PASSWORD).await;
    assert_eq!(param(&back, "state").as_deref(), Some(state.as_str()));
    let code = param(&back, "code").expect("a code for mallory");
    (code, state, pkce)
}

/// The page after an answer it must refuse: nobody signed in, the error
/// shown, the address bar and storage clean.
async fn assert_refused(c: &Client, p: &SigninPage) {
    wait_text(c, "#status", "state does not match").await;
    assert_eq!(text_of(c, "#whoami").await, "Not signed in.");
    visible(c, "#create[hidden]").await;
    visible(c, "#oidc-signin:not([hidden])").await;
    p.assert_nothing_stored(c).await;
}

#[tokio::test]
async fn forged_state_is_refused_and_the_code_is_never_spent() {
    tokio::time::timeout(LIMIT, forged_state())
        .await
        .expect("forged-state test timed out");
}

async fn forged_state() {
    let p = SigninPage::start("").await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    // 1. The victim has no sign-in in progress.
    let (code, state, pkce) = attackers_code(&p).await;
    let link = format!("{}?state={state}&code={code}", p.url());
    c.goto(&link).await.unwrap();
    assert_refused(&c, &p).await;
    // The page never sent the code to Keycloak: the attacker still can.
    let (st, body) = redeem(&p.kc, "web", &code, &p.url(), &pkce.verifier).await;
    assert_eq!(st, 200, "the page spent the attacker's code: {body}");

    // 2. The victim has a sign-in in progress (on Keycloak's login page,
    // the page's own state waiting in sessionStorage): the attacker's
    // answer still does not match it.
    let (code, state, pkce) = attackers_code(&p).await;
    p.start_sign_in(&c).await;
    let iss = p.kc.issuer();
    let link = format!("{}?state={state}&code={code}&iss={iss}", p.url());
    c.goto(&link).await.unwrap();
    assert_refused(&c, &p).await;
    let (st, body) = redeem(&p.kc, "web", &code, &p.url(), &pkce.verifier).await;
    assert_eq!(st, 200, "the page spent the attacker's code: {body}");

    // 3. No state at all.
    c.goto(&format!("{}?code=whatever", p.url())).await.unwrap();
    assert_refused(&c, &p).await;

    c.close().await.unwrap();
    p.finish(&["mallory"]).await;
}

#[tokio::test]
async fn replayed_code_is_refused_by_the_page_and_by_keycloak() {
    tokio::time::timeout(LIMIT, replayed_code())
        .await
        .expect("replayed-code test timed out");
}

async fn replayed_code() {
    let p = SigninPage::start("").await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    // The victim's own sign-in, whose answer the test holds in its hands:
    // the page's authorization request (from the address bar), Keycloak's
    // form filled in, the answer opened in the victim's browser.
    p.start_sign_in(&c).await;
    let request = c.current_url().await.unwrap();
    let answer = form_login(request.as_str(), "dana", PASSWORD).await;
    let code = param(&answer, "code").expect("code");
    c.goto(answer.as_str()).await.unwrap();
    visible(&c, "#create:not([hidden])").await;
    assert!(text_of(&c, "#whoami").await.contains("dana"));
    p.assert_nothing_stored(&c).await;

    // Opened again: the page's one-time state is used up.
    c.goto(answer.as_str()).await.unwrap();
    assert_refused(&c, &p).await;

    // And Keycloak takes no code twice.
    let (st, body) = redeem(&p.kc, "web", &code, &p.url(), &Pkce::new().verifier).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("Code not valid")),
        "{body}"
    );

    c.close().await.unwrap();
    p.finish(&["dana"]).await;
}

/// The shape's other exposures: no cookie anywhere (so nothing for a
/// cross-site request to ride on), and a CSP letting the page connect only
/// to itself and the issuer.
#[tokio::test]
async fn no_cookie_and_the_csp_allows_only_the_page_and_the_issuer() {
    let p = SigninPage::start("").await;
    let http = reqwest::Client::new();
    let kc_origin = p.kc.base.clone();
    for path in [
        "/ui",
        "/ui/app.js",
        "/ui/oidc.js",
        "/ui/config.json",
        "/api/v1/meta",
    ] {
        let r = http
            .get(format!("{}{path}", p.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers().get("set-cookie").is_none(),
            "{path} sets a cookie"
        );
        if path.starts_with("/ui") {
            let csp = r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                csp.contains(&format!("connect-src 'self' {kc_origin};")),
                "{path}: {csp}"
            );
            for d in [
                "script-src 'self'",
                "frame-ancestors 'none'",
                "form-action 'none'",
            ] {
                assert!(csp.contains(d), "{path}: {csp}");
            }
        }
    }
    let cfg: serde_json::Value = http
        .get(format!("{}/ui/config.json", p.origin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["oidc"]["issuer"], p.kc.issuer());
    assert_eq!(cfg["oidc"]["client_id"], "web");
    // The API takes no cookie as a credential: a request carrying only
    // cookies is anonymous.
    let r = http
        .get(format!("{}/api/v1/tokens", p.origin))
        .header("cookie", "session=anything; KEYCLOAK_IDENTITY=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    p.finish(&[]).await;
}
