//! A token's owner is (issuer, sub). With two issuers (the `--dev` issuer
//! and the Keycloak stand-in) and one `sub`, neither user can see or touch the other's PATs, and upstreams tell them
//! apart by `x-auth-issuer`.

use std::time::Duration;

use chrono::Utc;
use portcullis::dev::DevIssuer;
use portcullis::pat::{self, CreateRequest};
use portcullis::server::Running;
use portcullis::store::{NewToken, Store, TokenKind};
use portcullis_testkit::api::{Api, dev_login};
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, serve_yaml, wait_ready,
};
use portcullis_testkit::keycloak::{FakeKeycloak, SignOpts};
use serde_json::json;

const MANAGER: &str = "tokens:manage api:read";
const SUB: &str = "alice";

struct Two {
    kc: FakeKeycloak,
    srv: Running,
    api: Api,
    /// Issuer A: the dev issuer.
    a_iss: String,
    a_login: String,
    /// Issuer B: the Keycloak stand-in, same `sub`.
    b_login: String,
    dir: tempfile::TempDir,
}

fn kc_token(kc: &FakeKeycloak, sub: &str, scope: &str, extra: serde_json::Value) -> String {
    let mut claims = kc.claims(sub);
    claims["scope"] = json!(scope);
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    kc.sign(&claims, &SignOpts::default())
}

async fn two_issuers() -> Two {
    let kc = FakeKeycloak::start().await;
    let yaml = format!(
        "policy:\n  default: authenticated\nissuers:\n  - issuer: {iss}\n    audiences: [portcullis]\n",
        iss = kc.issuer()
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml, dir.path(), true).await;
    // Bounded wait until the stand-in's keys are loaded.
    wait_ready(&srv, Duration::from_secs(10)).await;
    let a_iss = DevIssuer::load_existing(dir.path(), None)
        .unwrap()
        .issuer()
        .to_owned();
    assert_ne!(a_iss, kc.issuer());
    Two {
        api: Api::new(srv.http_addr),
        a_login: dev_login(dir.path(), SUB, MANAGER),
        b_login: kc_token(&kc, SUB, MANAGER, json!({})),
        a_iss,
        kc,
        srv,
        dir,
    }
}

fn store(t: &Two) -> Store {
    t.srv.engine.load().pats().store().clone()
}

