//! The in-memory JWT deny set: `jti`s and `sid`s that must be refused.
//!
//! Check never queries the store for it in normal operation: the set is
//! loaded at start, then kept current by the bus and the resync loop. Two
//! states make Check fall back to one store query per JWT (and to 503 when
//! the store is down), never to "not denied":
//! - not loaded yet (the store was unreachable at start);
//! - overflowed: more live entries than `revocation.jwt_denylist_capacity`.
//!   Entries are never dropped to make room; the set marks itself overflowed
//!   and the next resync reloads it in full (clearing the flag if it fits).
//!
//! Reads take a std `RwLock` read guard for a hash lookup (never across an
//! `.await`); writers are the bus and the resync loop.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::logout::LogoutMarks;
use crate::store::{DenyEntry, DenylistKind};

/// What the deny set says about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyCheck {
    /// Neither its `jti` nor its `sid` is deny-listed.
    Clear,
    /// Deny-listed: 401 "token revoked".
    Denied,
    /// The set cannot answer (not loaded, or overflowed): ask the store.
    AskStore,
}

#[derive(Debug, Default)]
struct Sets {
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
}

impl Sets {
    fn map(&mut self, kind: DenylistKind) -> &mut HashMap<String, i64> {
        match kind {
            DenylistKind::Jti => &mut self.jti,
            DenylistKind::Sid => &mut self.sid,
        }
    }

    fn len(&self) -> usize {
        self.jti.len() + self.sid.len()
    }

    fn purge(&mut self, now: i64) {
        self.jti.retain(|_, exp| *exp > now);
        self.sid.retain(|_, exp| *exp > now);
    }
}

/// Deny-listed `jti`/`sid` values with their expiry (Unix seconds).
#[derive(Debug)]
pub struct JwtDenyList {
    sets: RwLock<Sets>,
    capacity: usize,
    /// Entry count, so the common empty case takes no lock.
    len: AtomicUsize,
    loaded: AtomicBool,
    overflow: AtomicBool,
    /// Back-channel logout marks, kept beside the deny set (same capacity,
    /// loaded and refreshed by the same bus and resync loop).
    logout: LogoutMarks,
}

