//! Which token hashes are worth a store query.
//!
//! The PAT checksum is public CRC32, so anyone can mint well-formed tokens;
//! without this, each distinct one would cost a store query. [`KnownHashes`]
//! holds the hash of every active (neither revoked nor expired at load)
//! PAT, 32 bytes each (plus the hash set's overhead), loaded by the resync
//! loop and kept current by creations on this replica, the bus (`new:`
//! items) and the resync loop (tokens created since its watermark). A hash
//! outside the set is looked up only within a small global [`LookupBudget`]
//! (for a token created on another replica that has not reached this one
//! yet); past it, it is denied without I/O. Until the set has loaded, every
//! hash may be looked up, as before.
//!
//! The set only ever *enables* a store lookup: it never allows anything by
//! itself, so a forged bus item or a stale entry costs at most one query.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use super::TokenHash;

/// Burst of store lookups for hashes outside the set.
pub const BUDGET_BURST: u32 = 50;
/// Sustained rate of such lookups, per second.
pub const BUDGET_PER_SEC: u32 = 20;

/// The hashes of active PATs (see the module docs).
#[derive(Debug, Default)]
pub struct KnownHashes {
    loaded: AtomicBool,
    // std lock: held for a hash-set operation, never across `.await`.
    set: RwLock<HashSet<TokenHash>>,
}

impl KnownHashes {
    /// Replaces the set with a full load and marks it loaded.
    pub fn load_all(&self, hashes: impl IntoIterator<Item = TokenHash>) {
        let fresh: HashSet<TokenHash> = hashes.into_iter().collect();
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        *set = fresh;
        self.loaded.store(true, Ordering::Release);
    }

    /// Has a full load happened?
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Adds a created (or found active) token's hash.
    pub fn insert(&self, hash: TokenHash) {
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash);
    }

    /// Drops a revoked token's hash.
    pub fn remove(&self, hash: &TokenHash) {
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// Is `hash` worth a store lookup without spending budget? True while
    /// the set is not loaded.
    pub fn may_exist(&self, hash: &TokenHash) -> bool {
        !self.is_loaded()
            || self
                .set
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(hash)
    }

    /// Number of hashes held.
    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no hash is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A token bucket of store lookups for hashes outside [`KnownHashes`],
/// shared by the whole replica.
#[derive(Debug)]
pub struct LookupBudget {
    state: Mutex<Bucket>,
    burst: f64,
    per_sec: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl LookupBudget {
    pub fn new(burst: u32, per_sec: u32) -> Self {
        LookupBudget {
            state: Mutex::new(Bucket {
                tokens: f64::from(burst),
                at: Instant::now(),
            }),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
        }
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * self.per_sec).min(self.burst);
        b.at = now;
    }

    /// Is at least one lookup available (without spending it)?
    pub fn available(&self) -> bool {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b);
        b.tokens >= 1.0
    }

    /// Spends one lookup; false when none is left.
    pub fn take(&self) -> bool {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for LookupBudget {
    fn default() -> Self {
        LookupBudget::new(BUDGET_BURST, BUDGET_PER_SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unloaded_set_allows_every_lookup_loaded_only_known() {
        let k = KnownHashes::default();
        assert!(k.may_exist(&[1; 32]));
        k.load_all([[2; 32]]);
        assert!(!k.may_exist(&[1; 32]));
        assert!(k.may_exist(&[2; 32]));
        k.insert([1; 32]);
        assert!(k.may_exist(&[1; 32]));
        k.remove(&[2; 32]);
        assert!(!k.may_exist(&[2; 32]));
    }

    #[test]
    fn budget_is_capped_at_its_burst() {
        let b = LookupBudget::new(3, 0);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        assert!(!b.available());
    }
}
