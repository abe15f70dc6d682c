//! Back-channel logout marks in memory: sessions (`sid`) and subjects
//! (`sub`, with a not-before) that one issuer logged out.
//!
//! Like the JWT deny set ([`super::JwtDenyList`], which holds this set), Check
//! never queries the store for them in normal operation: they are loaded at
//! start and kept current by the bus and the resync loop. Until loaded, or
//! past capacity, Check asks the store ([`LogoutCheck::AskStore`]), never
//! "not logged out". Reads take a std `RwLock` read guard for two hash
//! lookups (never across an `.await`), and none when the set is empty.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::store::{LogoutKind, LogoutMark};

/// What the marks say about one token (the same answers as
/// [`super::DenyCheck`]).
pub type LogoutCheck = super::DenyCheck;

/// One mark: refuse tokens issued at or before `not_before` (`sub`), or
/// every token (`sid`), until `expires_at` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    not_before: i64,
    expires_at: i64,
}

/// Does a mark of `kind` refuse a token issued at `iat`, at `now`? A token
/// without `iat` cannot be placed before or after a logout: refused.
pub fn refuses(
    kind: LogoutKind,
    not_before: i64,
    expires_at: i64,
    iat: Option<i64>,
    now: i64,
) -> bool {
    if expires_at <= now {
        return false;
    }
    match kind {
        LogoutKind::Sid => true,
        LogoutKind::Sub => iat.is_none_or(|iat| iat <= not_before),
    }
}

/// Does any of the store's `marks` refuse this token (the fallback path)?
pub fn any_refuses(marks: &[LogoutMark], iat: Option<i64>, now: i64) -> bool {
    marks.iter().any(|m| {
        refuses(
            m.kind,
            m.not_before.timestamp(),
            m.expires_at.timestamp(),
            iat,
            now,
        )
    })
}

#[derive(Debug, Default)]
struct IssuerMarks {
    sid: HashMap<String, Mark>,
    sub: HashMap<String, Mark>,
}

impl IssuerMarks {
    fn map(&mut self, kind: LogoutKind) -> &mut HashMap<String, Mark> {
        match kind {
            LogoutKind::Sid => &mut self.sid,
            LogoutKind::Sub => &mut self.sub,
        }
    }
}

#[derive(Debug, Default)]
struct Marks {
    by_issuer: HashMap<String, IssuerMarks>,
    len: usize,
}

impl Marks {
    /// Adds or extends a mark; false when it would exceed `capacity`.
    fn insert(&mut self, m: &LogoutMark, capacity: usize) -> bool {
        let new = Mark {
            not_before: m.not_before.timestamp(),
            expires_at: m.expires_at.timestamp(),
        };
        let exists = self.by_issuer.get(&m.issuer).is_some_and(|i| match m.kind {
            LogoutKind::Sid => i.sid.contains_key(&m.value),
            LogoutKind::Sub => i.sub.contains_key(&m.value),
        });
        if !exists && self.len >= capacity {
            return false;
        }
        let map = self
            .by_issuer
            .entry(m.issuer.clone())
            .or_default()
            .map(m.kind);
        let cur = map.entry(m.value.clone()).or_insert(new);
        cur.not_before = cur.not_before.max(new.not_before);
        cur.expires_at = cur.expires_at.max(new.expires_at);
        if !exists {
            self.len += 1;
        }
        true
    }

    fn purge(&mut self, now: i64) {
        for i in self.by_issuer.values_mut() {
            i.sid.retain(|_, m| m.expires_at > now);
            i.sub.retain(|_, m| m.expires_at > now);
        }
        self.by_issuer
            .retain(|_, i| !i.sid.is_empty() || !i.sub.is_empty());
        self.len = self
            .by_issuer
            .values()
            .map(|i| i.sid.len() + i.sub.len())
            .sum();
    }
}

/// Logout marks of every issuer, bounded by `capacity`.
#[derive(Debug)]
pub struct LogoutMarks {
    marks: RwLock<Marks>,
    capacity: usize,
    /// Mark count, so the common empty case takes no lock.
    len: AtomicUsize,
    loaded: AtomicBool,
    overflow: AtomicBool,
}

impl LogoutMarks {
    /// An empty, not yet loaded set holding at most `capacity` marks.
    pub fn new(capacity: usize) -> Self {
        LogoutMarks {
            marks: RwLock::new(Marks::default()),
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            loaded: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
        }
    }

    /// Is a token of `issuer` with this `sid`/`sub`, issued at `iat`,
    /// logged out at `now` (Unix seconds)?
    pub fn check(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        iat: Option<i64>,
        now: i64,
    ) -> LogoutCheck {
        if !self.loaded.load(Ordering::Acquire) || self.overflow.load(Ordering::Acquire) {
            return LogoutCheck::AskStore;
        }
        if self.len.load(Ordering::Acquire) == 0 {
            return LogoutCheck::Clear;
        }
        let marks = self.marks.read().unwrap_or_else(|p| p.into_inner());
        let Some(i) = marks.by_issuer.get(issuer) else {
            return LogoutCheck::Clear;
        };
        let sid_hit = sid
            .and_then(|s| i.sid.get(s))
            .is_some_and(|m| refuses(LogoutKind::Sid, m.not_before, m.expires_at, iat, now));
        let sub_hit = i
            .sub
            .get(sub)
            .is_some_and(|m| refuses(LogoutKind::Sub, m.not_before, m.expires_at, iat, now));
        if sid_hit || sub_hit {
            LogoutCheck::Denied
        } else {
            LogoutCheck::Clear
        }
    }

