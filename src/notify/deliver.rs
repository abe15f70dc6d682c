//! The webhook dispatcher of one replica: fans new events out to
//! deliveries, leases due deliveries from the store, POSTs them, and
//! records each outcome. At-least-once: a delivery is finished only after
//! the receiver's 2xx; a replica that dies mid-attempt leaves a lease that
//! runs out (`notify.delivery.lease`), and the delivery is attempted again
//! by whichever replica claims it next. Receivers deduplicate on
//! `x-portcullis-delivery`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::config::{DeliveryConfig, NotifyConfig};
use super::sign;
use crate::store::{AttemptOutcome, ClaimedDelivery, HookFilter, Store, StoreError};

/// Source of "now"; injectable for tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Events fanned out per store transaction.
const FAN_OUT_BATCH: u32 = 200;

/// One configured receiver, secret resolved.
struct Hook {
    filter: HookFilter,
    url: url::Url,
    secret: Vec<u8>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub fanned_out: usize,
    pub attempted: usize,
    pub delivered: usize,
}

/// Delivers webhooks for one replica. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    hooks: Arc<[Hook]>,
    keys: Arc<[String]>,
    filters: Arc<[HookFilter]>,
    cfg: DeliveryConfig,
    http: reqwest::Client,
    /// This replica's lease owner name.
    owner: Arc<str>,
    clock: Clock,
    /// When this dispatcher was built: a webhook no replica has fanned out
    /// for yet starts with the events written since then (its first
    /// sighting), not the whole retained history.
    since: DateTime<Utc>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("owner", &self.owner)
            .field("webhooks", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Why the dispatcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("notify.webhooks: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{key}: not a valid URL")]
    Url { key: String },
}

impl Dispatcher {
    /// `secrets` are the webhooks' keys, in `cfg.webhooks` order (see
    /// [`super::resolve_secrets`]).
    pub fn new(
        store: Store,
        cfg: &NotifyConfig,
        secrets: Vec<Vec<u8>>,
    ) -> Result<Dispatcher, DispatcherError> {
        let mut hooks = Vec::with_capacity(cfg.webhooks.len());
        for (i, (w, secret)) in cfg.webhooks.iter().zip(secrets).enumerate() {
            let url = url::Url::parse(&w.url).map_err(|_| DispatcherError::Url {
                key: format!("notify.webhooks[{i}].url"),
            })?;
            hooks.push(Hook {
                filter: w.filter(),
                url,
                secret,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.delivery.timeout)
            .connect_timeout(cfg.delivery.timeout)
            // A receiver answers itself; a redirect could point anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis-webhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "portcullis".into());
        let owner = format!(
            "{host}:{}:{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        Ok(Dispatcher {
            store,
            keys: hooks.iter().map(|h| h.filter.key.clone()).collect(),
            filters: hooks.iter().map(|h| h.filter.clone()).collect(),
            hooks: hooks.into(),
            cfg: cfg.delivery.clone(),
            http,
            owner: owner.into(),
            clock: Arc::new(Utc::now),
            since: Utc::now(),
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// This replica's lease owner name (in logs and the store).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs passes until `shutdown`: at once when this replica wrote
    /// events, else every `poll_interval`. A full batch runs the next pass
    /// at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let written = self.store.events_written();
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        let mut busy = false;
        loop {
            if !busy {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = written.notified() => {}
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                }
            }
            match self.once().await {
                Ok(p) => {
                    busy = p.fanned_out >= FAN_OUT_BATCH as usize
                        || p.attempted >= self.cfg.concurrency as usize;
                }
                Err(e) => {
                    busy = false;
                    tracing::warn!(error = %e, "webhook dispatch pass failed; retrying at the next poll");
                }
            }
            if last_gauges.elapsed() >= Duration::from_secs(10) {
                last_gauges = Instant::now();
                if let Ok(c) = self.store.delivery_counts().await {
                    crate::metrics::global().webhook_backlog(c.pending, c.dead);
                }
            }
        }
    }

    /// One pass: fan out, dead-letter what is too old, claim and attempt
    /// up to `concurrency` due deliveries.
    pub async fn once(&self) -> Result<Pass, StoreError> {
        let now = (self.clock)();
        let fanned_out = self
            .store
            .fan_out(&self.filters, now, self.since, FAN_OUT_BATCH)
            .await?;
        let max_age = delta(self.cfg.max_age);
        let dead = self.store.expire_deliveries(now - max_age, now).await?;
        if dead > 0 {
            crate::metrics::global().webhook_outcome("dead", dead);
            tracing::warn!(
                deliveries = dead,
                "webhook deliveries dead-lettered (notify.delivery.max_age)"
            );
        }
        // The lease starts now, not when the pass began: fanning out and
        // dead-lettering may have taken a while, and a lease counted from
        // then would run out early.
        let now = (self.clock)();
        let claimed = self
            .store
            .claim_deliveries(
                &self.owner,
                &self.keys,
                now,
                now + delta(self.cfg.lease),
                self.cfg.concurrency,
            )
            .await?;
        let attempted = claimed.len();
        let results = futures::future::join_all(claimed.into_iter().map(|d| self.attempt(d))).await;
        let delivered = results.iter().filter(|ok| **ok).count();
        Ok(Pass {
            fanned_out,
            attempted,
            delivered,
        })
    }

    /// One attempt and its outcome in the store; true when delivered.
    async fn attempt(&self, d: ClaimedDelivery) -> bool {
        let Some(hook) = self.hooks.iter().find(|h| h.filter.key == d.webhook) else {
            return false; // claimed only for our keys
        };
        let outcome = self.post(hook, &d).await;
        let now = (self.clock)();
        let m = crate::metrics::global();
        let delivered = matches!(outcome, AttemptOutcome::Delivered { .. });
        match &outcome {
            AttemptOutcome::Delivered { .. } => {
                let lag = (now - d.event.at).to_std().unwrap_or_default();
                m.webhook_delivered(lag);
            }
            AttemptOutcome::Retry { status, error, .. } => {
                m.webhook_outcome("retry", 1);
                tracing::info!(delivery = %d.id, webhook = %d.webhook, attempt = d.attempts, ?status, %error, "webhook attempt failed; will retry");
            }
            AttemptOutcome::Dead { status, error } => {
                m.webhook_outcome("dead", 1);
                tracing::warn!(delivery = %d.id, webhook = %d.webhook, attempt = d.attempts, ?status, %error, "webhook delivery dead-lettered (notify.delivery.max_age)");
            }
        }
        match self
            .store
            .finish_delivery(d.id, &self.owner, &outcome, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %d.id, "webhook lease lost before the outcome was recorded; another replica may deliver it again");
            }
            Err(e) => {
                // The lease runs out and the delivery is attempted again.
                tracing::warn!(delivery = %d.id, error = %e, "recording a webhook outcome failed");
            }
        }
        delivered
    }

