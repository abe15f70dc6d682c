//! `kill -9` of a real portcullis process in the middle of a webhook
//! delivery loses nothing: the receiver holds the request unanswered, the
//! process is killed, an event is written while it is down (by the CLI),
//! and after a restart both events arrive; the one that was in flight
//! arrives again under the same delivery id (at least once).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis::store::{DeliveryQuery, DeliveryState, Store, StoreConfig};
use portcullis_testkit::envoy::free_port;
use portcullis_testkit::eventually;
use portcullis_testkit::wait::reap;
use portcullis_testkit::webhook::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const SECRET: &str = "kill-webhook-secret-0123456789";

struct Server {
    child: Child,
    http: u16,
}

fn serve(dir: &Path, cfg: &Path, grpc: u16, http: u16) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--dev", "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(cfg)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env("KILL_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn portcullis");
    Server { child, http }
}

async fn ready(s: &Server) {
    let url = format!("http://127.0.0.1:{}/readyz", s.http);
    eventually(
        Duration::from_secs(20),
        "portcullis ready",
        async || match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await
}

/// `portcullis token create` against the data dir's store (the server
/// need not run: the event is written with the token).
fn create_token(dir: &Path, cfg: &Path, name: &str) {
    let out = Command::new(BIN)
        .args(["token", "create", "--dev", "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(cfg)
        .args(["--user", "alice", "--username", "alice", "--name", name])
        .args(["--scopes", "api:read"])
        .env("KILL_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("run token create");
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn kill_9_mid_delivery_loses_nothing() {
    let rx = Receiver::start(SECRET).await;
    rx.hold(true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("portcullis.yaml");
    std::fs::write(
        &cfg,
        format!(
            "policy:\n  default: authenticated\n\
             notify:\n  webhooks:\n    - url: {}\n      secret: KILL_WEBHOOK_SECRET\n      name: held\n\
             \x20 delivery:\n    poll_interval: 100ms\n    timeout: 2s\n    lease: 4s\n    initial_backoff: 200ms\n",
            rx.url()
        ),
    )
    .unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut srv = serve(dir.path(), &cfg, grpc, http);
    ready(&srv).await;
    create_token(dir.path(), &cfg, "before-the-kill");
    rx.wait_held(Duration::from_secs(15)).await;
    let in_flight = rx.hits();
    assert_eq!(in_flight.len(), 1);
    // SIGKILL while the request is unanswered: no shutdown code runs.
    srv.child.kill().expect("kill -9");
    let status = reap(&mut srv.child, Duration::from_secs(10)).expect("killed");
    assert!(!status.success());
    rx.hold(false);
    // Written while portcullis is down.
    create_token(dir.path(), &cfg, "while-down");
    let mut srv = serve(dir.path(), &cfg, grpc, http);
    ready(&srv).await;
    let first = &in_flight[0];
    // The killed attempt's lease (3 s) runs out, then it is sent again.
    let hits = eventually(
        Duration::from_secs(30),
        "the killed attempt sent again",
        async || {
            let h = rx.hits();
            let again = h.iter().filter(|x| x.delivery == first.delivery).count();
            let events: std::collections::HashSet<&str> = h.iter().map(|x| x.event_id()).collect();
            if again >= 2 && events.len() == 2 {
                Ok(h.clone())
            } else {
                Err((again, events.len()))
            }
        },
    )
    .await;
    assert!(hits.iter().all(|h| h.signature_ok));
    let names: Vec<&str> = hits
        .iter()
        .map(|h| h.body["data"]["token"]["name"].as_str().unwrap_or_default())
        .collect();
    assert!(
        names.contains(&"before-the-kill") && names.contains(&"while-down"),
        "{names:?}"
    );
    let cli = hits
        .iter()
        .find(|h| h.body["data"]["token"]["name"] == "while-down")
        .unwrap();
    assert_eq!(cli.body["actor"]["kind"], "cli");
    assert_eq!(cli.body["data"]["reason"], "cli");
    let store = Store::connect(&StoreConfig::default(), dir.path())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "both delivered in the store",
        async || {
            let d = store
                .deliveries(&DeliveryQuery {
                    state: Some(DeliveryState::Delivered),
                    limit: 10,
                    ..DeliveryQuery::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            if d.len() == 2 {
                Ok(d)
            } else {
                Err(format!("{d:?}"))
            }
        },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status();
    let _ = reap(&mut srv.child, Duration::from_secs(20));
}
