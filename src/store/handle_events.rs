//! [`Store`] calls of the outbox: events (the audit trail), webhook
//! deliveries, expiry notices and leak reports. Each is bounded by
//! `store.timeout` like every other call.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::events::{
    AttemptOutcome, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord, EventQuery,
    EventRecord, HookFilter,
};
use super::{Cause, Result, Store, TokenHash, TokenQuery, TokenRecord, Usage};

impl Store {
    /// Passes `r` through, signalling [`Store::events_written`] when it is
    /// a success (the write stored its events).
    pub(super) fn wrote<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_ok() {
            self.events_written.notify_one();
        }
        r
    }

    /// Signalled after writes through this handle stored events (a hint
    /// for the webhook dispatcher; other replicas' writes are found by
    /// polling).
    pub fn events_written(&self) -> Arc<Notify> {
        Arc::clone(&self.events_written)
    }

    /// Revokes the tokens stored under any of `hashes` (a leak report),
    /// with `token.leaked` (and `token.revoked` for those revoked now).
    /// Returns the tokens found, as they now are.
    pub async fn revoke_hashes(
        &self,
        hashes: &[TokenHash],
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        let r = self
            .call(self.backend.revoke_hashes(hashes, now, cause))
            .await;
        self.wrote(r)
    }

    /// Writes the `token.expiring` notices due at `now` (`thresholds` in
    /// seconds before expiry) and `token.expired`; returns how many.
    pub async fn expiry_notices(&self, now: DateTime<Utc>, thresholds: &[i64]) -> Result<usize> {
        let n = self
            .call(self.backend.expiry_notices(now, thresholds))
            .await?;
        if n > 0 {
            self.events_written.notify_one();
        }
        Ok(n)
    }

    /// Advances each webhook's fan-out cursor (created at its first
    /// sighting: events written since `since`) by up to `limit` events.
    pub async fn fan_out(
        &self,
        hooks: &[HookFilter],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize> {
        self.call(self.backend.fan_out(hooks, now, since, limit))
            .await
    }

    /// Leases up to `limit` due deliveries of `hooks` to `owner`.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        hooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        self.call(
            self.backend
                .claim_deliveries(owner, hooks, now, lease_until, limit),
        )
        .await
    }

    /// Records an attempt's outcome; false when `owner` no longer holds
    /// the lease (another replica took it over).
    pub async fn finish_delivery(
        &self,
        id: Uuid,
        owner: &str,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.call(self.backend.finish_delivery(id, owner, outcome, now))
            .await
    }

    /// Dead-letters pending deliveries of events older than `older_than`.
    pub async fn expire_deliveries(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.call(self.backend.expire_deliveries(older_than, now))
            .await
    }

    /// Deliveries, newest event first.
    pub async fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        self.call(self.backend.deliveries(q)).await
    }

    /// Pending and dead deliveries.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts> {
        self.call(self.backend.delivery_counts()).await
    }

    /// Events (the audit trail), newest first.
    pub async fn events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        self.call(self.backend.events(q)).await
    }

    /// Deletes events older than `before` (retention), with their deliveries.
    pub async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        self.call(self.backend.purge_events(before)).await
    }

    /// The admin inventory: tokens matching `q`, newest first.
    pub async fn tokens(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>> {
        self.call(self.backend.tokens(q)).await
    }

    /// Writes a usage flush in ONE backend call: `last_used_at` (forward
    /// only), `last_used_ip`, `last_used_user_agent`, and with `new_ip` the
    /// `token.new_ip` events. Duplicate ids are collapsed to their latest use.
    pub async fn touch_usage(&self, batch: &[Usage], new_ip: bool) -> Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut latest: std::collections::HashMap<Uuid, &Usage> = Default::default();
        for u in batch {
            let e = latest.entry(u.id).or_insert(u);
            if u.at > e.at {
                *e = u;
            }
        }
        let dedup: Vec<Usage> = latest.into_values().cloned().collect();
        let n = self.call(self.backend.touch_usage(&dedup, new_ip)).await?;
        if new_ip {
            self.events_written.notify_one();
        }
        Ok(n)
    }
}
