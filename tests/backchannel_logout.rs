//! OpenID Connect Back-Channel Logout (`POST /backchannel-logout`) against
//! the Keycloak stand-in, which can sign anything: one test per §2.6
//! refusal (each a 400 that changes nothing), the effect of `sid` and
//! `sub`-only logouts on Check, both `include_pats` settings, and the
//! spread to a second replica through the bus and the store.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use portcullis::server::Running;
use portcullis::store::{
    ActorKind, EventQuery, EventRecord, LogoutKind, LogoutMark, NewToken, TokenKind,
};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check, client, serve_yaml};
use portcullis_testkit::cluster::{Cluster, wait_denied};
use portcullis_testkit::in_process::InProcess;
use portcullis_testkit::keycloak::{Failure, FakeKeycloak, SignOpts};
use portcullis_testkit::store_suite;
use serde_json::{Value, json};
use tokio::time::Instant;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// The client whose logout tokens are accepted.
const BCL_AUD: &str = "portcullis-bcl";

fn issuer_extra(include_pats: bool) -> String {
    format!(
        "    backchannel_logout: {{ audiences: [{BCL_AUD}], include_pats: {include_pats} }}\n\
         \x20   max_token_lifetime: 1h\n"
    )
}

fn config(kc: &FakeKeycloak, include_pats: bool) -> String {
    format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n{}\
         policy:\n  default: authenticated\n",
        kc.issuer(),
        issuer_extra(include_pats)
    )
}

struct Env {
    kc: FakeKeycloak,
    srv: Running,
    _dir: tempfile::TempDir,
}

async fn env(include_pats: bool) -> Env {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&config(&kc, include_pats), dir.path(), false).await;
    Env { kc, srv, _dir: dir }
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// A valid logout token's claims for this session/subject.
fn logout_claims(kc: &FakeKeycloak, sid: Option<&str>, sub: Option<&str>) -> Value {
    let mut c = json!({
        "iss": kc.issuer(),
        "aud": BCL_AUD,
        "iat": now(),
        "exp": now() + 60,
        "jti": uuid::Uuid::new_v4().to_string(),
        "typ": "Logout",
        "events": { EVENT: {} },
    });
    if let Some(s) = sid {
        c["sid"] = json!(s);
    }
    if let Some(s) = sub {
        c["sub"] = json!(s);
    }
    c
}

fn logout_opts() -> SignOpts {
    SignOpts {
        header_typ: Some("logout+jwt".into()),
        ..SignOpts::default()
    }
}

fn sign_logout(kc: &FakeKeycloak, claims: &Value) -> String {
    kc.sign(claims, &logout_opts())
}

/// A login token of `sub` in session `sid`, issued `age` seconds ago.
fn login(kc: &FakeKeycloak, sub: &str, sid: &str, age: i64) -> String {
    let mut c = kc.claims(sub);
    c["sid"] = json!(sid);
    c["iat"] = json!(now() - age);
    kc.sign(&c, &SignOpts::default())
}

/// POSTs a form; returns status, JSON body (or Null) and Cache-Control.
async fn post_form(srv: &Running, body: &str) -> (u16, Value, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/backchannel-logout", srv.http_addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("logout endpoint reachable");
    let status = resp.status().as_u16();
    let cc = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        cc,
    )
}

async fn post_logout(srv: &Running, token: &str) -> (u16, Value, String) {
    post_form(srv, &format!("logout_token={token}")).await
}

/// Asserts a 400 `invalid_request` whose description contains `needle`.
async fn assert_refused(srv: &Running, token: &str, needle: &str) {
    let (st, body, cc) = post_logout(srv, token).await;
    assert_eq!(st, 400, "{needle}: {body}");
    assert_eq!(cc, "no-store");
    assert_eq!(body["error"], "invalid_request");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.contains(needle), "wanted {needle:?} in {d:?}");
}

async fn assert_allowed(srv: &Running, token: &str) {
    allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(token)).await);
}

