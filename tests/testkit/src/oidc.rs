//! OpenID Connect browser flows against the real Keycloak
//! ([`crate::real_keycloak`]), for the sign-in tests of `/ui` and
//! `portcullis login`:
//!
//! - [`Pkce`], [`authorize_url`]: an authorization request of the test's own;
//! - [`form_login`]: Keycloak's login form filled in without a browser (an
//!   attacker's own code, or a code the test wants to hold in its hands);
//! - [`ClientGrant`]: a client's redirect URIs, web origins and post-logout
//!   redirect URIs extended by one origin for one test, then put back;
//! - [`ClientSettings`]: client settings changed for one test, then put back;
//! - [`sessions`], [`end_sessions`]: a user's Keycloak sessions.
//!
//! Every change to a client is a read-modify-write of its representation,
//! so they are serialised within the process ([`LOCK`]): parallel tests of
//! one binary never lose each other's changes. Helpers panic on failure:
//! this is test support.

use base64::Engine as _;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::real_keycloak::RealKeycloak;

/// Serialises read-modify-writes of client representations.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// 32 random bytes, base64url: a state, nonce or PKCE verifier.
pub fn random() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b64(&b)
}

/// A PKCE verifier and its S256 challenge.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = random();
        let challenge = b64(&Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// An authorization-code request (PKCE S256, scope `openid`).
pub fn authorize_url(
    kc: &RealKeycloak,
    client: &str,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    pkce: &Pkce,
) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{}/protocol/openid-connect/auth?{q}", kc.issuer())
}

fn cookies(resp: &reqwest::Response, jar: &mut Vec<String>) {
    for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
        if let Some(pair) = v.to_str().ok().and_then(|s| s.split(';').next()) {
            let name = pair.split('=').next().unwrap_or("");
            jar.retain(|c| c.split('=').next() != Some(name));
            jar.push(pair.to_owned());
        }
    }
}

/// Keycloak's login form without a browser: GETs `authorize_url`, POSTs the
/// form with `user` and `password`, and returns the URL Keycloak redirects
/// to (the client's redirect URI with `code`, `state` and `iss`), not
/// following it.
pub async fn form_login(authorize_url: &str, user: &str, password: &str) -> url::Url {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let mut jar = Vec::new();
    let page = http.get(authorize_url).send().await.expect("authorize");
    cookies(&page, &mut jar);
    let html = page.text().await.expect("login page");
    let form = html
        .find("id=\"kc-form-login\"")
        .map(|i| &html[i..])
        .unwrap_or_else(|| panic!("no login form in Keycloak's page:\n{html}"));
    let action = form
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("form action")
        .replace("&amp;", "&");
    let resp = http
        .post(&action)
        .header(reqwest::header::COOKIE, jar.join("; "))
        .form(&[
            ("username", user),
            ("password", password),
            ("credentialId", ""),
        ])
        .send()
        .await
        .expect("login POST");
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match loc {
        Some(l) => url::Url::parse(&l).expect("redirect URL"),
        None => panic!(
            "Keycloak did not redirect after the login form ({}): {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ),
    }
}

/// A query parameter of `url`.
pub fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Redeems an authorization code at the token endpoint: status and JSON.
pub async fn redeem(
    kc: &RealKeycloak,
    client: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> (u16, Value) {
    kc.token_request(&[
        ("grant_type", "authorization_code"),
        ("client_id", client),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ])
    .await
}

async fn client_rep(kc: &RealKeycloak, client: &str) -> (String, Value) {
    let id = kc.client_uuid(client).await;
    let (st, rep) = kc
        .admin(reqwest::Method::GET, &format!("/clients/{id}"), None)
        .await;
    assert_eq!(st, 200, "GET client {client}: {rep}");
    (id, rep)
}

async fn put_client(kc: &RealKeycloak, id: &str, rep: Value) {
    let (st, v) = kc
        .admin(reqwest::Method::PUT, &format!("/clients/{id}"), Some(rep))
        .await;
    assert!((200..300).contains(&st), "PUT client: {st} {v}");
}

const POST_LOGOUT: &str = "post.logout.redirect.uris";

/// Runs `f` on a runtime of its own in another thread: the clean-up of a
/// guard dropped without being released (a test that failed half-way),
/// so Keycloak is left as it was found even then.
fn clean_up_on_drop<F, Fut>(f: F)
where
    F: FnOnce(RealKeycloak) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move { f(RealKeycloak::get().await).await });
    })
    .join();
}

/// `origin` (`http://127.0.0.1:PORT`) allowed on a client for one test:
/// `{origin}{path}` among its redirect URIs and post-logout redirect URIs,
/// `origin` among its web origins (CORS at the token endpoint). Put back
/// by [`ClientGrant::release`] (or on drop), which removes exactly what
/// was added.
#[derive(Clone)]
pub struct ClientGrant {
    client: String,
    origin: String,
    uri: String,
    released: bool,
}

impl Drop for ClientGrant {
    fn drop(&mut self) {
        if !self.released {
            let mut g = self.clone();
            g.released = true;
            clean_up_on_drop(move |kc| async move { g.edit(&kc, false).await });
        }
    }
}

impl ClientGrant {
    pub async fn add(kc: &RealKeycloak, client: &str, origin: &str, path: &str) -> ClientGrant {
        let g = ClientGrant {
            client: client.into(),
            origin: origin.into(),
            uri: format!("{origin}{path}"),
            released: false,
        };
        g.edit(kc, true).await;
        g
    }

