//! A tiny upstream for end-to-end tests: answers every request with 200 and
//! a JSON description of what it received, and remembers every request so a
//! test can assert what did (or did not) reach the app behind Envoy.
//!
//! Response body: `{"method": "GET", "path": "/a?b", "headers": {"name": "value", …}}`
//! (header names lower-case; repeated headers joined with `,`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use tokio::task::JoinHandle;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Whether Envoy forwarded this request after portcullis allowed it.
    pub fn authenticated(&self) -> bool {
        self.headers.contains_key("x-auth-method")
    }

    fn from_json(v: &serde_json::Value) -> Seen {
        Seen {
            method: v["method"].as_str().unwrap_or_default().to_owned(),
            path: v["path"].as_str().unwrap_or_default().to_owned(),
            headers: v["headers"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Parses an echo response body (panics if it is not one).
    pub fn from_body(body: &[u8]) -> Seen {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "not an echo response ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        assert!(v.get("headers").is_some(), "not an echo response: {v}");
        Seen::from_json(&v)
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A running echo server on 127.0.0.1; stopped on drop.
pub struct Echo {
    pub addr: SocketAddr,
    log: Log,
    task: JoinHandle<()>,
}

impl Echo {
    /// Binds 127.0.0.1:0 and serves.
    pub async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo upstream");
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let app = Router::new().fallback(echo).with_state(log.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Echo { addr, log, task }
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> axum::Json<serde_json::Value> {
    let mut hs: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        hs.entry(k.as_str().to_owned())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v)
            })
            .or_insert(v);
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.to_string());
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        headers: hs.clone(),
    });
    axum::Json(serde_json::json!({
        "method": method.as_str(),
        "path": path,
        "headers": hs,
    }))
}
