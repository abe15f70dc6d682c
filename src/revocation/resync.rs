//! The resync loop: bounded staleness without the bus.
//!
//! Every `revocation.resync_interval`, and at once when kicked (the bus
//! (re)subscribed), it asks the store for PATs with `revoked_at`, and
//! deny-list entries and back-channel logout marks with `created_at`, and
//! (with `pat.owner_sync`) PAT owners with `changed_at`, after its
//! watermarks, applies them, and advances the watermarks. It also keeps the
//! PAT validator's set of known active hashes (`pat::known`): a full load at
//! start and every [`PURGE_EVERY`] (dropping expired ones), and tokens
//! created since its watermark in between.
//!
//! Each query reaches [`OVERLAP`] behind the watermark and re-applies what it
//! finds (both operations are idempotent). That covers a revocation whose
//! timestamp, taken on another host's clock, commits after a later one was
//! already seen, and a cache miss that read the token just before it was
//! revoked and cached it after the bus message. Hosts' clocks are assumed to
//! agree within [`OVERLAP`].
//!
//! Every read is paged (`store::page`): at most [`PAGE_SIZE`] rows per
//! query, resuming strictly after the last row's `(timestamp, key)`, each
//! page its own call within `store.timeout`. One unbounded query timed out
//! on every pass after a bulk change (100k PATs created at once) and the
//! watermark never moved. An incremental read applies each page and moves
//! its watermark as it goes, so a pass cut short by an unavailable store
//! keeps what it read. A full load gathers every page before it replaces
//! the set (the deny list and logout marks report themselves loaded only
//! then), and stops reading once more live entries than fit were seen.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::denylist::JwtDenyList;
use crate::pat::PatValidator;
use crate::store::{
    DenyEntry, DenyKeyset, HashAt, Keyset, LogoutKeyset, LogoutMark, OwnerKeyset, OwnerRecord,
    PatKeyset, Store, StoreError, TokenHash,
};

/// How far behind its watermarks each query reaches.
pub const OVERLAP: TimeDelta = TimeDelta::seconds(30);
/// How often expired deny-list entries are purged (memory and store).
const PURGE_EVERY: TimeDelta = TimeDelta::minutes(10);
/// Rows per resync query. A page of PAT rows (id, 32-byte hash,
/// timestamp) takes a few milliseconds on either backend, far inside the
/// default `store.timeout` of 100 ms; 100k new PATs are 100 pages.
pub const PAGE_SIZE: u32 = 1000;

/// Resync state of one replica.
#[derive(Debug)]
pub struct Resync {
    pats: Arc<PatValidator>,
    deny: Arc<JwtDenyList>,
    /// Rows per query ([`PAGE_SIZE`] unless set by [`Resync::with_page_size`]).
    page: u32,
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

/// True when a page came back full: there may be more after it.
fn more(rows: usize, page: u32) -> bool {
    u32::try_from(rows).map_or(true, |n| n >= page)
}

/// A keyset read in pages of `size` rows: `next` is the position the next
/// page starts after, `None` once a page came back short (the end).
struct Pager<K> {
    after: Keyset<K>,
    size: u32,
    done: bool,
}

impl<K> Pager<K> {
    fn new(size: u32, start: Keyset<K>) -> Self {
        Pager {
            after: start,
            size,
            done: false,
        }
    }

    fn next(&self) -> Option<&Keyset<K>> {
        (!self.done).then_some(&self.after)
    }

