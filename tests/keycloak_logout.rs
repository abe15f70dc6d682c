//! Back-channel logout with the real Keycloak 26, through a real Envoy in
//! front of each of two replicas (one Postgres, one Redis).
//!
//! The realm's `cli` client gets a "Backchannel logout URL" pointing at a
//! recorder in this test, which stands in for the load balancer: it keeps
//! what Keycloak sent (to write down its shape and to replay it) and passes
//! it to replica A's `POST /backchannel-logout`. A logout through the admin
//! API and a user's own logout must each refuse the user's access token on
//! both replicas within 1 s, while another user's token and the user's PAT
//! keep working (`include_pats: false`).
//!
//! Needs Keycloak and Envoy: `scripts/test` provides both; alone, `cargo
//! test --test keycloak_logout` starts its own Keycloak.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use portcullis::server::Running;
use portcullis_testkit::check::{serve_yaml, wait_ready};
use portcullis_testkit::cluster::READY;
use portcullis_testkit::echo::Echo;
use portcullis_testkit::envoy::Envoy;
use portcullis_testkit::pg::TempPostgres;
use portcullis_testkit::real_keycloak::{RealKeycloak, claims, header};
use portcullis_testkit::redis_server::TempRedis;
use portcullis_testkit::store_suite;
use portcullis_testkit::wait::{ASAP, eventually, eventually_every};
use serde_json::{Value, json};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const UPLOADS: &str = "/api/v1/uploads/1";

fn config(kc: &RealKeycloak, pg: &str, redis: &str) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    scopes:
      from: ["claim:scope", "realm_roles"]
      map:
        uploads-reader: ["uploads:read"]
        uploads-writer: ["uploads:read", "uploads:write"]
    backchannel_logout: {{ audiences: [cli] }}
    max_token_lifetime: 1h
policy:
  default: deny
  routes:
    - name: uploads-write
      match: {{ methods: [POST, PUT, PATCH, DELETE], path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:write"] }}
    - name: uploads
      match: {{ path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:read"] }}
store:
  kind: postgres
  url: {pg}
revocation:
  kind: redis
  redis_url: {redis}
  resync_interval: 5s
"#,
        iss = kc.issuer()
    )
}

/// What Keycloak POSTed to the back-channel logout URL.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(Instant, String)>>>);

impl Recorded {
    fn tokens(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct Recorder {
    seen: Recorded,
    target: String,
}

/// Keeps the logout token and passes the form on to replica A.
async fn record(State(r): State<Recorder>, body: String) -> (StatusCode, String) {
    let token = form_value(&body, "logout_token").unwrap_or_default();
    let (sid, sub) = (claims(&token)["sid"].clone(), claims(&token)["sub"].clone());
    r.seen.0.lock().unwrap().push((Instant::now(), token));
    let resp = reqwest::Client::new()
        .post(&r.target)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("replica A reachable");
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap_or_default();
    eprintln!("logout token (sid {sid}, sub {sub}) relayed to replica A: {status} {text}");
    (status, text)
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2B", "+")
                .replace("%2F", "/")
                .replace("%3D", "=")
        })
    })
}

