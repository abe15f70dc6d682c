//! Batched `last_used_at` tracking: requests only touch an in-memory map;
//! a background task writes it out every `pat.last_used_flush` with ONE
//! [`Store::touch_last_used`] call per batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// Pending `id → latest use` updates, bounded in size. Cheap to clone.
#[derive(Clone)]
pub struct UsageTracker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    interval: Duration,
    capacity: usize,
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    /// Signalled when the map is full, for an early flush.
    full: Notify,
    /// Serialises flushes so a shutdown flush cannot race the periodic one.
    flushing: tokio::sync::Mutex<()>,
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
                pending: Mutex::new(HashMap::new()),
                full: Notify::new(),
                flushing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Notes that token `id` was used at `at`. Never does I/O.
    pub fn record(&self, id: Uuid, at: DateTime<Utc>) {
        let Ok(mut map) = self.inner.pending.lock() else {
            return;
        };
        let len = map.len();
        match map.get_mut(&id) {
            Some(t) => *t = (*t).max(at),
            None if len < self.inner.capacity => {
                map.insert(id, at);
            }
            None => {
                drop(map);
                self.inner.full.notify_one();
            }
        }
    }

    /// Number of ids waiting to be written.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Writes all pending updates in one `touch_last_used` call. On failure
    /// the updates are put back (keeping the latest time) for the next flush.
    /// Returns the number of rows updated.
    pub async fn flush(&self) -> Result<u64, StoreError> {
        let _guard = self.inner.flushing.lock().await;
        let batch: Vec<(Uuid, DateTime<Utc>)> = match self.inner.pending.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return Err(StoreError::Other("usage tracker mutex poisoned".into())),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match self.inner.store.touch_last_used(&batch).await {
            Ok(n) => Ok(n),
            Err(e) => {
                if let Ok(mut map) = self.inner.pending.lock() {
                    for (id, at) in batch {
                        if map.len() >= self.inner.capacity && !map.contains_key(&id) {
                            continue;
                        }
                        let t = map.entry(id).or_insert(at);
                        *t = (*t).max(at);
                    }
                }
                Err(e)
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
                    tracing::warn!(error = %e, "flushing PAT last_used_at failed; will retry");
                }
            }
        })
    }
}
