//! Batched usage tracking: `last_used_at`, and where the token was used
//! from (`last_used_ip`, `last_used_user_agent`). Requests only touch an
//! in-memory map; a background task writes it out every
//! `pat.last_used_flush` with ONE [`Store::touch_usage`] call per batch.
//!
//! The Check path stays cheap: the address is kept as an `IpAddr` (no
//! text), and the user agent is copied only when it differs from the one
//! already pending for the token (at most once per token per flush while a
//! client keeps sending the same one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{Store, StoreError, Usage};

/// Longest user agent kept, in bytes (cut at a character boundary).
pub const MAX_USER_AGENT: usize = 256;

/// One token's pending use.
struct Pending {
    at: DateTime<Utc>,
    ip: Option<IpAddr>,
    user_agent: Option<Arc<str>>,
}

/// Pending `id → latest use` updates, bounded in size. Cheap to clone.
#[derive(Clone)]
pub struct UsageTracker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    interval: Duration,
    capacity: usize,
    /// `pat.new_ip_events`.
    new_ip: bool,
    pending: Mutex<HashMap<Uuid, Pending>>,
    /// Signalled when the map is full, for an early flush.
    full: Notify,
    /// Serialises flushes so a shutdown flush cannot race the periodic one.
    flushing: tokio::sync::Mutex<()>,
}

fn cut(ua: &str) -> &str {
    if ua.len() <= MAX_USER_AGENT {
        return ua;
    }
    let mut end = MAX_USER_AGENT;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    &ua[..end]
}

impl UsageTracker {
    /// `capacity` bounds the number of distinct pending ids; uses beyond it
    /// are dropped (last_used_at is best-effort) and trigger an early flush.
    pub fn new(store: Store, interval: Duration, capacity: usize) -> Self {
        UsageTracker {
            inner: Arc::new(Inner {
                store,
                interval: interval.max(Duration::from_millis(10)),
                capacity: capacity.max(1),
                new_ip: false,
                pending: Mutex::new(HashMap::new()),
                full: Notify::new(),
                flushing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Turns on `token.new_ip` events (`pat.new_ip_events`). Call before
    /// cloning.
    pub fn with_new_ip_events(mut self, on: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.new_ip = on;
        }
        self
    }

    /// Notes that token `id` was used at `at`. Never does I/O.
    pub fn record(&self, id: Uuid, at: DateTime<Utc>) {
        let Ok(mut map) = self.inner.pending.lock() else {
            return;
        };
        let len = map.len();
        match map.get_mut(&id) {
            Some(p) => p.at = p.at.max(at),
            None if len < self.inner.capacity => {
                map.insert(
                    id,
                    Pending {
                        at,
                        ip: None,
                        user_agent: None,
                    },
                );
            }
            None => {
                drop(map);
                self.inner.full.notify_one();
            }
        }
    }

    /// Notes where token `id`'s current use (already [`record`]ed) came
    /// from. Never does I/O; allocates only for a user agent that differs
    /// from the pending one.
    ///
    /// [`record`]: UsageTracker::record
    pub fn record_client(&self, id: Uuid, ip: Option<IpAddr>, user_agent: Option<&str>) {
        let Ok(mut map) = self.inner.pending.lock() else {
            return;
        };
        // Not pending: the use was dropped (map full); so is its client.
        let Some(p) = map.get_mut(&id) else {
            return;
        };
        if ip.is_some() {
            p.ip = ip;
        }
        if let Some(ua) = user_agent.map(cut)
            && p.user_agent.as_deref() != Some(ua)
        {
            p.user_agent = Some(Arc::from(ua));
        }
    }

    /// Number of ids waiting to be written.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Writes all pending updates in one `touch_usage` call. On failure
    /// the updates are put back (keeping the latest) for the next flush.
    /// Returns the number of rows updated.
    pub async fn flush(&self) -> Result<u64, StoreError> {
        let _guard = self.inner.flushing.lock().await;
        // The map is taken, not drained: a drained map keeps the table of
        // its largest batch (about 100 bytes a token, ~10 MiB after a burst
        // of 100,000 PATs) for good; a new one grows only with use.
        let batch: Vec<Usage> = match self.inner.pending.lock() {
            Ok(mut map) => std::mem::take(&mut *map)
                .into_iter()
                .map(|(id, p)| Usage {
                    id,
                    at: p.at,
                    ip: p.ip,
                    user_agent: p.user_agent,
                })
                .collect(),
            Err(_) => return Err(StoreError::Other("usage tracker mutex poisoned".into())),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match self
            .inner
            .store
            .touch_usage(&batch, self.inner.new_ip)
            .await
        {
            Ok(n) => Ok(n),
            Err(e) => {
                self.put_back(batch);
                Err(e)
            }
        }
    }

    fn put_back(&self, batch: Vec<Usage>) {
        let Ok(mut map) = self.inner.pending.lock() else {
            return;
        };
        for u in batch {
            if map.len() >= self.inner.capacity && !map.contains_key(&u.id) {
                continue;
            }
            let p = map.entry(u.id).or_insert(Pending {
                at: u.at,
                ip: None,
                user_agent: None,
            });
            if u.at >= p.at {
                p.at = u.at;
                p.ip = u.ip.or(p.ip);
                p.user_agent = u.user_agent.or(p.user_agent.take());
            }
        }
    }

    /// Spawns the periodic flusher. Abort the handle at shutdown, then call
    /// [`UsageTracker::flush`] once more.
    pub fn start_flusher(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = this.inner.full.notified() => {}
                }
                if let Err(e) = this.flush().await {
                    tracing::warn!(error = %e, "flushing PAT usage (last_used_at) failed; will retry");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tracker() -> (tempfile::TempDir, UsageTracker) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::connect(&crate::store::StoreConfig::default(), dir.path())
            .await
            .expect("store");
        (dir, UsageTracker::new(store, Duration::from_secs(60), 4))
    }

    fn agent(t: &UsageTracker, id: Uuid) -> Option<Arc<str>> {
        t.inner.pending.lock().unwrap()[&id].user_agent.clone()
    }

    #[tokio::test]
    async fn the_same_user_agent_is_not_copied_again() {
        let (_dir, t) = tracker().await;
        let id = Uuid::new_v4();
        // Not recorded yet (e.g. dropped at capacity): nothing is kept.
        t.record_client(id, None, Some("curl/8"));
        assert_eq!(t.pending(), 0);
        t.record(id, Utc::now());
        t.record_client(id, "192.0.2.1".parse().ok(), Some("curl/8"));
        let first = agent(&t, id).unwrap();
        t.record_client(id, None, Some("curl/8"));
        assert!(Arc::ptr_eq(&first, &agent(&t, id).unwrap()), "no new copy");
        t.record_client(id, None, Some("git/2"));
        assert_eq!(agent(&t, id).as_deref(), Some("git/2"));
        let long = "é".repeat(200);
        t.record_client(id, None, Some(&long));
        let kept = agent(&t, id).unwrap();
        assert!(kept.len() <= MAX_USER_AGENT && long.starts_with(&*kept));
        assert_eq!(
            t.inner.pending.lock().unwrap()[&id].ip,
            "192.0.2.1".parse().ok()
        );
    }
}
