//! Keys of one issuer: discovery, JWKS fetch, background refresh, and the
//! rate-limited refetch on an unknown `kid`.
//!
//! The current key set lives in an `ArcSwap`, so the hot path is a lock-free
//! load. Fetching never removes the last good keys on failure: if the IdP is
//! down, tokens keep validating with what we had.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::config::IssuerConfig;
use super::keys::{KeySet, VerifyKey, parse_jwks};

/// Upper bound on a discovery or JWKS body; Keycloak's are a few KiB.
const MAX_BODY: usize = 1024 * 1024;

/// Is a key a cached verification rests on still in the current key set?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The same key (same material and `alg`) is published under its `kid`.
    Still,
    /// Its `kid` is published with other material: verify the token afresh.
    Replaced,
    /// Its `kid` is gone from the JWKS: tokens it signed are refused.
    Withdrawn,
}

/// Why no key could be found for a `kid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookupError {
    /// The issuer's keys are known and this `kid` is not among them.
    UnknownKid,
    /// No keys were ever loaded, or a refetch did not finish in time.
    Unavailable,
}

/// Why fetching an issuer's keys failed. The last good keys stay in use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The request failed (connect, timeout, TLS, reading the body).
    #[error("GET {url}: {reason}")]
    Request { url: String, reason: String },
    /// The server answered with a non-success status.
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// The body exceeds [`MAX_BODY`].
    #[error("GET {url}: body larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
    /// The discovery document is not JSON with `issuer` and `jwks_uri`.
    #[error("discovery document at {url} is invalid: {reason}")]
    Discovery { url: String, reason: String },
    /// OIDC Discovery §4.3: the document must name exactly this issuer.
    #[error("discovery at {url} names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    /// The body is not a JWKS document.
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// A JWKS without one usable signature key.
    #[error("JWKS at {url} has no usable signature keys")]
    NoUsableKeys { url: String },
}

type Refetch = Shared<BoxFuture<'static, Result<usize, JwksError>>>;

/// Key manager for one issuer.
pub struct IssuerKeys {
    issuer: String,
    /// The issuer as a metrics label.
    label: crate::metrics::Label,
    /// Configured or discovered JWKS URL; `None` until discovery succeeds.
    jwks_uri: Mutex<Option<String>>,
    /// Fixed keys (the dev issuer): never fetched.
    fixed: bool,
    keys: ArcSwap<KeySet>,
    loaded: AtomicBool,
    http: reqwest::Client,
    refetch_min_interval: Duration,
    unknown_kid_wait: Duration,
    refresh_interval: Duration,
    /// Start of the last on-demand refetch, for the rate limit.
    last_refetch: Mutex<Option<Instant>>,
    /// The refetch in flight, shared by every concurrent miss.
    inflight: Mutex<Option<Refetch>>,
    /// Successful and failed fetches, for metrics and tests.
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

// === impl IssuerKeys ===

impl IssuerKeys {
    /// Keys fetched from the issuer (JWKS URL configured or discovered).
    pub fn remote(cfg: &IssuerConfig, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Self::build(cfg, http, KeySet::default(), false))
    }

    /// Keys given up front and never refreshed (the built-in dev issuer).
    pub fn fixed(cfg: &IssuerConfig, keys: KeySet) -> Arc<Self> {
        let this = Self::build(cfg, reqwest::Client::new(), keys, true);
        this.loaded.store(true, Ordering::Release);
        Arc::new(this)
    }

