//! The real Keycloak 26 for `tests/keycloak_*.rs`.
//!
//! `scripts/test` starts one Keycloak for the whole run (`scripts/keycloak
//! start DIR`) and exports `PORTCULLIS_TEST_KEYCLOAK_DIR`. A test binary run
//! alone (`cargo test --test keycloak_login`) starts its own instead, in a
//! temp dir, stopped when the test process exits. Either way the realm is
//! the shipped `deploy/keycloak/realm.json`, imported as it is.
//!
//! [`RealKeycloak::get`] waits until Keycloak is ready and applies the test
//! fixture through the admin REST API, once per process and idempotently:
//! the public `cli` client also allows the password grant (so a
//! test can log in without a browser; its tokens are otherwise those of the
//! shipped client), and test users get known passwords and roles.
//!
//! Helpers panic on failure: this is test support.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::envoy::repo_root;

/// The realm the shipped realm file defines.
pub const REALM: &str = "example";
/// Password the fixture gives every test user.
pub const PASSWORD: &str = "portcullis-test-pw";
/// Secret the shipped realm gives `uploads-worker` and `portcullis-pat-issuer`.
pub const SHIPPED_SECRET: &str = "CHANGE-ME";
/// How long portcullis may take to load the real Keycloak's keys (and to
/// see a change Keycloak made).
pub const READY: Duration = Duration::from_secs(30);
/// Pace of waits that ask the real Keycloak (through portcullis), gentler
/// than [`crate::wait::POLL`].
pub const POLL: Duration = Duration::from_millis(200);

/// Test users: name, realm roles (beyond the realm's defaults).
pub const USERS: &[(&str, &[&str])] = &[
    ("alice", &["uploads-reader"]),
    ("bob", &["uploads-writer"]),
    ("carol", &[]),
    // Sign-in tests (tests/keycloak_signin*.rs, keycloak_device.rs): each
    // its own user, so counting a user's sessions counts only its own.
    ("dana", &["uploads-reader"]),
    ("erin", &["uploads-reader"]),
    ("frank", &["uploads-reader"]),
    ("mallory", &["uploads-reader"]),
];

/// Where the Keycloak of this test process lives.
struct Instance {
    dir: PathBuf,
}

fn run_script(args: &[&str], extra_env: &[(&str, String)]) {
    let mut cmd = Command::new(repo_root().join("scripts/keycloak"));
    cmd.args(args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let status = cmd.status().expect("run scripts/keycloak");
    assert!(status.success(), "scripts/keycloak {args:?} failed");
}

fn instance() -> &'static Instance {
    static I: OnceLock<Instance> = OnceLock::new();
    I.get_or_init(|| {
        if let Ok(dir) = std::env::var("PORTCULLIS_TEST_KEYCLOAK_DIR") {
            let dir = PathBuf::from(dir);
            // Started by scripts/test; `start` only waits when it runs.
            run_script(&["start", &dir.to_string_lossy()], &[]);
            return Instance { dir };
        }
        // Alone: our own Keycloak, stopped by the script's watchdog when
        // this process exits.
        let dir = std::env::temp_dir().join(format!("portcullis-kc-{}", std::process::id()));
        run_script(
            &["start", &dir.to_string_lossy()],
            &[("KEYCLOAK_PARENT_PID", std::process::id().to_string())],
        );
        Instance { dir }
    })
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("read {name} in {}: {e}", dir.display()))
        .trim()
        .to_owned()
}

/// Tokens from Keycloak's token endpoint.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub raw: Value,
}