async fn start_recorder(a: &Running) -> (SocketAddr, Recorded) {
    let seen = Recorded::default();
    let r = Recorder {
        seen: seen.clone(),
        target: format!("http://{}/backchannel-logout", a.http_addr),
    };
    let app = axum::Router::new()
        .route("/backchannel-logout", axum::routing::post(record))
        .with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

struct Env {
    kc: RealKeycloak,
    a: Running,
    b: Running,
    envoys: [Envoy; 2],
    seen: Recorded,
    _echo: Echo,
    _pg: TempPostgres,
    _redis: TempRedis,
    _dirs: [tempfile::TempDir; 2],
}

async fn env() -> Env {
    let kc = RealKeycloak::get().await;
    let (pg, redis) = (TempPostgres::start().await, TempRedis::start().await);
    let yaml = config(&kc, &pg.url, &redis.url);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = serve_yaml(&yaml, dirs[0].path(), false).await;
    let b = serve_yaml(&yaml, dirs[1].path(), false).await;
    wait_ready(&a, READY).await;
    wait_ready(&b, READY).await;
    eventually(Duration::from_secs(10), "replicas subscribed", async || {
        let up = (
            a.revoker.bus().is_subscribed(),
            b.revoker.bus().is_subscribed(),
        );
        if up == (true, true) { Ok(()) } else { Err(up) }
    })
    .await;
    let echo = Echo::start().await;
    let envoys = [
        // Polled as fast as they answer: the per-subject limit would 429.
        Envoy::start_unlimited(a.grpc_addr, echo.addr).await,
        Envoy::start_unlimited(b.grpc_addr, echo.addr).await,
    ];
    let (rec, seen) = start_recorder(&a).await;
    // Sessions other tests left behind would each get a logout token, one
    // after another, ahead of the session this test times: end them now,
    // while no back-channel URL is set (Keycloak then sends nothing).
    for user in ["alice", "bob"] {
        let sub = kc.user_id(user).await.unwrap();
        let (st, v) = kc
            .admin(reqwest::Method::POST, &format!("/users/{sub}/logout"), None)
            .await;
        assert!(
            (200..300).contains(&st),
            "clearing {user}'s sessions: {st} {v}"
        );
    }
    kc.update_client(
        "cli",
        json!({
            "frontchannelLogout": false,
            "attributes": {
                "backchannel.logout.url": format!("http://{rec}/backchannel-logout"),
                "backchannel.logout.session.required": "true",
            }
        }),
    )
    .await;
    Env {
        kc,
        a,
        b,
        envoys,
        seen,
        _echo: echo,
        _pg: pg,
        _redis: redis,
        _dirs: dirs,
    }
}

impl Env {
    /// The status each Envoy answers for `token`.
    async fn statuses(&self, token: &str) -> [u16; 2] {
        let auth = format!("Bearer {token}");
        let h = [("authorization", auth.as_str())];
        let (x, y) = tokio::join!(
            self.envoys[0].get(UPLOADS, &h),
            self.envoys[1].get(UPLOADS, &h)
        );
        [x.status, y.status]
    }

    /// Polls both Envoys as fast as they answer until `token` is refused by
    /// each; returns how long after `t0` each first refused it. Panics if
    /// that takes longer than 1 s from `t0`.
    async fn refused_within_1s(&self, token: &str, t0: Instant) -> [Duration; 2] {
        let at: Mutex<[Option<Duration>; 2]> = Mutex::new([None, None]);
        let left = Duration::from_secs(1).saturating_sub(t0.elapsed());
        eventually_every(
            left,
            ASAP,
            "refused on both replicas within 1 s",
            async || {
                let st = self.statuses(token).await;
                // Anything but 200/401 (a 503 on a starved machine) is
                // not the answer awaited: reported, polled again.
                if st.iter().any(|s| *s != 200 && *s != 401) {
                    eprintln!("transient statuses {st:?} while waiting for the logout");
                }
                let mut at = at.lock().unwrap();
                for i in 0..2 {
                    if st[i] == 401 && at[i].is_none() {
                        at[i] = Some(t0.elapsed());
                    }
                }
                match *at {
                    [Some(a), Some(b)] => Ok([a, b]),
                    seen => Err(seen),
                }
            },
        )
        .await
    }

    /// An opaque PAT of `user` with `uploads:read`, straight into the store.
    async fn pat(&self, user: &str) -> String {
        let sub = self.kc.user_id(user).await.unwrap();
        let (raw, mut row) = store_suite::token(&sub, TimeDelta::hours(1));
        row.user_issuer = self.kc.issuer();
        row.scopes = vec!["uploads:read".into()];
        row.created_at = Utc::now() - TimeDelta::seconds(5);
        let store = self.a.engine.load().pats().store().clone();
        let rec = store.insert(row).await.expect("PAT");
        self.a.revoker.announce_created(&rec).await;
        raw
    }

    /// Undoes the client change (other tests share the run's Keycloak).
    async fn restore(&self) {
        self.kc
            .update_client("cli", json!({"attributes": {"backchannel.logout.url": ""}}))
            .await;
    }
}

/// Writes down the shape of what Keycloak sent, and checks it is what the
/// endpoint requires.
fn describe(token: &str, aud: &str) -> Value {
    let (h, c) = (header(token), claims(token));
    eprintln!("Keycloak logout token header: {h}");
    eprintln!("Keycloak logout token claims: {c}");
    assert_eq!(h["typ"], "logout+jwt", "{h}");
    assert!(c["events"][EVENT].is_object(), "{c}");
    assert!(c.get("nonce").is_none(), "{c}");
    assert!(c["jti"].is_string() && c["iat"].is_i64(), "{c}");
    let auds = match &c["aud"] {
        Value::String(s) => vec![s.clone()],
        v => v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
    };
    assert!(auds.iter().any(|a| a == aud), "{c}");
    c
}

/// Another user's token and the logged-out user's PAT still work.
async fn others_unaffected(e: &Env, bob: &str, pat: &str) {
    assert_eq!(e.statuses(bob).await, [200, 200], "another user's token");
    assert_eq!(e.statuses(pat).await, [200, 200], "the user's PAT");
}

/// An admin ends alice's sessions; returns the logout token Keycloak sent.
async fn admin_logout(e: &Env, alice_sub: &str) -> String {
    let alice = e.kc.login("alice", "openid").await;
    assert_eq!(e.statuses(&alice.access_token).await, [200, 200]);
    eprintln!(
        "alice's access token: sid {}",
        claims(&alice.access_token)["sid"]
    );
    let t0 = Instant::now();
    let path = format!("/users/{alice_sub}/logout");
    let (st, v) = e.kc.admin(reqwest::Method::POST, &path, None).await;
    assert!((200..300).contains(&st), "admin logout: {st} {v}");
    let at = e.refused_within_1s(&alice.access_token, t0).await;
    let (received, sent) = e
        .seen
        .tokens()
        .last()
        .cloned()
        .expect("Keycloak sent a logout token");
    let c = describe(&sent, "cli");
    assert_eq!(c["sub"], alice_sub);
    assert_eq!(
        c["sid"],
        claims(&alice.access_token)["sid"],
        "the session's sid"
    );
    eprintln!(
        "admin logout → refused on A after {:?}, on B after {:?} (logout token reached us {:?} after the admin call)",
        at[0],
        at[1],
        received - t0
    );
    sent
}

/// Alice logs in again and logs herself out (refresh-token logout).
async fn user_logout(e: &Env) {
    let again = e.kc.login("alice", "openid").await;
    assert_eq!(
        e.statuses(&again.access_token).await,
        [200, 200],
        "a new session works"
    );
    let refresh = again.refresh_token.clone().expect("refresh token");
    let t0 = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/protocol/openid-connect/logout", e.kc.issuer()))
        .form(&[("client_id", "cli"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "user logout: {}", resp.status());
    let at = e.refused_within_1s(&again.access_token, t0).await;
    let (received, sent) = e.seen.tokens().last().cloned().unwrap();
    eprintln!(
        "user logout → refused on A after {:?}, on B after {:?} (logout token reached us {:?} after the logout call)",
        at[0],
        at[1],
        received - t0
    );
    describe(&sent, "cli");
}

/// Keycloak's own logout token, posted again: refused, nothing changes.
async fn replay_is_refused(e: &Env, sent: &str) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/backchannel-logout", e.a.http_addr))
        .form(&[("logout_token", sent)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("replayed"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_refuses_the_token_on_both_replicas_within_1s() {
    let e = env().await;
    let alice_sub = e.kc.user_id("alice").await.unwrap();
    let bob = e.kc.login("bob", "openid").await.access_token;
    let pat = e.pat("alice").await;
    assert_eq!(e.statuses(&pat).await, [200, 200]);
    let sent = admin_logout(&e, &alice_sub).await;
    others_unaffected(&e, &bob, &pat).await;
    replay_is_refused(&e, &sent).await;
    user_logout(&e).await;
    others_unaffected(&e, &bob, &pat).await;
    let _ = &e.b;
    e.restore().await;
}
