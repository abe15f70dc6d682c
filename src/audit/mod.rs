//! The audit trail: who did what to which token, when, and from where.
//!
//! The trail is the token events the store writes with every change
//! (`store::events`; the same rows feed the webhooks). This module owns
//! what is audit-specific:
//!
//! - `audit:` config ([`AuditConfig`]): retention, and which proxies in
//!   front of portcullis are believed about `X-Forwarded-For`;
//! - [`client`]: the client address recorded with an API change;
//! - [`Cursor`]: the opaque page cursor of `GET /api/v1/audit`;
//! - [`Retention`]: deletes events past `audit.retention`.
//!
//! The API never changes or deletes an event (append-only); only the
//! retention purge removes them.

pub mod client;

use std::time::Duration;

use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config_error::{ConfigError, Problems};
use crate::store::Store;

pub use client::ClientAddrs;

/// `audit:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Events older than this are deleted (with their webhook deliveries).
    /// Must exceed `notify.delivery.max_age`. Default `90d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How many proxies in front of portcullis's HTTP port append the
    /// address they saw to `X-Forwarded-For` (Envoy with
    /// `use_remote_address: true` is one). 0 (default): the TCP peer is
    /// the client and `X-Forwarded-For` is ignored (anyone can send one).
    /// N: the header is walked from the right, one entry per hop, while
    /// the hop handing it over (first the TCP peer) is in
    /// `trusted_proxies`, at most N entries.
    pub trusted_proxy_hops: u8,
    /// The same for the gRPC port (usually reached directly, not through
    /// Envoy). Default 0.
    pub grpc_trusted_proxy_hops: u8,
    /// The proxies whose `X-Forwarded-For` is believed: CIDRs
    /// (`10.0.0.0/8`) or addresses (`127.0.0.1`). Required when a hop
    /// count is above 0; a peer outside the list is the client.
    pub trusted_proxies: Vec<String>,
    /// How often the retention purge runs. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: Duration::from_secs(90 * 86_400),
            trusted_proxy_hops: 0,
            grpc_trusted_proxy_hops: 0,
            trusted_proxies: Vec::new(),
            purge_interval: Duration::from_secs(3600),
        }
    }
}

impl AuditConfig {
    /// Checks the values; each problem names its key. The cross-check
    /// with `notify.delivery.max_age` is [`AuditConfig::validate_with`].
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        p.check(
            self.retention >= Duration::from_secs(3600)
                && self.retention <= Duration::from_secs(36_500 * 86_400),
            "audit.retention",
            || "must be between 1h and 36500d".into(),
        );
        for (key, hops) in [
            ("audit.trusted_proxy_hops", self.trusted_proxy_hops),
            (
                "audit.grpc_trusted_proxy_hops",
                self.grpc_trusted_proxy_hops,
            ),
        ] {
            p.check(hops <= 10, key, || "must be at most 10".into());
            p.check(
                hops == 0 || !self.trusted_proxies.is_empty(),
                "audit.trusted_proxies",
                || {
                    format!(
                        "must list the proxies' addresses when {key} is {hops}: X-Forwarded-For \
                         is believed only from them; accepted: CIDRs or addresses, e.g. \
                         [\"10.0.0.0/8\", \"127.0.0.1\"]"
                    )
                },
            );
        }
        for (i, s) in self.trusted_proxies.iter().enumerate() {
            p.check(
                client::parse_net(s).is_some(),
                &format!("audit.trusted_proxies[{i}]"),
                || format!("{s:?} is not a CIDR or an IP address; accepted: e.g. 10.0.0.0/8, 192.0.2.1, ::1/128"),
            );
        }
        p.check(
            self.purge_interval >= Duration::from_secs(1)
                && self.purge_interval <= Duration::from_secs(86_400),
            "audit.purge_interval",
            || "must be between 1s and 24h".into(),
        );
        p.into_vec()
    }

    /// Events must outlive their deliveries: an event purged while still
    /// pending would be lost to its webhooks.
    pub fn validate_with(&self, delivery_max_age: Duration) -> Vec<ConfigError> {
        let mut p = Problems::default();
        p.check(self.retention > delivery_max_age, "audit.retention", || {
            format!(
                "must exceed notify.delivery.max_age ({}), or events could be purged before \
                 their webhooks are delivered",
                humantime::format_duration(delivery_max_age)
            )
        });
        p.into_vec()
    }
}

/// An opaque page cursor: the position after the last item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub seq: i64,
    /// A tie-breaker within one `seq` (the webhook key of a delivery).
    pub key: String,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor: not a cursor this API returned")]
pub struct BadCursor;

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", self.seq, self.key))
    }

    pub fn decode(s: &str) -> Result<Cursor, BadCursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| BadCursor)?;
        let text = String::from_utf8(raw).map_err(|_| BadCursor)?;
        let (seq, key) = text.split_once(':').ok_or(BadCursor)?;
        Ok(Cursor {
            seq: seq.parse().map_err(|_| BadCursor)?,
            key: key.to_owned(),
        })
    }
}

/// Deletes events past `audit.retention`, every `purge_interval`.
#[derive(Debug)]
pub struct Retention {
    store: Store,
    retention: TimeDelta,
    interval: Duration,
}

impl Retention {
    pub fn new(store: Store, cfg: &AuditConfig) -> Retention {
        Retention {
            store,
            retention: TimeDelta::from_std(cfg.retention).unwrap_or(TimeDelta::MAX),
            interval: cfg.purge_interval,
        }
    }

    /// One purge; returns how many events were deleted.
    pub async fn once(&self) -> Result<u64, crate::store::StoreError> {
        let cutoff = Utc::now()
            .checked_sub_signed(self.retention)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        self.store.purge_events(cutoff).await
    }

    /// Purges every interval until `shutdown`.
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
                Ok(n) => tracing::info!(events = n, "audit events past audit.retention deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "audit retention purge failed; retrying later")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_settings_are_checked() {
        let bad = AuditConfig {
            trusted_proxy_hops: 1,
            ..AuditConfig::default()
        };
        let errs = bad.validate();
        assert!(
            errs.iter()
                .any(|e| e.to_string().contains("audit.trusted_proxies")),
            "{errs:?}"
        );
        let bad = AuditConfig {
            grpc_trusted_proxy_hops: 11,
            trusted_proxies: vec!["10.0.0.0/8".into(), "ten".into()],
            ..AuditConfig::default()
        };
        let errs: Vec<String> = bad.validate().iter().map(|e| e.to_string()).collect();
        assert!(
            errs.iter()
                .any(|e| e.contains("audit.grpc_trusted_proxy_hops")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("audit.trusted_proxies[1]")),
            "{errs:?}"
        );
        let good = AuditConfig {
            trusted_proxy_hops: 1,
            trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into()],
            ..AuditConfig::default()
        };
        assert!(good.validate().is_empty());
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor {
            seq: 42,
            key: "ops:x".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert_eq!(Cursor::decode("!!"), Err(BadCursor));
        assert_eq!(Cursor::decode("YWJj"), Err(BadCursor));
    }
}
