//! The `/ui` page signing in through the real Keycloak, for
//! `tests/keycloak_signin*.rs`: portcullis configured with `api.ui.oidc`
//! ([`crate::oidc::signin_config`]), the shipped `web` client allowing this
//! page's origin for the test ([`ClientGrant`]), and the steps of a
//! sign-in in Chromium.

use fantoccini::Client;
use portcullis::server::Running;
use serde_json::json;

use crate::browser::{click, type_into, visible};
use crate::check::{serve_yaml, wait_ready};
use crate::oidc::{ClientGrant, end_sessions, signin_config};
use crate::real_keycloak::{PASSWORD, READY, RealKeycloak};

/// portcullis with the sign-in page, and the `web` client allowing it.
pub struct SigninPage {
    pub kc: RealKeycloak,
    pub srv: Running,
    /// `http://127.0.0.1:PORT` (the HTTP port).
    pub origin: String,
    grant: Option<ClientGrant>,
    _dir: tempfile::TempDir,
}

impl SigninPage {
    /// `extra`: more top-level config (say, `pat:`).
    pub async fn start(extra: &str) -> SigninPage {
        let kc = RealKeycloak::get().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let srv = serve_yaml(&signin_config(&kc, "", extra), dir.path(), false).await;
        wait_ready(&srv, READY).await;
        let origin = format!("http://{}", srv.http_addr);
        let grant = ClientGrant::add(&kc, "web", &origin, "/ui").await;
        SigninPage {
            kc,
            srv,
            origin,
            grant: Some(grant),
            _dir: dir,
        }
    }

    /// The page's address, also its redirect URI.
    pub fn url(&self) -> String {
        format!("{}/ui", self.origin)
    }

    /// Ends `users`' sessions and takes the origin off the client again.
    pub async fn finish(mut self, users: &[&str]) {
        for u in users {
            end_sessions(&self.kc, u).await;
        }
        if let Some(g) = self.grant.take() {
            g.release(&self.kc).await;
        }
    }

    /// Opens the page and presses "Sign in": returns on Keycloak's login
    /// page (the authorization request checked for PKCE S256, state, nonce).
    pub async fn start_sign_in(&self, c: &Client) {
        c.goto(&self.url()).await.expect("open /ui");
        visible(c, "#oidc-signin:not([hidden])").await;
        click(c, "#sign-in-button").await;
        visible(c, "#kc-form-login").await;
        let at = c.current_url().await.expect("url");
        assert!(at.as_str().starts_with(&self.kc.issuer()), "{at}");
        for k in [
            "code_challenge_method=S256",
            "code_challenge=",
            "state=",
            "nonce=",
            "client_id=web",
        ] {
            assert!(at.as_str().contains(k), "{k} missing from {at}");
        }
    }

    /// The whole sign-in, typing into Keycloak's form; returns signed in.
    pub async fn sign_in(&self, c: &Client, user: &str) {
        self.start_sign_in(c).await;
        type_into(c, "#username", user).await;
        type_into(c, "#password", PASSWORD).await;
        click(c, "#kc-login").await;
        visible(c, "#create:not([hidden])").await;
    }

    /// Nothing kept by the browser: no code or state in the address bar,
    /// nothing in localStorage or sessionStorage, no cookie.
    pub async fn assert_nothing_stored(&self, c: &Client) {
        let url = c.current_url().await.expect("url");
        assert_eq!(url.as_str(), self.url(), "address bar");
        let v = c
            .execute(
                "return {local: Object.keys(localStorage), session: Object.keys(sessionStorage), cookie: document.cookie};",
                vec![],
            )
            .await
            .expect("read storage");
        assert_eq!(v["local"], json!([]), "{v}");
        assert_eq!(v["session"], json!([]), "{v}");
        assert_eq!(v["cookie"], "", "{v}");
    }
}
