//! Expiry notices: every `notify.expiry_scan_interval`, the store marks
//! tokens entering a `notify.expiring` window (7 days and 1 day before
//! expiry by default) and tokens that expired, and writes `token.expiring`
//! / `token.expired` events for them in the same transaction. Each notice
//! is written once per token (a column on the token row remembers the last
//! one), whichever replica gets there first; when several windows are due
//! at once (portcullis was down), only the most urgent is sent.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::config::NotifyConfig;
use super::deliver::Clock;
use crate::store::{Store, StoreError};

/// The periodic expiry scan of one replica.
pub struct ExpiryNotices {
    store: Store,
    thresholds: Vec<i64>,
    interval: Duration,
    clock: Clock,
}

impl ExpiryNotices {
    pub fn new(store: Store, cfg: &NotifyConfig) -> ExpiryNotices {
        ExpiryNotices {
            store,
            thresholds: cfg
                .expiring
                .iter()
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .collect(),
            interval: cfg.expiry_scan_interval,
            clock: Arc::new(Utc::now),
        }
    }

    /// Replaces the clock (tests: a token's future, now).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// One scan at the clock's now; returns how many notices were written.
    pub async fn once(&self) -> Result<usize, StoreError> {
        self.store
            .expiry_notices((self.clock)(), &self.thresholds)
            .await
    }

    /// Scans every interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(notices = n, "token expiry notices written"),
                Err(e) => {
                    tracing::warn!(error = %e, "token expiry scan failed; retrying at the next interval")
                }
            }
        }
    }
}