/// A handle on the running Keycloak (cheap; one per test).
pub struct RealKeycloak {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    dir: PathBuf,
    admin_password: String,
    http: reqwest::Client,
    /// Admin access token and when to fetch a new one (each fetch is a
    /// password hash on Keycloak's side: slow on 2 busy cores).
    admin_token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl RealKeycloak {
    /// Waits for the run's Keycloak and applies the fixture.
    pub async fn get() -> RealKeycloak {
        let inst = tokio::task::spawn_blocking(instance)
            .await
            .expect("start keycloak");
        let kc = RealKeycloak {
            base: format!("http://127.0.0.1:{}", read(&inst.dir, "http-port")),
            dir: inst.dir.clone(),
            admin_password: read(&inst.dir, "admin-password"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            admin_token: tokio::sync::Mutex::new(None),
        };
        // Once per process: concurrent PUTs of the same user race in
        // Keycloak (a login can meet a half-applied password reset).
        static FIXTURE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        FIXTURE.get_or_init(|| kc.fixture()).await;
        kc
    }

    /// `{base}/realms/example`: the `iss` of the realm's tokens.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.base)
    }

    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    pub fn management_port(&self) -> u16 {
        read(&self.dir, "management-port").parse().expect("port")
    }

    // === the token endpoint ===

    /// POSTs a form to the realm's token endpoint; returns status and JSON.
    pub async fn token_request(&self, form: &[(&str, &str)]) -> (u16, Value) {
        self.token_request_with(form, &[]).await
    }

    /// As [`RealKeycloak::token_request`], with extra request headers
    /// (say, a `DPoP` proof).
    pub async fn token_request_with(
        &self,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.post(self.token_url()).form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("token endpoint reachable");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    fn token_set(status: u16, body: Value) -> TokenSet {
        assert_eq!(status, 200, "token request failed: {body}");
        let s = |k: &str| body[k].as_str().map(str::to_owned);
        TokenSet {
            access_token: s("access_token").expect("access_token"),
            id_token: s("id_token"),
            refresh_token: s("refresh_token"),
            raw: body,
        }
    }

    /// A password-grant login through the shipped public `cli` client.
    pub async fn login(&self, user: &str, scope: &str) -> TokenSet {
        let (st, body) = self
            .token_request(&[
                ("grant_type", "password"),
                ("client_id", "cli"),
                ("username", user),
                ("password", PASSWORD),
                ("scope", scope),
            ])
            .await;
        Self::token_set(st, body)
    }

    /// A client_credentials token for a confidential client.
    pub async fn client_credentials(&self, client: &str, secret: &str) -> TokenSet {
        let (st, body) = self
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", secret),
            ])
            .await;
        Self::token_set(st, body)
    }

    // === the admin REST API ===

