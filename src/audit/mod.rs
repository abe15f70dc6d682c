//! The audit trail: who did what to which token, when, and from where.
//!
//! The trail is the token events the store writes with every change
//! (`store::events`; the same rows feed the webhooks). This module owns
//! what is audit-specific:
//!
//! - `audit:` config ([`AuditConfig`]): retention and how many proxies in
//!   front of portcullis append to `X-Forwarded-For`;
//! - [`client_addr`]: the client address recorded with an API change;
//! - [`Cursor`]: the opaque page cursor of `GET /api/v1/audit`;
//! - [`Retention`]: deletes events past `audit.retention`.
//!
//! The API never changes or deletes an event (append-only); only the
//! retention purge removes them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config_error::{ConfigError, Problems};
use crate::store::Store;

/// `audit:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Events older than this are deleted (with their webhook deliveries).
    /// Must exceed `notify.delivery.max_age`. Default `90d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How many proxies in front of portcullis's HTTP and gRPC ports
    /// append the address they saw to `X-Forwarded-For` (Envoy with
    /// `use_remote_address: true` is one). 0 (default): the TCP peer is
    /// the client and `X-Forwarded-For` is ignored (anyone can send one).
    /// N: the N-th address from the right of `X-Forwarded-For` is the
    /// client (the one the outermost trusted proxy saw).
    pub trusted_proxy_hops: u8,
    /// How often the retention purge runs. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: Duration::from_secs(90 * 86_400),
            trusted_proxy_hops: 0,
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
        p.check(
            self.trusted_proxy_hops <= 10,
            "audit.trusted_proxy_hops",
            || "must be at most 10".into(),
        );
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

/// The client address of an API call: with `hops` trusted proxies, the
/// `hops`-th address from the right of `X-Forwarded-For` (every value of
/// the header, in order, joined); with 0, or when the header holds fewer
/// addresses than that (the call did not pass every proxy), the TCP
/// `peer`. An entry that is not an IP address is recorded as `None` rather
/// than trusted.
pub fn client_addr(forwarded_for: &[&str], peer: Option<SocketAddr>, hops: u8) -> Option<String> {
    let peer_ip = peer.map(|p| p.ip().to_canonical().to_string());
    if hops == 0 {
        return peer_ip;
    }
    let entries: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let n = usize::from(hops);
    if entries.len() < n {
        return peer_ip;
    }
    parse_ip(entries[entries.len() - n]).map(|ip| ip.to_string())
}

/// An `X-Forwarded-For` entry as an address: a bare IP, `[v6]`, or either
/// with a port.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
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

    fn peer() -> Option<SocketAddr> {
        Some("10.0.0.9:5555".parse().unwrap())
    }

    #[test]
    fn client_address_respects_trusted_hops() {
        let xff = ["203.0.113.7, 198.51.100.2", "10.1.1.1"];
        assert_eq!(client_addr(&xff, peer(), 0).as_deref(), Some("10.0.0.9"));
        assert_eq!(client_addr(&xff, peer(), 1).as_deref(), Some("10.1.1.1"));
        assert_eq!(
            client_addr(&xff, peer(), 2).as_deref(),
            Some("198.51.100.2")
        );
        assert_eq!(client_addr(&xff, peer(), 3).as_deref(), Some("203.0.113.7"));
        // Fewer entries than hops: the call skipped a proxy; the peer.
        assert_eq!(client_addr(&xff, peer(), 4).as_deref(), Some("10.0.0.9"));
        assert_eq!(client_addr(&[], peer(), 1).as_deref(), Some("10.0.0.9"));
        // A spoofed leftmost entry never wins with hops = 1.
        let spoofed = ["1.2.3.4, 203.0.113.7"];
        assert_eq!(
            client_addr(&spoofed, peer(), 1).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_addr(&["[2001:db8::1]:443"], peer(), 1).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            client_addr(&["::ffff:192.0.2.1"], peer(), 1).as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(client_addr(&["unknown"], peer(), 1), None);
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
