//! Where a PAT was used from: `last_used_ip` and `last_used_user_agent`
//! written with `last_used_at` in one flush (both backends), `token.new_ip`
//! per new /24 (IPv4) or /48 (IPv6) network, and the same through Check,
//! the token API and the operator's `admin token list` (table and JSON).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis::store::{EventQuery, Store, Usage, network_of};
use portcullis_testkit::api::{Api, dev_login};
use portcullis_testkit::check::{Req, allowed, check, serve_yaml};
use portcullis_testkit::eventually;
use portcullis_testkit::store_suite;
use portcullis_testkit::store_suite::{now, run_pg, run_sqlite, secs, setup, token};
use uuid::Uuid;

store_suite!(usage_details_and_new_networks);

fn usage(id: Uuid, at_secs: i64, ip: &str, ua: Option<&str>) -> Usage {
    Usage {
        id,
        at: now() + secs(at_secs),
        ip: Some(ip.parse::<IpAddr>().unwrap()),
        user_agent: ua.map(Arc::from),
    }
}

async fn new_ips(store: &Store) -> Vec<String> {
    let mut v = store
        .events(&EventQuery {
            event: Some("token.new_ip".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    v.reverse();
    v.iter()
        .map(|e| e.data["network"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn usage_details_and_new_networks(store: Store) {
    setup(&store).await;
    let (_, t) = token("alice", secs(3600));
    store.insert(t.clone()).await.unwrap();
    let get = async || store.get(t.id).await.unwrap().unwrap();
    // First use: recorded, its network is the token's first (not "new").
    store
        .touch_usage(&[usage(t.id, 1, "203.0.113.7", Some("curl/8.5"))], true)
        .await
        .unwrap();
    let r = get().await;
    assert_eq!(r.last_used_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(r.last_used_user_agent.as_deref(), Some("curl/8.5"));
    assert!(new_ips(&store).await.is_empty());
    // Same /24, no user agent sent: address moves, agent kept, no event.
    store
        .touch_usage(&[usage(t.id, 2, "203.0.113.99", None)], true)
        .await
        .unwrap();
    let r = get().await;
    assert_eq!(r.last_used_ip.as_deref(), Some("203.0.113.99"));
    assert_eq!(r.last_used_user_agent.as_deref(), Some("curl/8.5"));
    assert!(new_ips(&store).await.is_empty());
    // Another /24: token.new_ip, once.
    store
        .touch_usage(&[usage(t.id, 3, "198.51.100.4", Some("git/2.43"))], true)
        .await
        .unwrap();
    store
        .touch_usage(&[usage(t.id, 4, "198.51.100.5", Some("git/2.43"))], true)
        .await
        .unwrap();
    assert_eq!(new_ips(&store).await, ["198.51.100.0/24"]);
    // An older use never moves anything back.
    store
        .touch_usage(&[usage(t.id, -100, "192.0.2.1", Some("old"))], false)
        .await
        .unwrap();
    assert_eq!(get().await.last_used_ip.as_deref(), Some("198.51.100.5"));
    // IPv6 by /48; an IPv4-mapped address is its IPv4 network.
    for (s, ip) in [
        (5, "2001:db8:1:2::1"),
        (6, "2001:db8:1:ffff::9"),
        (7, "2001:db8:2::1"),
        (8, "::ffff:203.0.113.1"),
    ] {
        store
            .touch_usage(&[usage(t.id, s, ip, None)], true)
            .await
            .unwrap();
    }
    assert_eq!(
        new_ips(&store).await,
        ["198.51.100.0/24", "2001:db8:1::/48", "2001:db8:2::/48"]
    );
    assert_eq!(get().await.last_used_ip.as_deref(), Some("203.0.113.1"));
    let ev = store
        .events(&EventQuery {
            event: Some("token.new_ip".into()),
            limit: 1,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ev[0].token_id, Some(t.id));
    assert_eq!(ev[0].actor.client_addr.as_deref(), Some("2001:db8:2::1"));
    assert_eq!(ev[0].actor.token_id, Some(t.id));
    // Off: nothing recorded about networks.
    let (_, u) = token("bob", secs(3600));
    store.insert(u.clone()).await.unwrap();
    store
        .touch_usage(&[usage(u.id, 1, "10.0.0.1", None)], false)
        .await
        .unwrap();
    store
        .touch_usage(&[usage(u.id, 2, "10.9.0.1", None)], false)
        .await
        .unwrap();
    assert_eq!(new_ips(&store).await.len(), 3);
    assert_eq!(network_of("10.9.0.1".parse().unwrap()), "10.9.0.0/24");
}

#[tokio::test]
async fn check_records_where_a_pat_was_used_from() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        "policy:\n  default: authenticated\npat:\n  last_used_flush: 50ms\n  new_ip_events: true\n";
    let srv = serve_yaml(yaml, dir.path(), true).await;
    let api = Api::new(srv.http_addr);
    let alice = dev_login(dir.path(), "alice", "tokens:manage api:read");
    let (id, pat) = api.create(&alice, "ci", &["api:read"]).await;
    let req = Req::get("/x")
        .bearer(&pat)
        .source_ip("198.51.100.20")
        .header("user-agent", "git/2.43.0");
    allowed(&check(srv.grpc_addr, &req).await);
    let view = eventually(Duration::from_secs(5), "usage flushed", async || {
        let v = api.get(&format!("/api/v1/tokens/{id}"), &alice).await;
        if v.body["last_used_ip"].is_string() {
            Ok(v.body)
        } else {
            Err(v.body)
        }
    })
    .await;
    assert_eq!(view["last_used_ip"], "198.51.100.20");
    assert_eq!(view["last_used_user_agent"], "git/2.43.0");
    assert!(view["last_used_at"].is_string());
    let list = api.get("/api/v1/tokens", &alice).await;
    assert_eq!(list.body[0]["last_used_ip"], "198.51.100.20");
    // From another network: token.new_ip in the owner's audit trail.
    let moved = Req::get("/x").bearer(&pat).source_ip("203.0.113.5");
    allowed(&check(srv.grpc_addr, &moved).await);
    let trail = eventually(Duration::from_secs(5), "token.new_ip", async || {
        let a = api
            .get(
                &format!("/api/v1/audit?event=token.new_ip&token_id={id}"),
                &alice,
            )
            .await;
        let ev = a.body["events"].as_array().cloned().unwrap_or_default();
        if ev.len() == 1 { Ok(ev) } else { Err(a.body) }
    })
    .await;
    assert_eq!(trail[0]["data"]["network"], "203.0.113.0/24");
    assert_eq!(trail[0]["actor"]["client_addr"], "203.0.113.5");
    // The user agent survives a use that sent none.
    let v = api.get(&format!("/api/v1/tokens/{id}"), &alice).await;
    assert_eq!(v.body["last_used_user_agent"], "git/2.43.0");
    srv.shutdown(Duration::from_secs(5)).await;

    // The operator's CLI shows them too: table and JSON, both spellings.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .args(["--dev", "--user", "alice", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {out:?}");
        text
    };
    let table = cli(&["admin", "token", "list"]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    assert!(
        head.contains("LAST IP") && head.contains("LAST USER AGENT"),
        "{table}"
    );
    let row = lines.next().unwrap();
    assert!(
        row.contains("203.0.113.5") && row.contains("git/2.43.0"),
        "{table}"
    );
    assert_eq!(cli(&["token", "list"]), table, "the old spelling");
    for args in [
        &["admin", "token", "list", "--json"][..],
        &["token", "list", "--json"],
    ] {
        let list: serde_json::Value = serde_json::from_str(&cli(args)).unwrap();
        assert_eq!(list[0]["id"], id.as_str(), "{args:?}");
        assert_eq!(list[0]["last_used_ip"], "203.0.113.5", "{args:?}");
        assert_eq!(list[0]["last_used_user_agent"], "git/2.43.0", "{args:?}");
    }
}