    async fn admin_token(&self) -> String {
        let mut cached = self.admin_token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return t.clone();
        }
        let t = self.fetch_admin_token().await;
        // Master-realm admin tokens live 60 s.
        *cached = Some((t.clone(), Instant::now() + Duration::from_secs(40)));
        t
    }

    async fn fetch_admin_token(&self) -> String {
        let resp = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.base
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", self.admin_password.as_str()),
            ])
            .send()
            .await
            .expect("admin token request");
        let body: Value = resp.json().await.expect("admin token JSON");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no admin token: {body}"))
            .to_owned()
    }

    /// Calls `/admin/realms/example{path}`; returns status and JSON (or Null).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let token = self.admin_token().await;
        let mut req = self
            .http
            .request(method, format!("{}/admin/realms/{REALM}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin_ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (st, v) = self.admin(method.clone(), path, body).await;
        assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
        v
    }

    /// The internal id of a client by its `clientId`.
    pub async fn client_uuid(&self, client_id: &str) -> String {
        let v = self
            .admin_ok(
                reqwest::Method::GET,
                &format!("/clients?clientId={client_id}"),
                None,
            )
            .await;
        v[0]["id"].as_str().expect("client exists").to_owned()
    }

    /// The id (`sub`) of a user by name.
    pub async fn user_id(&self, username: &str) -> Option<String> {
        let v = self
            .admin_ok(
                reqwest::Method::GET,
                &format!("/users?username={username}&exact=true"),
                None,
            )
            .await;
        v.get(0).and_then(|u| u["id"].as_str()).map(str::to_owned)
    }

    /// Merges `patch` into a client's representation.
    pub async fn update_client(&self, client_id: &str, patch: Value) {
        let id = self.client_uuid(client_id).await;
        let mut rep = self
            .admin_ok(reqwest::Method::GET, &format!("/clients/{id}"), None)
            .await;
        merge(&mut rep, patch);
        self.admin_ok(reqwest::Method::PUT, &format!("/clients/{id}"), Some(rep))
            .await;
    }

    async fn ensure_user(&self, name: &str, roles: &[&str]) {
        if self.user_id(name).await.is_none() {
            let (st, v) = self
                .admin(
                    reqwest::Method::POST,
                    "/users",
                    Some(json!({
                        "username": name,
                        "enabled": true,
                        "email": format!("{name}@example.org"),
                        "emailVerified": true,
                        "firstName": name,
                        "lastName": "Test",
                    })),
                )
                .await;
            // 409: a parallel test created it first.
            assert!(st == 201 || st == 409, "create user {name}: {st} {v}");
        }
        let id = self.user_id(name).await.expect("user exists");
        self.admin_ok(
            reqwest::Method::PUT,
            &format!("/users/{id}/reset-password"),
            Some(json!({"type": "password", "value": PASSWORD, "temporary": false})),
        )
        .await;
        // The shipped alice has a temporary password: that adds a required
        // action, which blocks the password grant.
        self.admin_ok(
            reqwest::Method::PUT,
            &format!("/users/{id}"),
            Some(
                json!({"requiredActions": [], "firstName": name, "lastName": "Test",
                        "email": format!("{name}@example.org"), "emailVerified": true}),
            ),
        )
        .await;
        // Failed logins of earlier runs (realm has brute-force protection
        // on) must not lock the user out of this one.
        self.admin_ok(
            reqwest::Method::DELETE,
            &format!("/attack-detection/brute-force/users/{id}"),
            None,
        )
        .await;
        if !roles.is_empty() {
            let mut reps = Vec::new();
            for r in roles {
                reps.push(
                    self.admin_ok(reqwest::Method::GET, &format!("/roles/{r}"), None)
                        .await,
                );
            }
            self.admin_ok(
                reqwest::Method::POST,
                &format!("/users/{id}/role-mappings/realm"),
                Some(Value::Array(reps)),
            )
            .await;
        }
    }

    /// Idempotent: password grant on `cli`, test users with known passwords.
    async fn fixture(&self) {
        // The shipped realm's brute-force protection locks a user out
        // ("user_temporarily_disabled", with no failed login before it) when
        // parallel tests log the same user in at once (Keycloak 26.5). It is
        // not what these tests are about, so the test realm turns it off.
        let (st, v) = self
            .admin(
                reqwest::Method::PUT,
                "",
                Some(json!({"bruteForceProtected": false})),
            )
            .await;
        assert!((200..300).contains(&st), "realm update: {st} {v}");
        self.update_client("cli", json!({"directAccessGrantsEnabled": true}))
            .await;
        for (name, roles) in USERS {
            self.ensure_user(name, roles).await;
        }
    }

    // === the process ===

    /// SIGKILLs Keycloak (an outage). Only for a test binary that runs
    /// nothing else against Keycloak at the same time.
    pub fn kill(&self) {
        run_script(&["kill", &self.dir.to_string_lossy()], &[]);
    }

    /// Starts it again on the same ports and database; returns once ready.
    pub async fn restart(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || run_script(&["start", &dir.to_string_lossy()], &[]))
            .await
            .expect("restart keycloak");
    }
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The claims of a JWT, unverified (for assertions only).
pub fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The header of a JWT, unverified.
pub fn header(jwt: &str) -> Value {
    use base64::Engine as _;
    let h = jwt.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .expect("base64url header");
    serde_json::from_slice(&bytes).expect("JSON header")
}
