//! The resync loop: bounded staleness without the bus.
//!
//! Every `revocation.resync_interval`, and at once when kicked (the bus
//! (re)subscribed), it asks the store for PATs with `revoked_at`, and
//! deny-list entries and back-channel logout marks with `created_at`, and
//! (with `pat.owner_sync`) PAT owners with `changed_at`, after its watermarks, applies them,
//! and advances the watermarks. It also keeps the PAT validator's set of
//! known active hashes (`pat::known`): a full load at start and every
//! [`PURGE_EVERY`] (dropping expired ones), and tokens created since its
//! watermark in between.
//!
//! Each query reaches [`OVERLAP`] behind the watermark and re-applies what it
//! finds (both operations are idempotent). That covers a revocation whose
//! timestamp, taken on another host's clock, commits after a later one was
//! already seen, and a cache miss that read the token just before it was
//! revoked and cached it after the bus message. Hosts' clocks are assumed to
//! agree within [`OVERLAP`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::denylist::JwtDenyList;
use crate::pat::PatValidator;

/// How far behind its watermarks each query reaches.
pub const OVERLAP: TimeDelta = TimeDelta::seconds(30);
/// How often expired deny-list entries are purged (memory and store).
const PURGE_EVERY: TimeDelta = TimeDelta::minutes(10);

/// Resync state of one replica.
#[derive(Debug)]
pub struct Resync {
    pats: Arc<PatValidator>,
    deny: Arc<JwtDenyList>,
    pat_watermark: DateTime<Utc>,
    /// `None` until the deny set has been loaded in full.
    deny_watermark: Option<DateTime<Utc>>,
    last_purge: DateTime<Utc>,
    /// `None` until the known-hash set has been loaded in full.
    created_watermark: Option<DateTime<Utc>>,
    last_known_load: DateTime<Utc>,
    /// `None` until the logout marks have been loaded in full.
    logout_watermark: Option<DateTime<Utc>>,
    /// `None` until the PAT owners have been loaded in full.
    owner_watermark: Option<DateTime<Utc>>,
}

impl Resync {
    pub fn new(pats: Arc<PatValidator>, deny: Arc<JwtDenyList>) -> Self {
        let now = Utc::now();
        Resync {
            pats,
            deny,
            // A revocation committed just before start must not be missed;
            // re-marking a revoked token is harmless.
            pat_watermark: now - TimeDelta::seconds(60),
            deny_watermark: None,
            last_purge: now,
            created_watermark: None,
            last_known_load: now,
            logout_watermark: None,
            owner_watermark: None,
        }
    }

    /// One pass. Store errors are logged and retried on the next pass.
    pub async fn once(&mut self) {
        let store = self.pats.store().clone();
        match store.revoked_since(self.pat_watermark - OVERLAP).await {
            Ok(rows) => {
                for (hash, at) in rows {
                    self.pats.mark_revoked(&hash).await;
                    self.pat_watermark = self.pat_watermark.max(at);
                }
            }
            Err(e) => tracing::debug!(error = %e, "revocation resync: store unavailable"),
        }

        self.sync_known().await;

        let now = Utc::now();
        let full = self.deny_watermark.is_none() || self.deny.is_overflowed();
        let since = match self.deny_watermark {
            Some(w) if !full => w - OVERLAP,
            _ => DateTime::<Utc>::UNIX_EPOCH,
        };
        match store.jwt_denied_since(since, now).await {
            Ok(rows) => {
                let newest = rows.iter().map(|e| e.changed_at).max();
                if full {
                    self.deny.load_all(&rows, now.timestamp());
                    tracing::debug!(entries = self.deny.len(), "JWT deny-list loaded");
                } else {
                    self.deny.apply(&rows, now.timestamp());
                }
                let w = self.deny_watermark.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                self.deny_watermark = Some(newest.map_or(w, |n| n.max(w)));
            }
            Err(e) => tracing::debug!(error = %e, "JWT deny-list resync: store unavailable"),
        }

        self.sync_logout(now).await;
        self.sync_owners().await;

        if now - self.last_purge >= PURGE_EVERY {
            self.last_purge = now;
            self.deny.purge(now.timestamp());
            self.deny.logout().purge(now.timestamp());
            if let Err(e) = store.purge_jwt_denylist(now).await {
                tracing::debug!(error = %e, "purging expired deny-list entries failed");
            }
            if let Err(e) = store.purge_logout_marks(now).await {
                tracing::debug!(error = %e, "purging expired logout marks failed");
            }
        }
    }