    fn build(cfg: &IssuerConfig, http: reqwest::Client, keys: KeySet, fixed: bool) -> Self {
        IssuerKeys {
            issuer: cfg.issuer.clone(),
            label: crate::metrics::Label::new(&cfg.issuer),
            jwks_uri: Mutex::new(cfg.jwks_uri.clone()),
            fixed,
            keys: ArcSwap::from_pointee(keys),
            loaded: AtomicBool::new(false),
            http,
            refetch_min_interval: cfg.refetch_min_interval,
            unknown_kid_wait: cfg.unknown_kid_wait,
            refresh_interval: cfg.refresh_interval,
            last_refetch: Mutex::new(None),
            inflight: Mutex::new(None),
            fetches_ok: AtomicU64::new(0),
            fetches_failed: AtomicU64::new(0),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Have keys ever been loaded? Drives `/readyz`.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub fn fetch_counts(&self) -> (u64, u64) {
        (
            self.fetches_ok.load(Ordering::Relaxed),
            self.fetches_failed.load(Ordering::Relaxed),
        )
    }

    /// Whether `key` is still published, judged against the current key set:
    /// one lock-free load and one lookup by `kid`, no allocation. The cache
    /// of verified tokens asks this on every hit, so a key withdrawn from
    /// the JWKS stops vouching for its tokens at the next refresh.
    pub fn publishes(&self, key: &Arc<VerifyKey>) -> Published {
        match self.keys.load().get(&key.kid) {
            None => Published::Withdrawn,
            Some(k) if Arc::ptr_eq(k, key) || k.fingerprint == key.fingerprint => Published::Still,
            Some(_) => Published::Replaced,
        }
    }

    /// The key for `kid`, refetching once (rate-limited, coalesced) if unknown.
    pub async fn key_for(self: &Arc<Self>, kid: &str) -> Result<Arc<VerifyKey>, KeyLookupError> {
        if let Some(k) = self.keys.load().get(kid) {
            return Ok(k.clone());
        }
        if self.fixed {
            return Err(KeyLookupError::UnknownKid);
        }
        let Some(fetch) = self.join_or_start_refetch() else {
            // Rate-limited: answer from what we have.
            return Err(self.miss());
        };
        match tokio::time::timeout(self.unknown_kid_wait, fetch).await {
            Ok(Ok(_)) => self
                .keys
                .load()
                .get(kid)
                .cloned()
                .ok_or_else(|| self.miss()),
            // The IdP could not be asked: the kid may be a fresh, legitimate
            // key we cannot see. Not a 401, and certainly not an allow.
            Ok(Err(_)) => Err(KeyLookupError::Unavailable),
            // The fetch goes on in the background; this request cannot wait.
            Err(_) => Err(KeyLookupError::Unavailable),
        }
    }

    fn miss(&self) -> KeyLookupError {
        if self.is_ready() {
            KeyLookupError::UnknownKid
        } else {
            KeyLookupError::Unavailable
        }
    }

    /// Joins the refetch in flight, or starts one unless the last started
    /// less than `refetch_min_interval` ago.
    fn join_or_start_refetch(self: &Arc<Self>) -> Option<Refetch> {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.as_ref() {
            return Some(f.clone());
        }
        {
            let mut last = lock(&self.last_refetch);
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < self.refetch_min_interval) {
                return None;
            }
            *last = Some(now);
        }
        let this = Arc::clone(self);
        let fut: BoxFuture<'static, Result<usize, JwksError>> = async move {
            let r = this.refresh().await;
            lock(&this.inflight).take();
            r
        }
        .boxed();
        let shared = fut.shared();
        *inflight = Some(shared.clone());
        // Drive it to completion even if every waiter gives up.
        tokio::spawn(shared.clone());
        Some(shared)
    }

    /// Fetches discovery (if needed) and the JWKS; swaps in the new keys on
    /// success. On any failure the previous keys stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        if self.fixed {
            return Ok(self.keys.load().len());
        }
        let result = self.fetch().await;
        crate::metrics::global()
            .jwks_fetches
            .get_or_create(&crate::metrics::IssuerLabels {
                issuer: self.label.clone(),
                outcome: if result.is_ok() { "ok" } else { "error" },
            })
            .inc();
        match &result {
            Ok(n) => {
                self.fetches_ok.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(issuer = %self.issuer, keys = n, "JWKS refreshed");
            }
            Err(e) => {
                self.fetches_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, error = %e, "JWKS fetch failed; keeping last good keys");
            }
        }
        result
    }

    async fn fetch(&self) -> Result<usize, JwksError> {
        let cached = lock(&self.jwks_uri).clone();
        let uri = match cached {
            Some(u) => u,
            None => {
                let u = self.discover().await?;
                *lock(&self.jwks_uri) = Some(u.clone());
                u
            }
        };
        let body = self.get(&uri).await?;
        let parsed = parse_jwks(&body)?;
        for (kid, why) in &parsed.skipped {
            tracing::debug!(issuer = %self.issuer, kid = %kid, reason = %why, "JWKS key skipped");
        }
        if parsed.keys.is_empty() {
            return Err(JwksError::NoUsableKeys { url: uri });
        }
        let n = parsed.keys.len();
        self.keys.store(Arc::new(parsed.keys));
        self.loaded.store(true, Ordering::Release);
        Ok(n)
    }

    async fn discover(&self) -> Result<String, JwksError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|e| JwksError::Discovery {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        // OIDC Discovery §4.3: the document must name exactly this issuer.
        if doc.issuer != self.issuer {
            return Err(JwksError::IssuerMismatch {
                url,
                found: doc.issuer,
                expected: self.issuer.clone(),
            });
        }
        Ok(doc.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let failed = |e: reqwest::Error| JwksError::Request {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let too_large = || JwksError::TooLarge {
            url: url.to_owned(),
        };
        let resp = self.http.get(url).send().await.map_err(failed)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
            });
        }
        if resp.content_length().is_some_and(|l| l as usize > MAX_BODY) {
            return Err(too_large());
        }
        let body = resp.bytes().await.map_err(failed)?;
        if body.len() > MAX_BODY {
            return Err(too_large());
        }
        Ok(body.to_vec())
    }

    /// Background loop: retry quickly until the first load, then refresh
    /// every `refresh_interval`. Ends when `shutdown` fires.
    pub async fn run_refresher(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if self.fixed {
            return;
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            let ok = self.refresh().await.is_ok();
            let wait = if ok || self.is_ready() {
                backoff = Duration::from_millis(250);
                self.refresh_interval
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Locks a std mutex, recovering from poisoning (the data is plain state).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
