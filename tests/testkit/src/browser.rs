//! Real headless Chromium (Debian's `chromium` + `chromium-driver`;
//! `scripts/test` installs them), driven over WebDriver with fantoccini.
//! One [`Driver`] (chromedriver, killed on drop, with its own profile) per
//! test; [`browser`] opens a session in it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::wait::eventually;

/// How long a page element may take to appear.
pub const WAIT: Duration = Duration::from_secs(15);

/// chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
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

/// Starts chromedriver on a free loopback port; returns once it is ready.
pub async fn start_driver() -> Driver {
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
        profile: tempfile::tempdir().expect("profile dir"),
    };
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

/// A headless Chromium session (1100×1000) in the driver's profile.
pub async fn browser(d: &Driver) -> Client {
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
                format!("--user-data-dir={}", d.profile.path().display()),
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

/// Waits for an element matching `css`; panics after [`WAIT`].
pub async fn visible(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

/// Clicks the element matching `css` (waiting for it).
pub async fn click(c: &Client, css: &str) {
    visible(c, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Types `text` into the element matching `css` (waiting for it).
pub async fn type_into(c: &Client, css: &str, text: &str) {
    visible(c, css)
        .await
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

/// The text of the element matching `css` (waiting for it).
pub async fn text_of(c: &Client, css: &str) -> String {
    visible(c, css).await.text().await.expect("element text")
}

/// `target/NAME` in the product crate (screenshots).
pub fn target_file(name: &str) -> PathBuf {
    let dir = crate::envoy::repo_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Saves a screenshot as `target/NAME`.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(target_file(name), png).expect("write screenshot");
}

/// Waits until the element matching `css` contains `needle`; returns its text.
pub async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let what = format!("{css} containing {needle:?}");
    eventually(WAIT, &what, async || {
        let t = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        if t.contains(needle) { Ok(t) } else { Err(t) }
    })
    .await
}
