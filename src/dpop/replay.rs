//! Refusing a replayed proof: each (key thumbprint, `jti`) is accepted once
//! while a proof carrying it could still pass the `iat` check.
//!
//! The cache is per replica. A proof replayed to another replica within the
//! window is accepted there once; it still only works for the same method,
//! URL and access token, for at most `max_age + 2 × leeway` (README,
//! "Sender-constrained tokens").

use std::time::Duration;

use moka::sync::Cache;

/// Seen proof ids, each remembered for the proof window.
#[derive(Clone)]
pub struct ReplayCache {
    seen: Cache<(String, String), ()>,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("entries", &self.seen.entry_count())
            .finish()
    }
}

impl ReplayCache {
    /// Remembers up to `capacity` ids, each for `window`.
    pub fn new(capacity: u64, window: Duration) -> Self {
        ReplayCache {
            seen: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
        }
    }

    /// True the first time (`jkt`, `jti`) is offered within the window;
    /// false for a replay. Atomic: of two concurrent offers, one wins.
    /// `or_insert_with`, not `or_insert`: moka's `or_insert` is a get then
    /// an insert, so two concurrent offers of one proof could both be
    /// "fresh"; `or_insert_with` runs through moka's per-key initializer,
    /// which lets exactly one caller insert.
    pub fn first_use(&self, jkt: &str, jti: &str) -> bool {
        self.seen
            .entry((jkt.to_owned(), jti.to_owned()))
            .or_insert_with(|| ())
            .is_fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_per_key() {
        let c = ReplayCache::new(100, Duration::from_secs(60));
        assert!(c.first_use("k1", "j1"));
        assert!(!c.first_use("k1", "j1"));
        // Another client may pick the same jti.
        assert!(c.first_use("k2", "j1"));
        assert!(c.first_use("k1", "j2"));
    }

    #[test]
    fn concurrent_offers_have_one_winner() {
        // Many rounds: with `or_insert` (get, then insert) two threads won
        // a round now and then, so one round alone passed by luck.
        let c = ReplayCache::new(100_000, Duration::from_secs(60));
        let barrier = std::sync::Barrier::new(8);
        for round in 0..300 {
            let jti = format!("jti-{round}");
            let wins: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            c.first_use("k", &jti) as usize
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(wins, 1, "round {round}");
        }
    }
}