    pub async fn release(mut self, kc: &RealKeycloak) {
        self.released = true;
        self.edit(kc, false).await;
    }

    async fn edit(&self, kc: &RealKeycloak, add: bool) {
        let _l = LOCK.lock().await;
        let (id, mut rep) = client_rep(kc, &self.client).await;
        let edit_list = |v: &mut Value, item: &str| {
            let mut list: Vec<Value> = v.as_array().cloned().unwrap_or_default();
            list.retain(|x| x != item);
            if add {
                list.push(json!(item));
            }
            *v = Value::Array(list);
        };
        edit_list(&mut rep["redirectUris"], &self.uri);
        edit_list(&mut rep["webOrigins"], &self.origin);
        let attrs = &mut rep["attributes"];
        let mut uris: Vec<String> = attrs[POST_LOGOUT]
            .as_str()
            .unwrap_or("")
            .split("##")
            .filter(|s| !s.is_empty() && *s != self.uri)
            .map(str::to_owned)
            .collect();
        if add {
            uris.push(self.uri.clone());
        }
        attrs[POST_LOGOUT] = json!(uris.join("##"));
        put_client(kc, &id, rep).await;
    }
}

/// Top-level fields of a client (`consentRequired`) and its attributes
/// (`oauth2.device.code.lifespan`) changed for one test; [`restore`]
/// puts back the values found.
///
/// [`restore`]: ClientSettings::restore
#[derive(Clone)]
pub struct ClientSettings {
    client: String,
    /// (key, is attribute, value before).
    before: Vec<(String, bool, Value)>,
    restored: bool,
}

impl Drop for ClientSettings {
    fn drop(&mut self) {
        if !self.restored {
            let mut s = self.clone();
            s.restored = true;
            clean_up_on_drop(move |kc| async move { s.put_back(&kc).await });
        }
    }
}

impl ClientSettings {
    /// `fields`: top-level keys; `attributes`: keys under `attributes`
    /// (string values).
    pub async fn set(
        kc: &RealKeycloak,
        client: &str,
        fields: &[(&str, Value)],
        attributes: &[(&str, &str)],
    ) -> ClientSettings {
        let _l = LOCK.lock().await;
        let (id, mut rep) = client_rep(kc, client).await;
        let mut before = Vec::new();
        for (k, v) in fields {
            before.push(((*k).to_owned(), false, rep[*k].clone()));
            rep[*k] = v.clone();
        }
        for (k, v) in attributes {
            before.push(((*k).to_owned(), true, rep["attributes"][*k].clone()));
            rep["attributes"][*k] = json!(v);
        }
        put_client(kc, &id, rep).await;
        ClientSettings {
            client: client.into(),
            before,
            restored: false,
        }
    }

    pub async fn restore(mut self, kc: &RealKeycloak) {
        self.restored = true;
        self.put_back(kc).await;
    }

    async fn put_back(&self, kc: &RealKeycloak) {
        let _l = LOCK.lock().await;
        let (id, mut rep) = client_rep(kc, &self.client).await;
        for (k, attr, v) in self.before.clone() {
            match (attr, v) {
                // An attribute that was not set: Keycloak has no "unset"
                // through PUT, so the empty string (its "default") it is.
                (true, Value::Null) => rep["attributes"][&k] = json!(""),
                (true, v) => rep["attributes"][&k] = v,
                (false, v) => rep[&k] = v,
            }
        }
        put_client(kc, &id, rep).await;
    }
}

/// A user's active sessions (`GET users/{id}/sessions`), each with `id`
/// and `clients`.
pub async fn sessions(kc: &RealKeycloak, user: &str) -> Vec<Value> {
    let id = kc.user_id(user).await.expect("user exists");
    let (st, v) = kc
        .admin(reqwest::Method::GET, &format!("/users/{id}/sessions"), None)
        .await;
    assert_eq!(st, 200, "sessions of {user}: {v}");
    v.as_array().cloned().unwrap_or_default()
}

/// Ends every session of `user` (so a test leaves none behind).
pub async fn end_sessions(kc: &RealKeycloak, user: &str) {
    let id = kc.user_id(user).await.expect("user exists");
    let (st, v) = kc
        .admin(reqwest::Method::POST, &format!("/users/{id}/logout"), None)
        .await;
    assert!((200..300).contains(&st), "logout {user}: {st} {v}");
}

/// portcullis for the sign-in tests: the realm's issuer (every user holds
/// `tokens:manage` through the realm's default roles, `uploads-reader`
/// gives `uploads:read`), the page signing in with the shipped `web`
/// client, the uploads routes; `extra` is appended (top-level keys such as
/// `pat:`; `api:` keys go in `api_extra`, indented by the caller).
pub fn signin_config(kc: &RealKeycloak, api_extra: &str, extra: &str) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    algorithms: [RS256]
    scopes:
      from: ["claim:scope", "realm_roles"]
      map:
        default-roles-example: ["tokens:manage"]
        uploads-reader: ["uploads:read"]
        uploads-writer: ["uploads:read", "uploads:write"]
api:
  ui:
    oidc:
      issuer: {iss}
      client_id: web
{api_extra}
policy:
  default: deny
  routes:
    - name: uploads
      match: {{ path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:read"] }}
{extra}
"#,
        iss = kc.issuer()
    )
}