impl JwtDenyList {
    /// An empty, not yet loaded set holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        JwtDenyList {
            sets: RwLock::new(Sets::default()),
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            loaded: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
            logout: LogoutMarks::new(capacity),
        }
    }

    /// The back-channel logout marks.
    pub fn logout(&self) -> &LogoutMarks {
        &self.logout
    }

    /// Is this token deny-listed at `now` (Unix seconds)?
    pub fn check(&self, jti: Option<&str>, sid: Option<&str>, now: i64) -> DenyCheck {
        if !self.loaded.load(Ordering::Acquire) || self.overflow.load(Ordering::Acquire) {
            return DenyCheck::AskStore;
        }
        if (jti.is_none() && sid.is_none()) || self.len.load(Ordering::Acquire) == 0 {
            return DenyCheck::Clear;
        }
        let sets = self.sets.read().unwrap_or_else(|p| p.into_inner());
        let hit = |m: &HashMap<String, i64>, v: Option<&str>| {
            v.and_then(|v| m.get(v)).is_some_and(|exp| *exp > now)
        };
        if hit(&sets.jti, jti) || hit(&sets.sid, sid) {
            DenyCheck::Denied
        } else {
            DenyCheck::Clear
        }
    }

    /// Adds (or extends) one entry. Past capacity, expired entries are
    /// purged first; if it is still full the set marks itself overflowed.
    pub fn insert(&self, kind: DenylistKind, value: &str, expires_at: i64, now: i64) {
        if expires_at <= now {
            return;
        }
        let mut sets = self.sets.write().unwrap_or_else(|p| p.into_inner());
        if let Some(exp) = sets.map(kind).get_mut(value) {
            *exp = (*exp).max(expires_at);
            return;
        }
        if sets.len() >= self.capacity {
            sets.purge(now);
        }
        if sets.len() >= self.capacity {
            if !self.overflow.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    capacity = self.capacity,
                    "JWT deny-list is full (revocation.jwt_denylist_capacity); \
                     checking JWTs against the store until it fits again"
                );
            }
            return;
        }
        sets.map(kind).insert(value.to_owned(), expires_at);
        self.len.store(sets.len(), Ordering::Release);
    }

    /// Adds store rows (incremental resync).
    pub fn apply(&self, entries: &[DenyEntry], now: i64) {
        for e in entries {
            self.insert(e.kind, &e.value, e.expires_at.timestamp(), now);
        }
    }

    /// Merges the store's full list of live entries and marks the set
    /// loaded; clears the overflow flag when everything fits. Merging (not
    /// replacing) keeps entries a bus message added while the list was read.
    pub fn load_all(&self, entries: &[DenyEntry], now: i64) {
        self.load(entries, now, true);
    }

    /// A full load cut short (more rows than fit): what was read is kept,
    /// and the set stays overflowed whatever it holds, so Check asks the
    /// store. Row counts are not entry counts (a row read twice while it
    /// is extended mid-load merges into one), so the set cannot tell from
    /// what it got that rows are missing.
    pub fn load_prefix(&self, entries: &[DenyEntry], now: i64) {
        self.load(entries, now, false);
    }

    fn load(&self, entries: &[DenyEntry], now: i64, complete: bool) {
        let mut sets = self.sets.write().unwrap_or_else(|p| p.into_inner());
        sets.purge(now);
        let mut fits = true;
        for e in entries {
            let exp = e.expires_at.timestamp();
            if exp <= now {
                continue;
            }
            if let Some(cur) = sets.map(e.kind).get_mut(&e.value) {
                *cur = (*cur).max(exp);
                continue;
            }
            if sets.len() >= self.capacity {
                fits = false;
                break;
            }
            sets.map(e.kind).insert(e.value.clone(), exp);
        }
        self.len.store(sets.len(), Ordering::Release);
        self.overflow.store(!(fits && complete), Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Drops entries expired at `now`.
    pub fn purge(&self, now: i64) {
        let mut sets = self.sets.write().unwrap_or_else(|p| p.into_inner());
        sets.purge(now);
        self.len.store(sets.len(), Ordering::Release);
    }

    /// Loaded from the store at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// More live entries than fit: the next resync must reload in full.
    pub fn is_overflowed(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }

    /// The most entries (and, separately, logout marks) held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn entry(kind: DenylistKind, v: &str, exp: i64) -> DenyEntry {
        let at = DateTime::<Utc>::from_timestamp(exp, 0).unwrap();
        DenyEntry {
            kind,
            value: v.into(),
            expires_at: at,
            changed_at: at,
        }
    }

    #[test]
    fn unloaded_asks_the_store_then_answers_from_memory() {
        let d = JwtDenyList::new(10);
        assert_eq!(d.check(Some("j"), None, 100), DenyCheck::AskStore);
        d.load_all(&[entry(DenylistKind::Jti, "j", 200)], 100);
        assert_eq!(d.check(Some("j"), None, 100), DenyCheck::Denied);
        assert_eq!(d.check(Some("j"), None, 200), DenyCheck::Clear, "expired");
        assert_eq!(
            d.check(None, Some("j"), 100),
            DenyCheck::Clear,
            "kinds differ"
        );
        d.insert(DenylistKind::Sid, "s", 300, 100);
        assert_eq!(d.check(Some("x"), Some("s"), 100), DenyCheck::Denied);
        assert_eq!(d.check(None, None, 100), DenyCheck::Clear);
        d.purge(250);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn full_set_overflows_instead_of_dropping_entries() {
        let d = JwtDenyList::new(2);
        d.load_all(&[], 0);
        d.insert(DenylistKind::Jti, "a", 100, 0);
        d.insert(DenylistKind::Jti, "b", 100, 0);
        d.insert(DenylistKind::Jti, "c", 100, 0);
        assert!(d.is_overflowed());
        assert_eq!(d.check(Some("c"), None, 0), DenyCheck::AskStore);
        // Expired entries make room on insert.
        let d = JwtDenyList::new(2);
        d.load_all(&[], 0);
        d.insert(DenylistKind::Jti, "a", 10, 0);
        d.insert(DenylistKind::Jti, "b", 100, 0);
        d.insert(DenylistKind::Jti, "c", 100, 50);
        assert!(!d.is_overflowed());
        assert_eq!(d.check(Some("c"), None, 50), DenyCheck::Denied);
        // A full reload that fits clears the flag.
        let d = JwtDenyList::new(1);
        let two = [
            entry(DenylistKind::Jti, "a", 100),
            entry(DenylistKind::Sid, "b", 100),
        ];
        d.load_all(&two, 0);
        assert!(d.is_overflowed());
        d.load_all(&two[..1], 0);
        assert!(!d.is_overflowed());
        assert_eq!(d.check(Some("a"), None, 0), DenyCheck::Denied);
    }
}
