//! The audit trail through the API, gRPC and the CLI (who, what, which
//! token, when, from where behind a trusted proxy; own events only unless
//! admin; read-only), leak reports (no token oracle, in answer or timing)
//! and a PAT revoking itself.

use std::process::Command;
use std::time::{Duration, Instant};

use portcullis::api::grpc::pb;
use portcullis::api::grpc::pb::token_service_client::TokenServiceClient;
use portcullis_testkit::api::{Api, dev_login, with_auth};
use portcullis_testkit::check::{
    Req, allowed, assert_invalid_token, check, check_until, serve_yaml,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const MANAGER: &str = "tokens:manage api:read";
const ADMIN: &str = "tokens:manage tokens:admin api:read";
const LEAK_SECRET: &str = "scanner-shared-secret-0123456789abcdef";

fn yaml() -> String {
    format!(
        "policy:\n  default: authenticated\n\
         audit:\n  trusted_proxy_hops: 1\n  trusted_proxies: [127.0.0.1]\n\
         api:\n  leak_report_secret: {LEAK_SECRET}\n  leak_report_floor: 150ms\n"
    )
}

fn events(a: &portcullis_testkit::api::Answer) -> Vec<Value> {
    assert_eq!(a.status, 200, "{a:?}");
    a.body["events"].as_array().cloned().unwrap_or_default()
}

fn names(v: &[Value]) -> Vec<&str> {
    v.iter()
        .map(|e| e["event"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_audit_trail_records_who_what_which_when_and_where_from() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(), dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let bob = dev_login(dir.path(), "bob", MANAGER);
    let admin = dev_login(dir.path(), "root", ADMIN);
    // Created through "Envoy" (a trusted proxy on 127.0.0.1): the client
    // spoofs an entry, Envoy appends the address it saw; one trusted hop
    // picks Envoy's.
    let created: Value = reqwest::Client::new()
        .post(api.url("/api/v1/tokens"))
        .bearer_auth(&alice)
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
        .json(&json!({"name": "ci", "scopes": ["api:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let r = api
        .post(&format!("/api/v1/tokens/{id}/rotate"), &alice, json!({}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let new_id = r.body["id"].as_str().unwrap().to_owned();
    api.delete(&format!("/api/v1/tokens/{new_id}"), &alice)
        .await;
    api.create(&bob, "bobs", &["api:read"]).await;

    let mine = events(&api.get("/api/v1/audit", &alice).await);
    assert_eq!(
        names(&mine),
        [
            "token.revoked",
            "token.created",
            "token.rotated",
            "token.created"
        ]
    );
    let first = &mine[3];
    assert_eq!(first["token_id"], id.as_str());
    assert_eq!(first["owner_id"], "alice");
    assert_eq!(first["actor"]["kind"], "jwt");
    assert_eq!(first["actor"]["subject"], "alice");
    assert_eq!(first["actor"]["client_addr"], "203.0.113.9");
    assert_eq!(
        mine[0]["actor"]["client_addr"], "127.0.0.1",
        "no proxy: the peer"
    );
    assert_eq!(mine[0]["data"]["reason"], "api");
    assert_eq!(mine[1]["data"]["reason"], "rotation");
    assert!(mine[0]["at"].is_string() && mine[0]["id"].is_string());
    // Own events only; another user's need tokens:admin.
    assert_eq!(
        names(&events(&api.get("/api/v1/audit", &bob).await)),
        ["token.created"]
    );
    api.get("/api/v1/audit?user=alice", &bob)
        .await
        .assert_error(403, "insufficient_scope", "tokens:admin");
    assert!(events(&api.get(&format!("/api/v1/audit?token_id={id}"), &bob).await).is_empty());
    let own_filter = events(
        &api.get(&format!("/api/v1/audit?token_id={id}"), &alice)
            .await,
    );
    assert_eq!(names(&own_filter), ["token.rotated", "token.created"]);
    // Admins: anyone's, by user or by token.
    assert_eq!(
        events(&api.get("/api/v1/audit?user=alice", &admin).await).len(),
        4
    );
    let by_token = events(
        &api.get(&format!("/api/v1/audit?token_id={new_id}"), &admin)
            .await,
    );
    assert_eq!(names(&by_token), ["token.revoked", "token.created"]);
    let revoked = events(
        &api.get("/api/v1/audit?user=alice&event=token.revoked", &admin)
            .await,
    );
    assert_eq!(revoked.len(), 1);
    // Pages.
    let p1 = api.get("/api/v1/audit?limit=3", &alice).await;
    let cursor = p1.body["next_cursor"]
        .as_str()
        .expect("next page")
        .to_owned();
    let p2 = events(
        &api.get(&format!("/api/v1/audit?limit=3&cursor={cursor}"), &alice)
            .await,
    );
    assert_eq!(names(&p2), ["token.created"]);
    assert!(api.get("/api/v1/audit?limit=10", &alice).await.body["next_cursor"].is_null());
    // Refusals.
    let (_, pat) = api.create(&alice, "pat", &["api:read"]).await;
    api.get("/api/v1/audit", &pat).await.assert_error(
        403,
        "insufficient_scope",
        "personal access token",
    );
    api.get("/api/v1/audit?token_id=nope", &alice)
        .await
        .assert_error(400, "invalid_request", "token_id");
    api.get("/api/v1/audit?event=token.sold", &alice)
        .await
        .assert_error(400, "invalid_request", "event");
    api.get("/api/v1/audit?cursor=%25", &alice)
        .await
        .assert_error(400, "invalid_request", "cursor");
    // Append-only: nothing changes or deletes an event through the API.
    for m in ["DELETE", "PUT", "POST", "PATCH"] {
        let a = api
            .call(m, "/api/v1/audit", Some(&admin), Some(json!({})))
            .await;
        assert_eq!(a.status, 405, "{m}: {a:?}");
    }
    // gRPC: the same trail.
    let mut g = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let page = g
        .list_audit_events(with_auth(
            pb::ListAuditEventsRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 5, "alice's four plus her PAT's creation");
    assert_eq!(
        page.events[4].actor.as_ref().unwrap().client_addr,
        "203.0.113.9"
    );
    let data: Value = serde_json::from_str(&page.events[4].data_json).unwrap();
    assert_eq!(data["token"]["name"], "ci");
    let denied = g
        .list_audit_events(with_auth(
            pb::ListAuditEventsRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    srv.shutdown(Duration::from_secs(5)).await;
    // The CLI reads the same from the store.
    let out = Command::new(BIN)
        .args(["audit", "--dev", "--data-dir"])
        .arg(dir.path())
        .args(["--user", "alice", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["actor"]["client_addr"], "203.0.113.9");
    let table = Command::new(BIN)
        .args(["audit", "--dev", "--data-dir"])
        .arg(dir.path())
        .args(["--token-id", &id])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("AT") && table.contains("token.rotated") && table.contains("203.0.113.9"),
        "{table}"
    );
}

async fn report(api: &Api, auth: (&str, &str), tokens: &[&str]) -> (u16, Value, Duration) {
    let http = reqwest::Client::new();
    let mut rb = http
        .post(api.url("/api/v1/tokens/revoke-leaked"))
        .json(&json!({ "tokens": tokens }));
    rb = match auth {
        ("secret", s) => rb.header("x-portcullis-leak-secret", s),
        ("bearer", t) => rb.bearer_auth(t),
        _ => rb,
    };
    let t0 = Instant::now();
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, t0.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn leak_reports_revoke_existing_tokens_and_reveal_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(), dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let admin = dev_login(dir.path(), "root", ADMIN);
    let (leaked_id, leaked) = api.create(&alice, "leaked", &["api:read"]).await;
    let (_, kept) = api.create(&alice, "kept", &["api:read"]).await;
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&leaked)).await);
    let unknown = "pat_0000000000000000000000000000000000000";
    let scanner = ("secret", LEAK_SECRET);
    let (s1, b1, _) = report(&api, scanner, &[&leaked, unknown, "not a token"]).await;
    let (s2, b2, _) = report(&api, scanner, &[unknown, "pat_x", &kept[..10]]).await;
    assert_eq!((s1, &b1), (202, &json!({"received": 3})));
    assert_eq!((s2, &b2), (s1, &b1), "the same answer, found or not");
    let resp = check_until(
        srv.grpc_addr,
        &Req::get("/").bearer(&leaked),
        Duration::from_secs(5),
        "leaked token refused",
        |c| c != 0,
    )
    .await;
    assert_invalid_token(&resp, "token revoked");
    allowed(&check(srv.grpc_addr, &Req::get("/").bearer(&kept)).await);
    // The owner's trail (and webhooks) tell them, naming the scanner.
    let trail = events(
        &api.get(&format!("/api/v1/audit?token_id={leaked_id}"), &alice)
            .await,
    );
    assert_eq!(names(&trail)[..2], ["token.revoked", "token.leaked"]);
    assert_eq!(trail[1]["actor"]["kind"], "scanner");
    assert_eq!(trail[0]["data"]["reason"], "leaked");
    // Reported again: still the same answer, token.leaked (already revoked).
    let (s3, b3, _) = report(&api, scanner, &[&leaked]).await;
    assert_eq!((s3, b3), (202, json!({"received": 1})));
    // Timing: fresh existing tokens vs unknown ones, interleaved.
    let mut fresh = Vec::new();
    for i in 0..8 {
        fresh.push(api.create(&alice, &format!("t{i}"), &["api:read"]).await.1);
    }
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for (i, t) in fresh.iter().enumerate() {
        let fake = format!("pat_{}", &t[4..].chars().rev().collect::<String>());
        let (a, b) = if i % 2 == 0 {
            let a = report(&api, ("bearer", &admin), &[t]).await;
            (a, report(&api, ("bearer", &admin), &[&fake]).await)
        } else {
            let b = report(&api, ("bearer", &admin), &[&fake]).await;
            (report(&api, ("bearer", &admin), &[t]).await, b)
        };
        assert_eq!((a.0, &a.1), (b.0, &b.1));
        found.push(a.2);
        missing.push(b.2);
    }
    let (f, m) = (median(found), median(missing));
    eprintln!("revoke-leaked medians: existing {f:?}, unknown {m:?}");
    assert!(f >= Duration::from_millis(150) && m >= Duration::from_millis(150));
    let gap = f.abs_diff(m);
    assert!(
        gap < Duration::from_millis(40),
        "timing tells: existing {f:?} vs unknown {m:?}"
    );
    for t in &fresh {
        check_until(
            srv.grpc_addr,
            &Req::get("/").bearer(t),
            Duration::from_secs(5),
            "revoked",
            |c| c != 0,
        )
        .await;
    }
    // Who may report.
    let (s, b, _) = report(&api, ("none", ""), &[unknown]).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_token")));
    let (s, _, _) = report(
        &api,
        ("secret", "wrong-secret-wrong-secret-wrong-secret"),
        &[unknown],
    )
    .await;
    assert_eq!(s, 401);
    let (s, b, _) = report(&api, ("bearer", &alice), &[unknown]).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("insufficient_scope")));
    let (s, _, _) = report(&api, ("bearer", &kept), &[unknown]).await;
    assert_eq!(s, 403, "a PAT cannot report");
    let (s, b, _) = report(&api, scanner, &[]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let many: Vec<&str> = vec![unknown; 101];
    let (s, _, _) = report(&api, scanner, &many).await;
    assert_eq!(s, 400);
    srv.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pat_revokes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(), dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let (id, pat) = api.create(&alice, "self", &["api:read"]).await;
    let r = api.delete("/api/v1/tokens/self", &pat).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["active"], false);
    let resp = check_until(
        srv.grpc_addr,
        &Req::get("/").bearer(&pat),
        Duration::from_secs(5),
        "revoked",
        |c| c != 0,
    )
    .await;
    assert_invalid_token(&resp, "token revoked");
    api.delete("/api/v1/tokens/self", &pat)
        .await
        .assert_error(401, "invalid_token", "revoked");
    api.delete("/api/v1/tokens/self", &alice)
        .await
        .assert_error(400, "invalid_request", "personal access token");
    let trail = events(
        &api.get(&format!("/api/v1/audit?token_id={id}"), &alice)
            .await,
    );
    assert_eq!(trail[0]["event"], "token.revoked");
    assert_eq!(trail[0]["data"]["reason"], "self");
    assert_eq!(trail[0]["actor"]["kind"], "pat");
    assert_eq!(trail[0]["actor"]["token_id"], id.as_str());
    // gRPC RevokeSelf.
    let (id2, pat2) = api.create(&alice, "self2", &["api:read"]).await;
    let mut g = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let info = g
        .revoke_self(with_auth(pb::RevokeSelfRequest {}, &pat2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.id.as_str(), info.active), (id2.as_str(), false));
    srv.shutdown(Duration::from_secs(5)).await;
}

/// A malformed report is refused without quoting the token back (serde's
/// message would), and every refusal takes as long as a success
/// (`api.leak_report_floor`, 150 ms here), so a refusal tells nothing.
#[tokio::test]
async fn leak_report_refusals_neither_echo_tokens_nor_answer_early() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(), dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let (_, pat) = api.create(&alice, "leaky", &["api:read"]).await;
    let http = reqwest::Client::new();
    let floor = Duration::from_millis(150);
    let raw = |body: String, secret: Option<&str>, bearer: Option<&str>| {
        let mut rb = http
            .post(api.url("/api/v1/tokens/revoke-leaked"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = secret {
            rb = rb.header("x-portcullis-leak-secret", s);
        }
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        async move {
            let t0 = Instant::now();
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap(), t0.elapsed())
        }
    };
    for body in [
        format!(r#"{{"tokens":"{pat}"}}"#),
        format!(r#"{{"tokens":["{pat}"], "{pat}": 1}}"#),
        format!(r#"{{"tokens":[{pat}]}}"#),
    ] {
        let (s, text, took) = raw(body, Some(LEAK_SECRET), None).await;
        assert_eq!(s, 400, "{text}");
        assert!(text.contains("line 1, column"), "{text}");
        assert!(
            !text.contains(&pat) && !text.contains(&pat[4..12]),
            "the 400 quotes the token: {text}"
        );
        assert!(took >= floor, "a bad body answered early: {took:?}");
    }
    let ok_body = || format!(r#"{{"tokens":["{pat}x"]}}"#);
    let refusals = [
        (raw(ok_body(), None, None).await, 401),
        (
            raw(ok_body(), Some("wrong-secret-wrong-secret-wrong"), None).await,
            401,
        ),
        (raw(ok_body(), None, Some(&alice)).await, 403),
        (
            raw(r#"{"tokens":[]}"#.into(), Some(LEAK_SECRET), None).await,
            400,
        ),
    ];
    for ((s, text, took), want) in refusals {
        assert_eq!(s, want, "{text}");
        assert!(took >= floor, "a {s} answered early ({took:?}): {text}");
    }
    // gRPC: the same floor on a refusal.
    let mut g = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let t0 = Instant::now();
    let e = g
        .revoke_leaked(pb::RevokeLeakedRequest {
            tokens: vec![pat.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(
        t0.elapsed() >= floor,
        "gRPC refusal early: {:?}",
        t0.elapsed()
    );
    srv.shutdown(Duration::from_secs(5)).await;
}

/// `X-Forwarded-For` is believed only from a peer in
/// `audit.trusted_proxies`: a client connecting directly (127.0.0.1, not a
/// listed proxy) is recorded as itself, whatever header it sends; and the
/// gRPC port (`audit.grpc_trusted_proxy_hops`, default 0) never believes it.
#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_not_believed() {
    let created_from = |srv_http, token: String, xff: &'static str| async move {
        let api = Api::new(srv_http);
        let r = reqwest::Client::new()
            .post(api.url("/api/v1/tokens"))
            .bearer_auth(&token)
            .header("x-forwarded-for", xff)
            .json(&json!({"name": "direct", "scopes": ["api:read"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let trail = events(&api.get("/api/v1/audit?event=token.created", &token).await);
        trail[0]["actor"]["client_addr"].clone()
    };
    // Only 192.0.2.10 is a proxy.
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(
        "policy:\n  default: authenticated\n\
         audit:\n  trusted_proxy_hops: 1\n  trusted_proxies: [192.0.2.10/32]\n",
        dir.path(),
        true,
    )
    .await;
    let alice = dev_login(dir.path(), "alice", MANAGER);
    assert_eq!(
        created_from(srv.http_addr, alice.clone(), "6.6.6.6").await,
        "127.0.0.1"
    );
    srv.shutdown(Duration::from_secs(5)).await;
    // 127.0.0.1 is a proxy for HTTP; gRPC still records the peer.
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(), dir.path(), true).await;
    let alice = dev_login(dir.path(), "alice", MANAGER);
    assert_eq!(
        created_from(srv.http_addr, alice.clone(), "6.6.6.6").await,
        "6.6.6.6"
    );
    let mut g = TokenServiceClient::connect(format!("http://{}", srv.grpc_addr))
        .await
        .unwrap();
    let mut req = with_auth(
        pb::CreateTokenRequest {
            name: "over-grpc".into(),
            scopes: vec!["api:read".into()],
            ..Default::default()
        },
        &alice,
    );
    req.metadata_mut()
        .insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    g.create_token(req).await.unwrap();
    let api = Api::new(srv.http_addr);
    let trail = events(&api.get("/api/v1/audit?event=token.created", &alice).await);
    assert_eq!(trail[0]["data"]["token"]["name"], "over-grpc");
    assert_eq!(trail[0]["actor"]["client_addr"], "127.0.0.1");
    srv.shutdown(Duration::from_secs(5)).await;
    // A hop count without a proxy list is refused, naming the key.
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg({
            let p = dir.path().join("bad.yaml");
            std::fs::write(&p, "audit:\n  trusted_proxy_hops: 1\n").unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit.trusted_proxies")
            || String::from_utf8_lossy(&out.stdout).contains("audit.trusted_proxies"),
        "{out:?}"
    );
}

/// An owner's trail names who acted on their tokens but keeps another
/// person's address private (an admin's, a scanner's); admins see it.
#[tokio::test]
async fn an_owner_does_not_see_where_an_admin_acted_from() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&yaml(), dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", MANAGER);
    let admin = dev_login(dir.path(), "root", ADMIN);
    let (id, _) = api.create(&alice, "ci", &["api:read"]).await;
    let r = reqwest::Client::new()
        .delete(api.url("/api/v1/admin/users/alice/tokens"))
        .bearer_auth(&admin)
        .header("x-forwarded-for", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mine = events(
        &api.get(&format!("/api/v1/audit?token_id={id}"), &alice)
            .await,
    );
    assert_eq!(names(&mine), ["token.revoked", "token.created"]);
    assert_eq!(mine[0]["actor"]["subject"], "root", "who acted is shown");
    assert!(
        mine[0]["actor"]["client_addr"].is_null(),
        "the admin's address leaked to the owner: {}",
        mine[0]["actor"]
    );
    assert_eq!(mine[1]["actor"]["client_addr"], "127.0.0.1", "her own call");
    let seen = events(
        &api.get(&format!("/api/v1/audit?token_id={id}"), &admin)
            .await,
    );
    assert_eq!(seen[0]["actor"]["client_addr"], "198.51.100.77");
    srv.shutdown(Duration::from_secs(5)).await;
}