#[tokio::test]
async fn item6_same_sub_of_another_issuer_cannot_list_get_revoke_or_rotate() {
    let t = two_issuers().await;
    let (id, raw) = t.api.create(&t.a_login, "a-token", &["api:read"]).await;

    let list = t.api.get("/api/v1/tokens", &t.b_login).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body, json!([]), "B sees A's tokens: {list:?}");
    let path = format!("/api/v1/tokens/{id}");
    t.api
        .get(&path, &t.b_login)
        .await
        .assert_error(404, "not_found", "no such token");
    t.api
        .delete(&path, &t.b_login)
        .await
        .assert_error(404, "not_found", "no such token");
    t.api
        .post(&format!("{path}/rotate"), &t.b_login, json!({}))
        .await
        .assert_error(404, "not_found", "no such token");
    // A's token is untouched and still A's.
    let (h, _) = allowed(&check(t.srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
    assert_eq!(h["x-auth-token-id"], id);
    let mine = t.api.get(&path, &t.a_login).await;
    assert_eq!(mine.status, 200, "{mine:?}");
    assert_eq!(mine.body["active"], true);
    assert_eq!(mine.body["user_issuer"], t.a_iss.as_str());

    // B's own token is listed for B only.
    let (b_id, _) = t.api.create(&t.b_login, "b-token", &["api:read"]).await;
    let b_list = t.api.get("/api/v1/tokens", &t.b_login).await;
    assert_eq!(b_list.body.as_array().unwrap().len(), 1, "{b_list:?}");
    assert_eq!(b_list.body[0]["id"], b_id);
    let a_list = t.api.get("/api/v1/tokens", &t.a_login).await;
    assert_eq!(a_list.body.as_array().unwrap().len(), 1, "{a_list:?}");
    assert_eq!(a_list.body[0]["id"], id);
}

#[tokio::test]
async fn item6_x_auth_issuer_tells_same_sub_users_apart_and_cannot_be_spoofed() {
    let t = two_issuers().await;
    let (_, a_pat) = t.api.create(&t.a_login, "a", &["api:read"]).await;
    let (_, b_pat) = t.api.create(&t.b_login, "b", &["api:read"]).await;
    for (cred, iss) in [
        (&t.a_login, t.a_iss.clone()),
        (&t.b_login, t.kc.issuer()),
        (&a_pat, t.a_iss.clone()),
        (&b_pat, t.kc.issuer()),
    ] {
        let req = Req::get("/")
            .bearer(cred)
            .header("x-auth-issuer", "https://evil.example");
        let (h, removed) = allowed(&check(t.srv.grpc_addr, &req).await);
        assert_eq!(h["x-auth-subject"], SUB);
        assert_eq!(h["x-auth-issuer"], iss, "{h:?}");
        assert!(!removed.contains(&"x-auth-issuer".to_owned()));
    }
}

#[tokio::test]
async fn item6_unowned_legacy_token_belongs_to_nobody_and_sends_no_issuer() {
    let t = two_issuers().await;
    // A row from before migration 4 with two issuers configured: no owner issuer.
    let (raw, rec) = pat::create(
        &store(&t),
        &Default::default(),
        CreateRequest {
            user_id: SUB.into(),
            user_issuer: String::new(),
            username: SUB.into(),
            name: "legacy".into(),
            scopes: vec!["api:read".into()],
            ..Default::default()
        },
        Utc::now(),
    )
    .await
    .unwrap();
    for login in [&t.a_login, &t.b_login] {
        let path = format!("/api/v1/tokens/{}", rec.id);
        t.api
            .get(&path, login)
            .await
            .assert_error(404, "not_found", "no such token");
        t.api
            .delete(&path, login)
            .await
            .assert_error(404, "not_found", "no such token");
        let list = t.api.get("/api/v1/tokens", login).await;
        assert_eq!(list.body, json!([]), "{list:?}");
    }
    // It still authenticates its bearer, but names no issuer, and a
    // client-sent x-auth-issuer is removed rather than passed on.
    let req = Req::get("/")
        .bearer(&raw)
        .header("x-auth-issuer", &t.kc.issuer());
    let (h, removed) = allowed(&check(t.srv.grpc_addr, &req).await);
    assert!(!h.contains_key("x-auth-issuer"), "{h:?}");
    assert!(removed.contains(&"x-auth-issuer".to_owned()), "{removed:?}");
}

#[tokio::test]
async fn item6_admin_calls_need_the_issuer_when_several_are_configured() {
    let t = two_issuers().await;
    let admin = dev_login(t.dir.path(), "root", "tokens:admin");
    let (a_id, _) = t.api.create(&t.a_login, "a", &["api:read"]).await;
    let (b_id, b_raw) = t.api.create(&t.b_login, "b", &["api:read"]).await;
    let base = format!("/api/v1/admin/users/{SUB}/tokens");
    t.api
        .get(&base, &admin)
        .await
        .assert_error(400, "invalid_request", "issuer: required");
    t.api
        .delete(&base, &admin)
        .await
        .assert_error(400, "invalid_request", "issuer: required");
    let enc = |s: &str| s.replace(':', "%3A").replace('/', "%2F");
    let of_a = t
        .api
        .get(&format!("{base}?issuer={}", enc(&t.a_iss)), &admin)
        .await;
    assert_eq!(of_a.status, 200, "{of_a:?}");
    assert_eq!(of_a.body.as_array().unwrap().len(), 1);
    assert_eq!(of_a.body[0]["id"], a_id);
    let gone = t
        .api
        .delete(&format!("{base}?issuer={}", enc(&t.kc.issuer())), &admin)
        .await;
    assert_eq!(gone.status, 200, "{gone:?}");
    assert_eq!(gone.body["revoked"], 1);
    assert_eq!(gone.body["tokens"][0]["id"], b_id);
    assert_invalid_token(
        &check(t.srv.grpc_addr, &Req::get("/").bearer(&b_raw)).await,
        "token revoked",
    );
    let a_still = t
        .api
        .get(&format!("/api/v1/tokens/{a_id}"), &t.a_login)
        .await;
    assert_eq!(a_still.body["active"], true, "{a_still:?}");
}

#[tokio::test]
async fn item6_jwt_pat_must_belong_to_the_tokens_issuer_and_sub() {
    let t = two_issuers().await;
    let s = store(&t);
    let register = |tok: &str, jti: &str, issuer: &str| NewToken {
        id: uuid::Uuid::new_v4(),
        user_id: SUB.into(),
        user_issuer: issuer.into(),
        username: SUB.into(),
        name: "exchanged".into(),
        description: None,
        token_hash: portcullis::jwt::token_hash(tok),
        display_hint: "jwt…".into(),
        scopes: vec!["api:read".into()],
        created_at: Utc::now(),
        expires_at: Utc::now() + chrono::TimeDelta::hours(1),
        rotated_from: None,
        kind: TokenKind::Jwt,
        jti: Some(jti.into()),
        hash_version: Default::default(),
    };
    // Signed by B for `alice`, registered to A's `alice`: not B's PAT.
    let foreign = kc_token(
        &t.kc,
        SUB,
        "api:read",
        json!({"token_use": "pat", "jti": "jti-foreign"}),
    );
    s.insert(register(&foreign, "jti-foreign", &t.a_iss))
        .await
        .unwrap();
    assert_invalid_token(
        &check(t.srv.grpc_addr, &Req::get("/").bearer(&foreign)).await,
        "unregistered token",
    );
    t.api
        .get("/api/v1/tokens/self", &foreign)
        .await
        .assert_error(401, "invalid_token", "unregistered token");
    // The same, registered to B's `alice`, is accepted.
    let own = kc_token(
        &t.kc,
        SUB,
        "api:read",
        json!({"token_use": "pat", "jti": "jti-own"}),
    );
    s.insert(register(&own, "jti-own", &t.kc.issuer()))
        .await
        .unwrap();
    let (h, _) = allowed(&check(t.srv.grpc_addr, &Req::get("/").bearer(&own)).await);
    assert_eq!(h["x-auth-method"], "pat");
    assert_eq!(h["x-auth-issuer"], t.kc.issuer());
}

/// Rows from before migration 4 belong, at start-up, to the single
/// configured issuer (here the dev issuer), and only to it.
#[tokio::test]
async fn item6_start_up_gives_pre_0004_tokens_to_the_single_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let raw = portcullis::pat::format::generate("pat_");
    let id = uuid::Uuid::new_v4();
    {
        // A database at schema version 2 holding one token of `alice`.
        let db = rusqlite::Connection::open(dir.path().join("portcullis.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY NOT NULL, \
             name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for &(v, name, sql, _) in &portcullis::store::MIGRATIONS[..2] {
            db.execute_batch(sql).unwrap();
            db.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![v, name],
            )
            .unwrap();
        }
        let now = Utc::now();
        db.execute(
            "INSERT INTO personal_access_tokens (id, user_id, username, name, token_hash, \
             display_hint, scopes, created_at, expires_at) VALUES (?1, ?2, ?2, 'old', ?3, 'pat_x', \
             '[\"api:read\"]', ?4, ?5)",
            rusqlite::params![
                id.to_string(),
                SUB,
                &portcullis::pat::format::hash(&raw)[..],
                now.timestamp_micros(),
                (now + chrono::TimeDelta::days(1)).timestamp_micros()
            ],
        )
        .unwrap();
    }
    let srv = serve_yaml("policy:\n  default: authenticated\n", dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let iss = DevIssuer::load_existing(dir.path(), None)
        .unwrap()
        .issuer()
        .to_owned();
    let login = dev_login(dir.path(), SUB, MANAGER);
    let list = api.get("/api/v1/tokens", &login).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1, "{list:?}");
    assert_eq!(list.body[0]["id"], id.to_string());
    assert_eq!(list.body[0]["user_issuer"], iss.as_str());
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&raw)).await);
    assert_eq!(h["x-auth-issuer"], iss);
}
