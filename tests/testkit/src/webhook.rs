//! A webhook receiver for the notify tests: records every POST (delivery
//! id, event, whether the signature verified, when it arrived), answers a
//! chosen status, or holds requests unanswered (to kill portcullis while
//! a delivery is in flight). The signature is checked here with its own
//! HMAC code (aws-lc-rs), not portcullis's, over `"{timestamp}.{body}"`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::wait::eventually;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub delivery: String,
    pub event_header: String,
    pub timestamp: i64,
    pub signature_ok: bool,
    pub body: serde_json::Value,
    pub at: Instant,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl Hit {
    pub fn event_id(&self) -> &str {
        self.body["id"].as_str().unwrap_or_default()
    }

    pub fn event(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

struct Inner {
    secret: Vec<u8>,
    hits: Mutex<Vec<Hit>>,
    status: AtomicU16,
    hold: AtomicBool,
    /// Milliseconds each answer waits (a slow receiver).
    delay_ms: std::sync::atomic::AtomicU64,
    /// Notified when a held request has arrived.
    held: Notify,
}

/// A receiver on 127.0.0.1; stopped on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

/// `header` is `sha256=` + HMAC-SHA256 of `"{ts}.{delivery}.{body}"`.
fn verify(secret: &[u8], ts: &str, delivery: &str, body: &[u8], header: &str) -> bool {
    let Some(sig) = header.strip_prefix("sha256=").and_then(decode_hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = format!("{ts}.{delivery}.").into_bytes();
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &sig).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn hook(State(inner): State<Arc<Inner>>, h: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let ts = header("x-portcullis-timestamp");
    let delivery = header("x-portcullis-delivery");
    let hit = Hit {
        signature_ok: verify(
            &inner.secret,
            &ts,
            &delivery,
            &body,
            &header("x-portcullis-signature"),
        ),
        delivery,
        event_header: header("x-portcullis-event"),
        timestamp: ts.parse().unwrap_or(0),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        at: Instant::now(),
        received_at: chrono::Utc::now(),
    };
    let delay = inner.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    inner.hits.lock().unwrap().push(hit);
    if inner.hold.load(Ordering::SeqCst) {
        inner.held.notify_one();
        // Never answer: the sender times out or dies first.
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(inner.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}

impl Receiver {
    /// Binds 127.0.0.1:0; answers 204 until told otherwise.
    pub async fn start(secret: &str) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap(), secret).await
    }

    /// Binds `addr` (e.g. the port of a receiver that was down).
    pub async fn start_on(addr: SocketAddr, secret: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind webhook receiver");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            secret: secret.as_bytes().to_vec(),
            hits: Mutex::default(),
            status: AtomicU16::new(204),
            hold: AtomicBool::new(false),
            delay_ms: Default::default(),
            held: Notify::new(),
        });
        let app = Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, task }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The status later requests get.
    pub fn answer(&self, status: u16) {
        self.inner.status.store(status, Ordering::SeqCst);
    }

    /// Later requests are answered only after `d` (a slow receiver).
    pub fn delay(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.inner.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Later requests are held unanswered.
    pub fn hold(&self, on: bool) {
        self.inner.hold.store(on, Ordering::SeqCst);
    }

    /// Until a held request arrives.
    pub async fn wait_held(&self, within: Duration) {
        tokio::time::timeout(within, self.inner.held.notified())
            .await
            .expect("a webhook request arrived and is held");
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    /// Until at least `n` requests arrived; returns them.
    pub async fn wait_hits(&self, n: usize, within: Duration) -> Vec<Hit> {
        eventually(within, &format!("{n} webhook requests"), async || {
            let h = self.hits();
            if h.len() >= n { Ok(h) } else { Err(h.len()) }
        })
        .await
    }

    /// Until at least `n` distinct events arrived; returns every request.
    pub async fn wait_events(&self, n: usize, within: Duration) -> Vec<Hit> {
        eventually(
            within,
            &format!("{n} distinct webhook events"),
            async || {
                let h = self.hits();
                let mut ids: Vec<&str> = h.iter().map(Hit::event_id).collect();
                ids.sort_unstable();
                ids.dedup();
                if ids.len() >= n {
                    Ok(h.clone())
                } else {
                    Err(ids.len())
                }
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
