//! The `/ui` page in real headless Chromium (Debian's `chromium` +
//! `chromium-driver`; `scripts/test` installs them), driven over WebDriver:
//! dev login → create → the token is shown once → it works in a Check over
//! gRPC → revoke → the Check is denied. Screenshots: `target/ui-e2e.png`
//! (desktop) and `target/ui-e2e-phone.png` (phone width).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use portcullis_testkit::check::{Req, allowed, assert_invalid_token, check, serve_yaml};
use portcullis_testkit::eventually;
use serde_json::json;

const YAML: &str = "policy:\n  default: authenticated\n";
const WAIT: Duration = Duration::from_secs(15);

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_driver() -> Driver {
    let driver = find("chromedriver").expect(
        "chromedriver not found: install Debian's chromium and chromium-driver (scripts/test does)",
    );
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let d = Driver {
        child,
        port,
        _profile: tempfile::tempdir().expect("profile dir"),
    };
    // Ready when /status answers ready (bounded).
    let http = reqwest::Client::new();
    eventually(WAIT, "chromedriver ready", async || {
        let r = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v = r
            .json::<serde_json::Value>()
            .await
            .map_err(|e| e.to_string())?;
        if v["value"]["ready"] == true {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    d
}

async fn browser(d: &Driver) -> Client {
    let chromium = find("chromium").expect("chromium not found (apt-get install chromium)");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1100,1000",
                format!("--user-data-dir={}", d._profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("WebDriver session")
}

async fn visible(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

fn target_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

#[tokio::test]
async fn ui_create_see_once_check_revoke_in_chromium() {
    tokio::time::timeout(Duration::from_secs(120), flow())
        .await
        .expect("browser test timed out");
}

async fn flow() {
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(YAML, dir.path(), true).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;
    let base = format!("http://{}", srv.http_addr);

    c.goto(&format!("{base}/ui")).await.unwrap();
    assert!(c.title().await.unwrap().contains("personal access tokens"));
    // --dev: the dev login form is shown; sign in as alice.
    visible(&c, "#dev-form:not([hidden])").await;
    c.find(Locator::Css("#dev-login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(&c, "#create:not([hidden])").await;
    visible(&c, "#signin[hidden]").await;
    let who = c.find(Locator::Css("#whoami")).await.unwrap();
    assert!(who.text().await.unwrap().contains("alice"));

    // Create: name, one scope checkbox, expiry.
    let name = c.find(Locator::Css("#new-name")).await.unwrap();
    name.send_keys("browser-ci").await.unwrap();
    c.find(Locator::Css("#scope-boxes input[value='api:read']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("#create-token"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(&c, "#new-token-box:not([hidden])").await;
    let raw = c
        .find(Locator::Css("#new-token"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(raw.starts_with("pat_"), "{raw:?}");
    visible(&c, "#tokens tbody tr .badge.active").await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(target_file("ui-e2e.png"), png).unwrap();

    // The token works in a Check over gRPC.
    let (h, _) = allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(&raw)).await);
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-scopes"], "api:read");

    // Shown once: dismissed, it is gone from the page; a reload lists only
    // the display hint.
    c.find(Locator::Css("#dismiss-token"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    visible(&c, "#new-token-box[hidden]").await;
    assert!(!c.source().await.unwrap().contains(&raw));
    let row = c.find(Locator::Css("#tokens tbody tr")).await.unwrap();
    let row_text = row.text().await.unwrap();
    assert!(row_text.contains("browser-ci") && row_text.contains("api:read"));
    assert!(!row_text.contains(&raw));

    // Phone width: the table turns into stacked cards.
    c.set_window_size(390, 844).await.unwrap();
    c.execute("document.getElementById('list').scrollIntoView()", vec![])
        .await
        .unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(target_file("ui-e2e-phone.png"), png).unwrap();
    c.set_window_size(1100, 1000).await.unwrap();

    // Revoke (confirmed) → the Check is denied.
    c.find(Locator::Css("#tokens tbody tr button.revoke"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    visible(&c, "#tokens tbody tr .badge.revoked").await;
    assert_invalid_token(
        &check(srv.grpc_addr, &Req::get("/x").bearer(&raw)).await,
        "token revoked",
    );
    c.close().await.unwrap();
}