    /// Adds (or extends) marks. Past capacity, expired marks are purged
    /// first; if it is still full the set marks itself overflowed (Check
    /// asks the store until a full reload fits).
    pub fn apply(&self, marks: &[LogoutMark], now: i64) {
        let mut set = self.marks.write().unwrap_or_else(|p| p.into_inner());
        if !self.insert_all(&mut set, marks, now) && !self.overflow.swap(true, Ordering::AcqRel) {
            tracing::error!(
                capacity = self.capacity,
                "logout marks are full (revocation.jwt_denylist_capacity); \
                 checking logins against the store until they fit again"
            );
        }
        self.len.store(set.len, Ordering::Release);
    }

    /// Inserts what fits; false when a live mark did not.
    fn insert_all(&self, set: &mut Marks, marks: &[LogoutMark], now: i64) -> bool {
        let mut fits = true;
        for m in marks {
            if m.expires_at.timestamp() <= now {
                continue;
            }
            if !set.insert(m, self.capacity) {
                set.purge(now);
                fits &= set.insert(m, self.capacity);
            }
        }
        fits
    }

    /// Replaces the set with the store's full list of live marks, merged
    /// with what the bus added meanwhile, and marks it loaded.
    pub fn load_all(&self, marks: &[LogoutMark], now: i64) {
        self.load(marks, now, true);
    }

    /// A full load cut short (more rows than fit): what was read is kept,
    /// and the set stays overflowed, so Check asks the store (see
    /// `JwtDenyList::load_prefix`).
    pub fn load_prefix(&self, marks: &[LogoutMark], now: i64) {
        self.load(marks, now, false);
    }

    /// Rebuilt under one write lock, the overflow flag set before it is
    /// released: a Check never sees a half-applied load as complete.
    fn load(&self, marks: &[LogoutMark], now: i64, complete: bool) {
        let mut set = self.marks.write().unwrap_or_else(|p| p.into_inner());
        set.purge(now);
        let fits = self.insert_all(&mut set, marks, now);
        if !fits {
            tracing::error!(
                capacity = self.capacity,
                "logout marks are full (revocation.jwt_denylist_capacity); \
                 checking logins against the store until they fit again"
            );
        }
        self.overflow.store(!(fits && complete), Ordering::Release);
        self.len.store(set.len, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Drops marks expired at `now`.
    pub fn purge(&self, now: i64) {
        let mut set = self.marks.write().unwrap_or_else(|p| p.into_inner());
        set.purge(now);
        self.len.store(set.len, Ordering::Release);
    }

    /// Loaded from the store at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// More live marks than fit: the next resync must reload in full.
    pub fn is_overflowed(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }

    /// Number of marks held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// No marks held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn mark(kind: LogoutKind, v: &str, nbf: i64, exp: i64) -> LogoutMark {
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        LogoutMark {
            issuer: "https://iss".into(),
            kind,
            value: v.into(),
            not_before: at(nbf),
            expires_at: at(exp),
            changed_at: at(nbf),
        }
    }

    #[test]
    fn sid_refuses_every_token_of_the_session_sub_only_older_ones() {
        let m = LogoutMarks::new(10);
        assert_eq!(
            m.check("https://iss", Some("s"), "u", Some(1), 100),
            LogoutCheck::AskStore
        );
        m.load_all(&[mark(LogoutKind::Sid, "s", 100, 500)], 100);
        assert_eq!(
            m.check("https://iss", Some("s"), "u", Some(200), 100),
            LogoutCheck::Denied
        );
        assert_eq!(
            m.check("https://other", Some("s"), "u", Some(1), 100),
            LogoutCheck::Clear
        );
        assert_eq!(
            m.check("https://iss", Some("s"), "u", Some(1), 500),
            LogoutCheck::Clear,
            "expired"
        );
        m.apply(&[mark(LogoutKind::Sub, "u", 100, 500)], 100);
        assert_eq!(
            m.check("https://iss", None, "u", Some(100), 150),
            LogoutCheck::Denied
        );
        assert_eq!(
            m.check("https://iss", None, "u", Some(101), 150),
            LogoutCheck::Clear,
            "issued after"
        );
        assert_eq!(
            m.check("https://iss", None, "u", None, 150),
            LogoutCheck::Denied,
            "no iat"
        );
        assert_eq!(
            m.check("https://iss", Some("u"), "x", Some(1), 150),
            LogoutCheck::Clear,
            "kinds differ"
        );
        m.purge(500);
        assert!(m.is_empty());
    }

    #[test]
    fn full_set_overflows_and_a_fitting_reload_clears_it() {
        let m = LogoutMarks::new(1);
        m.load_all(&[], 0);
        m.apply(
            &[
                mark(LogoutKind::Sid, "a", 0, 100),
                mark(LogoutKind::Sid, "b", 0, 100),
            ],
            0,
        );
        assert!(m.is_overflowed());
        assert_eq!(
            m.check("https://iss", Some("b"), "u", Some(0), 0),
            LogoutCheck::AskStore
        );
        m.load_all(&[mark(LogoutKind::Sid, "a", 0, 100)], 0);
        assert!(!m.is_overflowed());
        assert_eq!(
            m.check("https://iss", Some("a"), "u", Some(0), 0),
            LogoutCheck::Denied
        );
    }
}