    /// Moves past `rows` (one page as read).
    fn advance<R>(&mut self, rows: &[R], keyset: impl Fn(&R) -> Keyset<K>) {
        self.done = !more(rows.len(), self.size);
        if let Some(last) = rows.last() {
            self.after = keyset(last);
        }
    }
}

/// `w` moved up to `at`, starting from the epoch when unset.
fn advance(w: &mut Option<DateTime<Utc>>, at: DateTime<Utc>) {
    let cur = w.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    *w = Some(cur.max(at));
}

impl Resync {
    pub fn new(pats: Arc<PatValidator>, deny: Arc<JwtDenyList>) -> Self {
        let now = Utc::now();
        Resync {
            pats,
            deny,
            page: PAGE_SIZE,
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

    /// Reads at most `rows` (at least 1) rows per query instead of
    /// [`PAGE_SIZE`].
    pub fn with_page_size(mut self, rows: u32) -> Self {
        self.page = rows.max(1);
        self
    }

    /// One pass. Store errors are logged and retried on the next pass.
    pub async fn once(&mut self) {
        let store = self.pats.store().clone();
        if let Err(e) = self.sync_revoked(&store).await {
            tracing::debug!(error = %e, "revocation resync: store unavailable");
        }

        self.sync_known(&store).await;

        let now = Utc::now();
        if let Err(e) = self.sync_deny(&store, now).await {
            tracing::debug!(error = %e, "JWT deny-list resync: store unavailable");
        }
        if let Err(e) = self.sync_logout(&store, now).await {
            tracing::debug!(error = %e, "logout marks resync: store unavailable");
        }
        if let Err(e) = self.sync_owners(&store).await {
            tracing::debug!(error = %e, "PAT owners resync: store unavailable");
        }

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

    /// PATs revoked since the watermark, page by page.
    async fn sync_revoked(&mut self, store: &Store) -> Result<(), StoreError> {
        let mut p = Pager::new(self.page, PatKeyset::after(self.pat_watermark - OVERLAP));
        while let Some(after) = p.next() {
            let rows = store.revoked_since(after, self.page).await?;
            p.advance(&rows, HashAt::keyset);
            for r in &rows {
                self.pats.mark_revoked(&r.hash).await;
                self.pat_watermark = self.pat_watermark.max(r.at);
            }
        }
        Ok(())
    }

    /// JWT deny-list entries: in full on the first pass (and after an
    /// overflow), else those changed since the watermark.
    async fn sync_deny(&mut self, store: &Store, now: DateTime<Utc>) -> Result<(), StoreError> {
        let full = self.deny_watermark.is_none() || self.deny.is_overflowed();
        let since = match self.deny_watermark {
            Some(w) if !full => w - OVERLAP,
            _ => DateTime::<Utc>::UNIX_EPOCH,
        };
        let mut gathered: Vec<DenyEntry> = Vec::new();
        let mut cut_short = false;
        let mut p = Pager::new(self.page, DenyKeyset::after(since));
        while let Some(after) = p.next() {
            let rows = store.jwt_denied_since(after, now, self.page).await?;
            p.advance(&rows, DenyEntry::keyset);
            if full {
                gathered.extend(rows);
                if gathered.len() > self.deny.capacity() {
                    cut_short = true; // rows are left unread: never "complete"
                    break;
                }
                continue;
            }
            self.deny.apply(&rows, now.timestamp());
            for e in &rows {
                advance(&mut self.deny_watermark, e.changed_at);
            }
        }
        if full && cut_short {
            self.deny.load_prefix(&gathered, now.timestamp());
        } else if full {
            self.deny.load_all(&gathered, now.timestamp());
        }
        if full {
            tracing::debug!(entries = self.deny.len(), "JWT deny-list loaded");
            let newest = gathered.iter().map(|e| e.changed_at).max();
            advance(
                &mut self.deny_watermark,
                newest.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            );
        }
        Ok(())
    }

    /// PAT owners' synced states (`pat.owner_sync` only): all on the first
    /// pass, then those changed since the watermark; applied page by page
    /// (newer rows replace older ones, so a pass cut short is behind, never
    /// wrong).
    async fn sync_owners(&mut self, store: &Store) -> Result<(), StoreError> {
        let Some(issuer) = self.pats.owner_sync_issuer() else {
            return Ok(());
        };
        let since = self
            .owner_watermark
            .map_or(DateTime::<Utc>::UNIX_EPOCH, |w| w - OVERLAP);
        let mut p = Pager::new(self.page, OwnerKeyset::after(since));
        while let Some(after) = p.next() {
            let mut rows = store.owners_changed_since(after, self.page).await?;
            p.advance(&rows, OwnerRecord::keyset);
            for r in &rows {
                advance(&mut self.owner_watermark, r.changed_at);
            }
            rows.retain(|r| r.issuer == issuer);
            self.pats.owners().apply(&rows);
        }
        // An empty first load still counts as loaded.
        advance(&mut self.owner_watermark, DateTime::<Utc>::UNIX_EPOCH);
        Ok(())
    }

    /// Back-channel logout marks: in full on the first pass (and after an
    /// overflow), else those changed since the watermark.
    async fn sync_logout(&mut self, store: &Store, now: DateTime<Utc>) -> Result<(), StoreError> {
        let marks = self.deny.logout();
        let full = self.logout_watermark.is_none() || marks.is_overflowed();
        let since = match self.logout_watermark {
            Some(w) if !full => w - OVERLAP,
            _ => DateTime::<Utc>::UNIX_EPOCH,
        };
        let mut gathered: Vec<LogoutMark> = Vec::new();
        let mut cut_short = false;
        let mut p = Pager::new(self.page, LogoutKeyset::after(since));
        while let Some(after) = p.next() {
            let rows = store.logout_marks_since(after, now, self.page).await?;
            p.advance(&rows, LogoutMark::keyset);
            if full {
                gathered.extend(rows);
                if gathered.len() > self.deny.capacity() {
                    cut_short = true; // rows are left unread: never "complete"
                    break;
                }
                continue;
            }
            marks.apply(&rows, now.timestamp());
            for m in &rows {
                advance(&mut self.logout_watermark, m.changed_at);
            }
        }
        if full && cut_short {
            marks.load_prefix(&gathered, now.timestamp());
        } else if full {
            marks.load_all(&gathered, now.timestamp());
        }
        if full {
            tracing::debug!(marks = marks.len(), "logout marks loaded");
            let newest = gathered.iter().map(|m| m.changed_at).max();
            advance(
                &mut self.logout_watermark,
                newest.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            );
        }
        Ok(())
    }

    /// Loads the known-hash set in full (first pass, then every
    /// [`PURGE_EVERY`]), else adds the tokens created since its watermark.
    async fn sync_known(&mut self, store: &Store) {
        let now = Utc::now();
        let full = match self.created_watermark {
            None => true,
            Some(_) => now - self.last_known_load >= PURGE_EVERY,
        };
        if full {
            match self.active_hashes(store, now).await {
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
        let mut p = Pager::new(self.page, PatKeyset::after(w - OVERLAP));
        while let Some(after) = p.next() {
            match store.created_since(after, now, self.page).await {
                Ok(rows) => {
                    p.advance(&rows, HashAt::keyset);
                    for r in &rows {
                        self.pats.note_created(&r.hash);
                        advance(&mut self.created_watermark, r.at);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "known PAT hashes resync: store unavailable");
                    return;
                }
            }
        }
    }

    /// Every active PAT hash, page by page by id.
    async fn active_hashes(
        &self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut out = Vec::new();
        let mut after = Uuid::nil();
        loop {
            let rows = store.active_hashes(after, now, self.page).await?;
            let full = more(rows.len(), self.page);
            if let Some((id, _)) = rows.last() {
                after = *id;
            }
            out.extend(rows.into_iter().map(|(_, h)| h));
            if !full {
                return Ok(out);
            }
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