    async fn post(&self, hook: &Hook, d: &ClaimedDelivery) -> AttemptOutcome {
        let body = match serde_json::to_vec(&sign::body(&d.event)) {
            Ok(b) => b,
            Err(e) => {
                return AttemptOutcome::Dead {
                    status: None,
                    error: format!("event body: {e}"),
                };
            }
        };
        let ts = (self.clock)().timestamp();
        let delivery = d.id.to_string();
        let sig = sign::signature(&hook.secret, ts, &delivery, &body);
        let res = self
            .http
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, sig)
            .header(sign::TIMESTAMP_HEADER, ts.to_string())
            .header(sign::DELIVERY_HEADER, delivery)
            .header(sign::EVENT_HEADER, d.event.event.as_str())
            .body(body)
            .send()
            .await;
        let (status, error) = match res {
            Ok(r) if r.status().is_success() => {
                return AttemptOutcome::Delivered {
                    status: r.status().as_u16(),
                };
            }
            Ok(r) => (
                Some(r.status().as_u16()),
                format!("receiver answered {}", r.status()),
            ),
            // Without the URL: it may carry a secret.
            Err(e) => (None, describe(&e)),
        };
        let now = (self.clock)();
        if now - d.event.at >= delta(self.cfg.max_age) {
            return AttemptOutcome::Dead { status, error };
        }
        AttemptOutcome::Retry {
            status,
            error,
            next_attempt_at: now + delta(backoff(&self.cfg, d.attempts)),
        }
    }
}

/// A request error without its URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    match last {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Exponential backoff with jitter: `initial × 2^(attempt-1)`, capped at
/// `max_backoff`, then a uniform draw from its upper half (so replicas
/// retrying a receiver that came back do not all arrive at once).
pub fn backoff(cfg: &DeliveryConfig, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = cfg
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(cfg.max_backoff);
    let half = base / 2;
    let ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter = rand::rng().random_range(0..=ms);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let cfg = DeliveryConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            ..DeliveryConfig::default()
        };
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            for _ in 0..50 {
                let b = backoff(&cfg, attempt);
                let base = Duration::from_secs(base);
                assert!(b >= base / 2 && b <= base, "attempt {attempt}: {b:?}");
            }
        }
    }
}
