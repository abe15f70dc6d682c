//! A Keycloak 26 stand-in for integration tests.
//!
//! `FakeKeycloak::start()` runs a small HTTP server on `127.0.0.1:<random>`
//! (on its own thread and Tokio runtime, so it outlives any one test runtime
//! and `set_failure(Failure::Down)` can close the socket synchronously) that
//! serves, for realm `test` by default:
//!
//! * `GET {issuer}/.well-known/openid-configuration`
//! * `GET {issuer}/protocol/openid-connect/certs` — every RSA/EC/OKP signing
//!   key (active and passive), plus one RSA `use: "enc"` (`RSA-OAEP`) key and
//!   one `kty: "oct"` key, which a validator must both ignore.
//! * `POST {issuer}/protocol/openid-connect/token` — `client_credentials`,
//!   `password` and standard (RFC 8693) token exchange, with Keycloak's
//!   error codes and messages.
//!
//! Built-in clients: `web` (public, the `azp` of [`FakeKeycloak::claims`]),
//! `portcullis` and `account` (confidential, secret `portcullis-secret` /
//! `account-secret`), `admin-cli` (public).
//!
//! # Where the real Keycloak 26.5 differs
//!
//! The suite also runs a real Keycloak (`tests/testkit/src/real_keycloak.rs`,
//! `tests/keycloak_*.rs`); the stand-in stays for failure injection only.
//! What the real server showed that this stand-in does not model:
//!
//! * `jti` values carry a grant prefix (`onrtro:…` password grant,
//!   `trrtcc:…` client credentials), not a bare UUID.
//! * Access tokens' `aud` also holds `account` (the default roles), besides
//!   the audience mappers' clients.
//! * `client_id` (and `clientId`) appear on `client_credentials` tokens only
//!   when the client has the `service_account` client scope; a client
//!   imported from a realm file without it in `defaultClientScopes` gets
//!   tokens with no `client_id` at all.
//! * Refresh tokens are HS512 (`typ: Refresh`, signed with the realm's
//!   `oct` key); offline tokens are `typ: Offline`.
//! * Exchanged tokens carry the subject token's `sid`, and their lifetime is
//!   capped by the SSO session (`ssoSessionMaxLifespan`, 10 h by default),
//!   not only by the client's access-token lifespan.
//! * Brute-force detection (on in many realms) locks a user out with
//!   `user_temporarily_disabled` ("Invalid user credentials") when several
//!   password grants for one user arrive at once.

mod keys;
mod realm;
mod server;
mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::EncodingKey;
use serde_json::{Map, Value, json};

use keys::{Family, KeyEntry, family, published_alg};

/// Failure injected into the discovery, JWKS and token endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Behave normally.
    None,
    /// Answer every request with HTTP 500.
    Status500,
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// Stop listening (connections refused) and drop open connections. The
    /// next non-`Down` failure mode re-binds the same port.
    Down,
}