    /// PAT owners' synced states (`pat.owner_sync` only): all on the first
    /// pass, then those changed since the watermark.
    async fn sync_owners(&mut self) {
        let Some(issuer) = self.pats.owner_sync_issuer() else {
            return;
        };
        let since = self
            .owner_watermark
            .map_or(DateTime::<Utc>::UNIX_EPOCH, |w| w - OVERLAP);
        match self.pats.store().owners_changed_since(since).await {
            Ok(mut rows) => {
                let newest = rows.iter().map(|r| r.changed_at).max();
                rows.retain(|r| r.issuer == issuer);
                self.pats.owners().apply(&rows);
                let w = self.owner_watermark.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                self.owner_watermark = Some(newest.map_or(w, |n| n.max(w)));
            }
            Err(e) => tracing::debug!(error = %e, "PAT owners resync: store unavailable"),
        }
    }

    /// Back-channel logout marks: in full on the first pass (and after an
    /// overflow), else those changed since the watermark.
    async fn sync_logout(&mut self, now: DateTime<Utc>) {
        let marks = self.deny.logout();
        let full = self.logout_watermark.is_none() || marks.is_overflowed();
        let since = match self.logout_watermark {
            Some(w) if !full => w - OVERLAP,
            _ => DateTime::<Utc>::UNIX_EPOCH,
        };
        match self.pats.store().logout_marks_since(since, now).await {
            Ok(rows) => {
                let newest = rows.iter().map(|m| m.changed_at).max();
                if full {
                    marks.load_all(&rows, now.timestamp());
                    tracing::debug!(marks = marks.len(), "logout marks loaded");
                } else {
                    marks.apply(&rows, now.timestamp());
                }
                let w = self.logout_watermark.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                self.logout_watermark = Some(newest.map_or(w, |n| n.max(w)));
            }
            Err(e) => tracing::debug!(error = %e, "logout marks resync: store unavailable"),
        }
    }

    /// Loads the known-hash set in full (first pass, then every
    /// [`PURGE_EVERY`]), else adds the tokens created since its watermark.
    async fn sync_known(&mut self) {
        let store = self.pats.store();
        let now = Utc::now();
        let full = match self.created_watermark {
            None => true,
            Some(_) => now - self.last_known_load >= PURGE_EVERY,
        };
        if full {
            match store.active_hashes(now).await {
                Ok(hashes) => {
                    self.pats.known().load_all(hashes);
                    self.last_known_load = now;
                    // Tokens created while the load ran come with the next pass.
                    self.created_watermark = Some(now);
                    tracing::debug!(hashes = self.pats.known().len(), "known PAT hashes loaded");
                }
                Err(e) => tracing::debug!(error = %e, "known PAT hashes: store unavailable"),
            }
            return;
        }
        let w = self.created_watermark.unwrap_or(now);
        match store.created_since(w - OVERLAP, now).await {
            Ok(rows) => {
                for (hash, at) in rows {
                    self.pats.note_created(&hash);
                    self.created_watermark = Some(w.max(at));
                }
            }
            Err(e) => tracing::debug!(error = %e, "known PAT hashes resync: store unavailable"),
        }
    }

    /// Runs [`Resync::once`] every `interval` and whenever `kick` fires.
    pub async fn run(mut self, interval: Duration, kick: Arc<Notify>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = kick.notified() => tick.reset(),
            }
            self.once().await;
        }
    }
}