async fn assert_logged_out(srv: &Running, token: &str) {
    let resp = check(srv.grpc_addr, &Req::get("/x").bearer(token)).await;
    assert_invalid_token(&resp, "session logged out");
}

/// Forges a logout token for session `s1` with `change` applied to the claims.
fn forged(kc: &FakeKeycloak, change: Value) -> String {
    let mut c = logout_claims(kc, Some("s1"), Some("alice"));
    for (k, v) in change.as_object().unwrap() {
        match v {
            Value::Null => {
                c.as_object_mut().unwrap().remove(k);
            }
            v => c[k] = v.clone(),
        }
    }
    sign_logout(kc, &c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signature_is_refused() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    // A genuine logout token for s1 whose payload is swapped for s2's.
    let good = sign_logout(&e.kc, &logout_claims(&e.kc, Some("s1"), None));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64url(&logout_claims(&e.kc, Some("s2"), None).to_string());
    assert_refused(&e.srv, &parts.join("."), "invalid signature").await;
    assert_allowed(&e.srv, &tok).await;
    assert_allowed(&e.srv, &login(&e.kc, "alice", "s2", 5)).await;
}

fn base64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_is_refused() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    assert_refused(
        &e.srv,
        &forged(&e.kc, json!({"aud": "portcullis"})),
        "audience",
    )
    .await;
    assert_refused(&e.srv, &forged(&e.kc, json!({"aud": null})), "audience").await;
    assert_allowed(&e.srv, &tok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_events_is_refused() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    assert_refused(&e.srv, &forged(&e.kc, json!({"events": null})), "events").await;
    let other = json!({"events": {"http://schemas.openid.net/event/other": {}}});
    assert_refused(&e.srv, &forged(&e.kc, other), "events").await;
    assert_allowed(&e.srv, &tok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_is_refused() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    assert_refused(&e.srv, &forged(&e.kc, json!({"nonce": "n-1"})), "nonce").await;
    assert_allowed(&e.srv, &tok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_jti_is_refused() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    let lt = sign_logout(&e.kc, &logout_claims(&e.kc, Some("s1"), Some("alice")));
    let (st, body, cc) = post_logout(&e.srv, &lt).await;
    assert_eq!((st, cc.as_str()), (200, "no-store"), "{body}");
    assert_logged_out(&e.srv, &tok).await;
    assert_refused(&e.srv, &lt, "replayed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_far_in_the_past_or_future_is_refused() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    let old = json!({"iat": now() - 3600, "exp": null});
    assert_refused(&e.srv, &forged(&e.kc, old), "iat is too old").await;
    let future = json!({"iat": now() + 3600});
    assert_refused(&e.srv, &forged(&e.kc, future), "iat is in the future").await;
    assert_refused(&e.srv, &forged(&e.kc, json!({"iat": null})), "missing iat").await;
    let expired = json!({"exp": now() - 3600});
    assert_refused(&e.srv, &forged(&e.kc, expired), "expired").await;
    assert_allowed(&e.srv, &tok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_claim_and_header_refusals() {
    let e = env(false).await;
    let tok = login(&e.kc, "alice", "s1", 5);
    let neither = json!({"sid": null, "sub": null});
    assert_refused(&e.srv, &forged(&e.kc, neither), "neither sid nor sub").await;
    assert_refused(&e.srv, &forged(&e.kc, json!({"jti": null})), "missing jti").await;
    assert_refused(
        &e.srv,
        &forged(&e.kc, json!({"iss": "https://x"})),
        "issuer",
    )
    .await;
    // An access token (typ JWT, no events) is not a logout token.
    assert_refused(&e.srv, &tok, "typ").await;
    let untyped = SignOpts {
        extra_header: json!({"typ": null}).as_object().unwrap().clone(),
        ..SignOpts::default()
    };
    let c = logout_claims(&e.kc, Some("s1"), None);
    assert_refused(&e.srv, &e.kc.sign(&c, &untyped), "missing typ").await;
    // And a logout token is never an access token.
    let lt = sign_logout(&e.kc, &c);
    let resp = check(e.srv.grpc_addr, &Req::get("/x").bearer(&lt)).await;
    assert_invalid_token(&resp, "");
    assert_allowed(&e.srv, &tok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_and_unconfigured_is_404() {
    let e = env(false).await;
    for (body, needle) in [
        ("", "missing form parameter"),
        ("logout_token=", "missing form parameter"),
        ("logout_token=a&logout_token=b", "more than once"),
        ("logout_token=not-a-jwt", "invalid logout token"),
    ] {
        let (st, v, cc) = post_form(&e.srv, body).await;
        assert_eq!((st, cc.as_str()), (400, "no-store"), "{body}: {v}");
        assert!(
            v["error_description"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let resp = reqwest::Client::new()
        .post(format!("http://{}/backchannel-logout", e.srv.http_addr))
        .json(&json!({"logout_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "JSON is not a form");

    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "issuers:\n  - issuer: {}\n    audiences: [portcullis]\n",
        kc.issuer()
    );
    let off = serve_yaml(&yaml, dir.path(), false).await;
    let lt = sign_logout(&kc, &logout_claims(&kc, Some("s1"), None));
    let (st, _, cc) = post_logout(&off, &lt).await;
    assert_eq!(
        (st, cc.as_str()),
        (404, "no-store"),
        "off unless configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sid_logout_refuses_that_session_only() {
    let e = env(false).await;
    let s1 = login(&e.kc, "alice", "s1", 5);
    let s2 = login(&e.kc, "alice", "s2", 5);
    let bob = login(&e.kc, "bob", "s3", 5);
    assert_allowed(&e.srv, &s1).await;
    let lt = sign_logout(&e.kc, &logout_claims(&e.kc, Some("s1"), Some("alice")));
    assert_eq!(post_logout(&e.srv, &lt).await.0, 200);
    assert_logged_out(&e.srv, &s1).await;
    assert_allowed(&e.srv, &s2).await;
    assert_allowed(&e.srv, &bob).await;
    let metrics = reqwest::get(format!("http://{}/metrics", e.srv.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The registry is process-wide (other tests count too): present is enough.
    assert!(
        metrics.contains(
            r#"portcullis_backchannel_logout_tokens_total{outcome="accepted",reason="ok"}"#
        ),
        "{metrics}"
    );
}

/// The `jwt.logged_out` events in `srv`'s store, newest first.
async fn logged_out_events(srv: &Running) -> Vec<EventRecord> {
    let q = EventQuery {
        event: Some("jwt.logged_out".into()),
        limit: 10,
        ..EventQuery::default()
    };
    let store = srv.engine.load().pats().store().clone();
    store.events(&q).await.unwrap()
}

/// An accepted logout is an audit event: the issuer as actor (from the
/// caller's address), the subject as owner, the `sid` and the logout
/// token's `jti`; never the token. A refused one records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_logout_is_an_audit_event() {
    let e = env(false).await;
    let mut claims = logout_claims(&e.kc, Some("s1"), Some("alice"));
    let lt = sign_logout(&e.kc, &claims);
    assert_eq!(post_logout(&e.srv, &lt).await.0, 200);
    let evs = logged_out_events(&e.srv).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    let ev = &evs[0];
    assert_eq!(ev.actor.kind, ActorKind::Idp);
    assert_eq!(ev.actor.issuer, e.kc.issuer());
    assert_eq!(ev.actor.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        (ev.owner_issuer.as_str(), ev.owner_id.as_str()),
        (e.kc.issuer().as_str(), "alice")
    );
    assert_eq!(ev.token_id, None);
    assert_eq!(ev.data["sid"], "s1");
    assert_eq!(ev.data["logout_jti"], claims["jti"]);
    assert_eq!(ev.data["refused"], json!({"kind": "sid", "value": "s1"}));
    assert_eq!(ev.data["reason"], "backchannel_logout");
    let text = serde_json::to_string(ev).unwrap();
    let signature = lt.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "the logout token leaked: {text}");

    // A sub-only logout: the mark is the subject's.
    let lt = sign_logout(&e.kc, &logout_claims(&e.kc, None, Some("bob")));
    assert_eq!(post_logout(&e.srv, &lt).await.0, 200);
    let evs = logged_out_events(&e.srv).await;
    assert_eq!(
        evs[0].data["refused"],
        json!({"kind": "sub", "value": "bob"})
    );
    assert_eq!(evs[0].data["sid"], Value::Null);

    // Refused (a replay, a bad signature): no event.
    assert_eq!(post_logout(&e.srv, &lt).await.0, 400);
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    let mut forged: Vec<String> = lt.split('.').map(str::to_owned).collect();
    forged[1] = base64url(&claims.to_string());
    assert_eq!(post_logout(&e.srv, &forged.join(".")).await.0, 400);
    assert_eq!(logged_out_events(&e.srv).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_logout_refuses_tokens_issued_before_it() {
    let e = env(false).await;
    let older = login(&e.kc, "alice", "s1", 10);
    let other = login(&e.kc, "bob", "s2", 10);
    let lt = sign_logout(&e.kc, &logout_claims(&e.kc, None, Some("alice")));
    assert_eq!(post_logout(&e.srv, &lt).await.0, 200);
    assert_logged_out(&e.srv, &older).await;
    assert_allowed(&e.srv, &other).await;
    // A login after the logout (iat later than the logout's) works.
    let newer = login(&e.kc, "alice", "s4", -2);
    assert_allowed(&e.srv, &newer).await;
}

/// An exchanged PAT of alice in session `sid` (registered), and an opaque
/// PAT of alice created now.
async fn pats(e: &Env, sid: &str) -> (String, String) {
    let store = e.srv.engine.load().pats().store().clone();
    let mut c = e.kc.claims("alice");
    c["sid"] = json!(sid);
    c["iat"] = json!(now() - 5);
    c["token_use"] = json!("pat");
    let exchanged = e.kc.sign(&c, &SignOpts::default());
    let (opaque, mut row) = store_suite::token("alice", TimeDelta::hours(1));
    row.user_issuer = e.kc.issuer();
    row.created_at = Utc::now() - TimeDelta::seconds(5);
    store.insert(row).await.expect("opaque PAT");
    let n = Utc::now();
    store
        .insert(NewToken {
            id: uuid::Uuid::new_v4(),
            user_id: "alice".into(),
            user_issuer: e.kc.issuer(),
            username: "alice".into(),
            name: "exchanged".into(),
            description: None,
            token_hash: portcullis::jwt::token_hash(&exchanged),
            display_hint: "jwt…".into(),
            scopes: vec!["*:*".into()],
            created_at: n,
            expires_at: n + TimeDelta::hours(1),
            rotated_from: None,
            kind: TokenKind::Jwt,
            jti: c["jti"].as_str().map(str::to_owned),
            hash_version: Default::default(),
        })
        .await
        .expect("exchanged PAT");
    (exchanged, opaque)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pats_survive_a_logout_by_default() {
    let e = env(false).await;
    let (exchanged, opaque) = pats(&e, "s1").await;
    let s1 = login(&e.kc, "alice", "s1", 5);
    for lt in [
        logout_claims(&e.kc, Some("s1"), Some("alice")),
        logout_claims(&e.kc, None, Some("alice")),
    ] {
        assert_eq!(post_logout(&e.srv, &sign_logout(&e.kc, &lt)).await.0, 200);
    }
    assert_logged_out(&e.srv, &s1).await;
    assert_allowed(&e.srv, &exchanged).await;
    assert_allowed(&e.srv, &opaque).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_pats_refuses_the_sessions_and_subjects_pats() {
    let e = env(true).await;
    let (exchanged, opaque) = pats(&e, "s1").await;
    assert_allowed(&e.srv, &exchanged).await;
    assert_allowed(&e.srv, &opaque).await;
    let by_sid = logout_claims(&e.kc, Some("s1"), Some("alice"));
    assert_eq!(
        post_logout(&e.srv, &sign_logout(&e.kc, &by_sid)).await.0,
        200
    );
    assert_logged_out(&e.srv, &exchanged).await;
    assert_allowed(&e.srv, &opaque).await; // not bound to the session
    let by_sub = logout_claims(&e.kc, None, Some("alice"));
    assert_eq!(
        post_logout(&e.srv, &sign_logout(&e.kc, &by_sub)).await.0,
        200
    );
    assert_logged_out(&e.srv, &opaque).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_spreads_to_the_other_replica_and_to_a_new_one() {
    let mut c = Cluster::start_with("5s", &issuer_extra(false), "").await;
    let tok = login(&c.kc, "alice", "s1", 5);
    let req = Req::get("/x").bearer(&tok).build();
    let mut b = client(c.b.grpc_addr).await;
    allowed(&b.check(req.clone()).await.unwrap().into_inner());
    let lt = sign_logout(&c.kc, &logout_claims(&c.kc, Some("s1"), None));
    let t0 = Instant::now();
    assert_eq!(post_logout(&c.a, &lt).await.0, 200);
    let (lag, resp) = wait_denied(&mut b, &req, t0, Duration::from_secs(1)).await;
    assert_invalid_token(&resp, "session logged out");
    eprintln!("logout at A → denied at B after {lag:?} (includes the POST)");
    // A replica started afterwards loads the marks from the store.
    let late = c.replica().await;
    assert_logged_out(&late, &tok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_a_503_that_records_nothing_and_a_retry_passes() {
    let mut c = Cluster::start_with("1h", &issuer_extra(false), "").await;
    let tok = login(&c.kc, "alice", "s1", 5);
    let lt = sign_logout(&c.kc, &logout_claims(&c.kc, Some("s1"), None));
    c.pg.stop();
    let (st, body, cc) = post_logout(&c.a, &lt).await;
    assert_eq!((st, cc.as_str()), (503, "no-store"), "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_allowed(&c.a, &tok).await;
    c.pg.restart().await;
    // The same token again: not a replay, since nothing was recorded.
    let (st, body, _) = post_logout(&c.a, &lt).await;
    assert_eq!(st, 200, "{body}");
    assert_logged_out(&c.a, &tok).await;
    // The mark and its audit event are one transaction: the failed attempt
    // left no event, the retry exactly one.
    assert_eq!(logged_out_events(&c.a).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unavailable_is_a_503() {
    let kc = FakeKeycloak::start().await;
    kc.set_failure(Failure::Status500);
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&config(&kc, false), dir.path(), false).await;
    let lt = sign_logout(&kc, &logout_claims(&kc, Some("s1"), None));
    let (st, body, cc) = post_logout(&srv, &lt).await;
    assert_eq!((st, cc.as_str()), (503, "no-store"), "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
}

/// An engine whose marks never loaded (as `portcullis check` builds one)
/// asks the store: a logged-out session is refused there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloaded_marks_ask_the_store() {
    let kc = FakeKeycloak::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ip = InProcess::from_yaml(&config(&kc, false), dir.path(), false).await;
    let (s1, s2) = (login(&kc, "alice", "s1", 5), login(&kc, "alice", "s2", 5));
    let now = Utc::now();
    let mark = LogoutMark {
        issuer: kc.issuer(),
        kind: LogoutKind::Sid,
        value: "s1".into(),
        not_before: now,
        expires_at: now + TimeDelta::hours(1),
        changed_at: now,
    };
    ip.store().mark_logout(&mark).await.unwrap();
    assert!(!ip.engine.load().denylist().logout().is_loaded());
    assert_invalid_token(
        &ip.check(&Req::get("/x").bearer(&s1)).await,
        "session logged out",
    );
    allowed(&ip.check(&Req::get("/x").bearer(&s2)).await);
}