/// Options for [`FakeKeycloak::sign`].
#[derive(Debug, Clone, Default)]
pub struct SignOpts {
    /// Signing algorithm (default RS256). RS*/PS* use the active RSA key,
    /// ES256 the active EC key, EdDSA the active OKP key, HS* the published
    /// `oct` key. ES384 has no key and panics.
    pub alg: Option<Algorithm>,
    /// Header `kid` override (default: the signing key's kid).
    pub kid: Option<String>,
    /// Header `typ` (default `JWT`).
    pub header_typ: Option<String>,
    /// Merged into the header last; a `null` value removes that member
    /// (e.g. `{"kid": null}` or `{"typ": null}`); may also override `alg`.
    pub extra_header: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct Client {
    secret: Option<String>,
    can_exchange: bool,
    /// `sub` of the service-account user.
    service_account_sub: String,
}

#[derive(Debug, Clone)]
struct User {
    username: String,
    password: String,
    sub: String,
    realm_roles: Vec<String>,
    scope: String,
}

struct Inner {
    failure: Failure,
    /// Published signing keys (RSA, EC, OKP), in creation order.
    sig_keys: Vec<KeyEntry>,
    enc_key: Option<KeyEntry>,
    oct_key: Option<KeyEntry>,
    clients: HashMap<String, Client>,
    users: HashMap<String, User>,
    exchange_extra_claims: Map<String, Value>,
    exchange_lifetime: Duration,
    access_token_lifetime: Duration,
    token_alg: Algorithm,
    default_audience: Value,
    /// HS512 secret for refresh tokens (never published, like Keycloak's).
    refresh_secret: [u8; 32],
    refresh_kid: String,
}

struct Shared {
    realm: String,
    base_url: String,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    token_requests: AtomicUsize,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issuer(&self) -> String {
        format!("{}/realms/{}", self.base_url, self.realm)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn default_realm_roles(realm: &str) -> Vec<String> {
    vec![
        format!("default-roles-{realm}"),
        "offline_access".into(),
        "uma_authorization".into(),
    ]
}

/// Space-separated union, keeping first-seen order.
fn scope_union(a: &str, b: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in a.split_whitespace().chain(b.split_whitespace()) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.join(" ")
}

impl Inner {
    fn active(&self, f: Family) -> &KeyEntry {
        match f {
            Family::Hmac => self.oct_key.as_ref().expect("the oct key was removed"),
            _ => {
                let alg = published_alg(f);
                self.sig_keys
                    .iter()
                    .rev()
                    .find(|k| k.alg == alg && k.active)
                    .unwrap_or_else(|| panic!("no active {alg:?} key (removed?)"))
            }
        }
    }

    /// Claims of a user access token as Keycloak 26 issues them.
    #[allow(clippy::too_many_arguments)]
    fn user_claims(
        &self,
        issuer: &str,
        realm: &str,
        sub: &str,
        username: &str,
        azp: &str,
        scope: &str,
        extra_roles: &[String],
        lifetime: Duration,
    ) -> Value {
        let t = now();
        let mut roles = default_realm_roles(realm);
        for r in extra_roles {
            if !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        json!({
            "exp": t + lifetime.as_secs(),
            "iat": t,
            "auth_time": t,
            "jti": new_uuid(),
            "iss": issuer,
            "aud": self.default_audience,
            "sub": sub,
            "typ": "Bearer",
            "azp": azp,
            "sid": new_uuid(),
            "acr": "1",
            "allowed-origins": ["http://localhost:3000"],
            "realm_access": { "roles": roles },
            "resource_access": {
                "account": { "roles": ["manage-account", "manage-account-links", "view-profile"] }
            },
            "scope": scope,
            "email_verified": true,
            "name": format!("{username} Tester"),
            "preferred_username": username,
            "given_name": username,
            "family_name": "Tester",
            "email": format!("{username}@example.com"),
        })
    }
}

/// A running Keycloak stand-in. Dropping it stops the server.
pub struct FakeKeycloak {
    shared: Arc<Shared>,
    server: server::Handle,
}

impl FakeKeycloak {
    /// Starts a stand-in for realm `test`.
    pub async fn start() -> FakeKeycloak {
        Self::start_with_realm("test").await
    }

    pub async fn start_with_realm(realm: &str) -> FakeKeycloak {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for FakeKeycloak");
        let addr = listener.local_addr().expect("local_addr");
        let realm_owned = realm.to_owned();
        // Key generation can take a few tens of ms: keep it off the test runtime.
        let (sig_keys, enc_key, oct_key) = tokio::task::spawn_blocking(move || {
            let sig = vec![
                KeyEntry::new_rsa_sig(&realm_owned),
                KeyEntry::new_ec(&realm_owned),
                KeyEntry::new_ed(),
            ];
            (
                sig,
                KeyEntry::new_rsa_enc(&realm_owned),
                KeyEntry::new_oct(),
            )
        })
        .await
        .expect("key generation task");

        let mut clients = HashMap::new();
        for (id, secret) in [
            ("web", None),
            ("admin-cli", None),
            ("portcullis", Some("portcullis-secret")),
            ("account", Some("account-secret")),
        ] {
            clients.insert(
                id.to_owned(),
                Client {
                    secret: secret.map(str::to_owned),
                    can_exchange: false,
                    service_account_sub: new_uuid(),
                },
            );
        }

        let shared = Arc::new(Shared {
            realm: realm.to_owned(),
            base_url: format!("http://{addr}"),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                failure: Failure::None,
                sig_keys,
                enc_key: Some(enc_key),
                oct_key: Some(oct_key),
                clients,
                users: HashMap::new(),
                exchange_extra_claims: Map::new(),
                exchange_lifetime: Duration::from_secs(300),
                access_token_lifetime: Duration::from_secs(300),
                token_alg: Algorithm::RS256,
                default_audience: json!(["portcullis", "account"]),
                refresh_secret: rand::random(),
                refresh_kid: keys::random_kid(),
            }),
        });
        let server = server::Handle::spawn(listener, shared.clone());
        FakeKeycloak { shared, server }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn realm(&self) -> String {
        self.shared.realm.clone()
    }

    /// `{base}/realms/{realm}` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer())
    }

    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// Number of JWKS GETs received (including failed ones).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Number of discovery GETs received (including failed ones).
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Number of token-endpoint POSTs received (including failed ones).
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// Sets the failure mode. Switching to `Down` returns once the port is
    /// closed and open connections are dropped; leaving `Down` returns once
    /// the same port is listening again.
    pub fn set_failure(&self, f: Failure) {
        let was_down = {
            let mut inner = self.shared.lock();
            let was_down = inner.failure == Failure::Down;
            inner.failure = f.clone();
            was_down
        };
        match (was_down, f == Failure::Down) {
            (false, true) => self.server.go_down(),
            (true, false) => self.server.go_up(),
            _ => {}
        }
    }

    /// Kid of the active key for `alg`'s family (RS*/PS* → RSA, ES256 → EC,
    /// EdDSA → OKP, HS* → the oct key).
    pub fn active_kid(&self, alg: Algorithm) -> String {
        self.shared.lock().active(family(alg)).kid.clone()
    }

    /// Publishes a new active key for `alg`'s family; the previous active key
    /// stays published as passive. Returns the new kid.
    pub fn rotate(&self, alg: Algorithm) -> String {
        let realm = self.shared.realm.clone();
        let entry = match family(alg) {
            Family::Rsa => KeyEntry::new_rsa_sig(&realm),
            Family::Ec => KeyEntry::new_ec(&realm),
            Family::Ed => KeyEntry::new_ed(),
            Family::Hmac => panic!("rotate: HMAC keys are not rotatable in the stand-in"),
        };
        let kid = entry.kid.clone();
        let mut inner = self.shared.lock();
        for k in inner.sig_keys.iter_mut().filter(|k| k.alg == entry.alg) {
            k.active = false;
        }
        inner.sig_keys.push(entry);
        kid
    }

    /// Unpublishes a key (signing, enc or oct). If it was the active key of
    /// its algorithm, the newest remaining key of that algorithm becomes
    /// active.
    pub fn remove_key(&self, kid: &str) {
        let mut inner = self.shared.lock();
        if inner.enc_key.as_ref().is_some_and(|k| k.kid == kid) {
            inner.enc_key = None;
        }
        if inner.oct_key.as_ref().is_some_and(|k| k.kid == kid) {
            inner.oct_key = None;
        }
        if let Some(pos) = inner.sig_keys.iter().position(|k| k.kid == kid) {
            let removed = inner.sig_keys.remove(pos);
            if removed.active
                && let Some(k) = inner
                    .sig_keys
                    .iter_mut()
                    .rev()
                    .find(|k| k.alg == removed.alg)
            {
                k.active = true;
            }
        }
    }

    /// The JWKS document currently served.
    pub fn jwks(&self) -> Value {
        server::jwks_doc(&self.shared.lock())
    }

    /// A realistic Keycloak access-token claim set for `sub` (issued to the
    /// public client `web`; `aud` = the default audience,
    /// `["portcullis","account"]`). If a user with this `sub` was added, its
    /// username, roles and scope are used.
    pub fn claims(&self, sub: &str) -> Value {
        let inner = self.shared.lock();
        let user = inner.users.values().find(|u| u.sub == sub).cloned();
        let (username, roles, scope) = match user {
            Some(u) => (u.username, u.realm_roles, u.scope),
            None => (
                sub.to_owned(),
                Vec::new(),
                "openid profile email".to_owned(),
            ),
        };
        inner.user_claims(
            &self.shared.issuer(),
            &self.shared.realm,
            sub,
            &username,
            "web",
            &scope,
            &roles,
            inner.access_token_lifetime,
        )
    }

    /// `sign(&claims(sub), &SignOpts::default())`.
    pub fn token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub), &SignOpts::default())
    }

    /// Signs `claims` with the active key for `opts.alg` (default RS256).
    pub fn sign(&self, claims: &Value, opts: &SignOpts) -> String {
        let alg = opts.alg.unwrap_or(Algorithm::RS256);
        if alg == Algorithm::ES384 {
            panic!("the stand-in has no ES384 (P-384) key");
        }
        let (key, kid) = {
            let inner = self.shared.lock();
            let k = inner.active(family(alg));
            (k.encoding.clone(), k.kid.clone())
        };
        let kid = opts.kid.clone().unwrap_or(kid);
        sign_with(&key, alg, &kid, opts, claims)
    }

    /// A validly signed token whose key (and fresh random kid) is not in the
    /// JWKS. RSA algorithms use an RSA key no stand-in publishes.
    pub fn sign_with_unpublished_key(&self, claims: &Value, alg: Algorithm) -> String {
        self.sign_with_unpublished_key_as(claims, alg, &keys::random_kid())
    }

    /// Like [`Self::sign_with_unpublished_key`] with a chosen header kid, e.g.
    /// a published one (signature by the wrong key under a known kid).
    pub fn sign_with_unpublished_key_as(
        &self,
        claims: &Value,
        alg: Algorithm,
        kid: &str,
    ) -> String {
        let key = match family(alg) {
            Family::Rsa => KeyEntry::unpublished_rsa(),
            Family::Ec if alg == Algorithm::ES256 => KeyEntry::new_ec("unpublished"),
            Family::Ed => KeyEntry::new_ed(),
            Family::Hmac => KeyEntry::new_oct(),
            Family::Ec => panic!("the stand-in has no ES384 (P-384) key"),
        };
        sign_with(&key.encoding, alg, kid, &SignOpts::default(), claims)
    }

    /// SPKI PEM ("PUBLIC KEY", LF line endings) of the active RS256 key.
    pub fn rsa_public_key_pem(&self) -> String {
        self.shared.lock().active(Family::Rsa).spki_pem()
    }

    /// Kid of the published RSA `use: "enc"` (`RSA-OAEP`) key.
    pub fn enc_kid(&self) -> String {
        let inner = self.shared.lock();
        inner
            .enc_key
            .as_ref()
            .expect("enc key was removed")
            .kid
            .clone()
    }

    /// Kid of the published `kty: "oct"` key.
    pub fn oct_kid(&self) -> String {
        let inner = self.shared.lock();
        inner
            .oct_key
            .as_ref()
            .expect("oct key was removed")
            .kid
            .clone()
    }

    /// RS256 signature by the private key of the `enc` key, kid = enc kid.
    pub fn sign_with_enc_key(&self, claims: &Value) -> String {
        let (key, kid) = {
            let inner = self.shared.lock();
            let k = inner.enc_key.as_ref().expect("enc key was removed");
            (k.encoding.clone(), k.kid.clone())
        };
        sign_with(&key, Algorithm::RS256, &kid, &SignOpts::default(), claims)
    }
}

fn sign_with(
    key: &EncodingKey,
    alg: Algorithm,
    kid: &str,
    opts: &SignOpts,
    claims: &Value,
) -> String {
    let mut header = Map::new();
    header.insert("alg".into(), Value::String(keys::alg_name(alg)));
    header.insert(
        "typ".into(),
        Value::String(opts.header_typ.clone().unwrap_or_else(|| "JWT".into())),
    );
    header.insert("kid".into(), Value::String(kid.to_owned()));
    for (k, v) in &opts.extra_header {
        if v.is_null() {
            header.remove(k);
        } else {
            header.insert(k.clone(), v.clone());
        }
    }
    keys::sign_compact(&header, claims, key, alg)
}
