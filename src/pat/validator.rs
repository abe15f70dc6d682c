//! Cached PAT validation.
//!
//! Lookups are cached by token hash in a `quick_cache` cache (flat
//! per-shard tables: about 100 bytes per entry besides the grant, where
//! moka spent about 385 in seven allocations; benches/BENCHMARKS.md). Each
//! entry carries its own freshness deadline computed from an injectable
//! clock, so TTL behaviour is deterministic in tests; a stale entry is
//! reloaded when presented, and [`PatValidator::purge_stale`] (every minute,
//! from the server) reclaims the memory of those never presented again.
//! Store errors are never cached.
//!
//! Concurrent misses on one hash are coalesced into a single store query
//! through quick_cache's placeholders: the first miss puts a placeholder
//! for the hash (replacing a stale entry, if any) and loads; later callers
//! wait on it and read what it inserts. A loader that fails (store error,
//! spent budget, cancelled request) drops its placeholder and one waiter
//! takes over.
//!
//! Revocation and loads race. A revocation writes `Revoked` with a plain
//! `insert`, which replaces a pending placeholder; the loader's own insert
//! then fails (quick_cache inserts through a placeholder only while it is
//! still there), so a load that read "active" before the revocation can
//! never put its stale entry over the `Revoked` one; and if the load's
//! insert lands first, the revocation's overwrites it. Every revocation
//! also leaves a tombstone (a bounded set of recently revoked hashes, kept
//! longer than any entry a stale load could put), which covers what the
//! cache alone cannot: the answer a stale loader gives its own request,
//! and a load's entry read in the instant between the tombstone and the
//! `Revoked` write. (A `Revoked` entry evicted by capacity while the load
//! is in flight needs no tombstone: the load's placeholder is gone, so its
//! insert is refused all the same.) A load refuses to cache a tombstoned
//! hash as valid, and a cached valid entry whose hash is tombstoned is
//! answered as revoked.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use quick_cache::sync::{Cache, EntryAction, EntryResult};

use super::grant::GrantParts;
use super::hasher::TokenHasher;
use super::known::{KnownHashes, LookupBudget};
use super::local_jwt::{LocalCheck, LocalJwt};
use super::owners::OwnerStates;
use super::{PatConfig, PatGrant, PatIssuerKind, TokenHash, UsageTracker, format};
use crate::store::{HashVersion, Store, StoreError, TokenKind, TokenRecord};

/// Where presented-but-revoked token hashes go for reuse detection (a
/// rotated-away token revokes its whole chain; see `tokens::reuse`).
pub type ReuseSink = tokio::sync::mpsc::Sender<TokenHash>;

/// Source of "now"; injectable for tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Result of validating a presented PAT: what it grants, or why it is refused.
pub type PatOutcome = Result<Arc<PatGrant>, PatRejection>;

/// Why a presented PAT is refused (mapped to a 401 in `authz::deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatRejection {
    /// Failed the format/checksum check; nothing was looked up.
    #[error("malformed token")]
    Malformed,
    /// No such token (or not of the kind presented).
    #[error("unknown token")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token revoked")]
    Revoked,
    /// Its owner is disabled in Keycloak (`pat.owner_sync`): suspended.
    #[error("owner disabled")]
    OwnerDisabled,
    /// Its owner's issuer (`user_issuer`) is no longer in `issuers`: an
    /// operator removed the realm, so nobody vouches for the owner any more.
    /// Adding the issuer back restores the token.
    #[error("owner's issuer is not configured")]
    OwnerIssuerRemoved,
}

#[derive(Debug, Clone)]
enum State {
    Found(Arc<PatGrant>),
    Unknown,
    Revoked,
}

/// A cached lookup (32 bytes: it sits in the cache's table, inline).
#[derive(Debug, Clone)]
pub struct CacheEntry {
    state: State,
    fresh_until: DateTime<Utc>,
}

/// Cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
}

/// Validates PATs against the store through a cache. Cheap to clone.
#[derive(Clone)]
pub struct PatValidator {
    store: Store,
    prefix: Arc<str>,
    cache: Arc<Cache<TokenHash, CacheEntry>>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    /// Scope sets and issuers the cached grants share.
    parts: Arc<GrantParts>,
    clock: Clock,
    usage: UsageTracker,
    /// `pat.issuer: local-jwt`: the HS256 key (dev only).
    local_jwt: Option<Arc<LocalJwt>>,
    /// Set once by the server; revoked presentations are reported here.
    reuse_sink: Arc<std::sync::OnceLock<ReuseSink>>,
    /// Hashes reported recently, so a replayed revoked token is reported
    /// once per `cache_ttl`, not once per request.
    reuse_seen: moka::sync::Cache<TokenHash, ()>,
    /// Hashes revoked on this replica within the last `cache_ttl` (plus
    /// slack): see the module docs. LRU, so a new tombstone is never
    /// refused admission; bounded by `pat.cache_capacity`.
    tombstones: moka::sync::Cache<TokenHash, ()>,
    /// Hashes of active PATs: an opaque PAT outside it costs a store query
    /// only within `budget` (forged-token floods; see `pat::known`).
    known: Arc<KnownHashes>,
    budget: Arc<LookupBudget>,
    /// `pat.hash_key`: how opaque PATs are hashed (see `pat::hasher`).
    hasher: TokenHasher,
    /// PAT owners' synced states (`pat.owner_sync`), and the issuer synced.
    owners: Arc<OwnerStates>,
    owner_sync_issuer: Option<Arc<str>>,
}

/// How much longer than `pat.cache_ttl` a tombstone lives. A stale load's
/// entry is fresh until at most `cache_ttl` after the load *started* (before
/// the revocation), so `cache_ttl` already covers it; the slack absorbs a
/// clock step between the two readings.
const TOMBSTONE_SLACK: Duration = Duration::from_secs(60);

impl PatValidator {
    /// Builds a validator (and its [`UsageTracker`]; start its flusher with
    /// `validator.usage().start_flusher()`).
    pub fn new(store: Store, cfg: &PatConfig) -> Self {
        let cap = usize::try_from(cfg.cache_capacity).unwrap_or(usize::MAX);
        let cache = Arc::new(Cache::new(cap));
        PatValidator {
            usage: UsageTracker::new(store.clone(), cfg.last_used_flush, cap)
                .with_new_ip_events(cfg.new_ip_events),
            store,
            prefix: cfg.prefix.as_str().into(),
            cache,
            cache_ttl: cfg.cache_ttl,
            negative_ttl: cfg.negative_cache_ttl,
            parts: Arc::default(),
            clock: Arc::new(Utc::now),
            local_jwt: match (cfg.issuer, cfg.local_jwt_key.as_deref()) {
                (PatIssuerKind::LocalJwt, Some(k)) => Some(Arc::new(LocalJwt::new(k))),
                _ => None,
            },
            reuse_sink: Arc::default(),
            reuse_seen: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cfg.cache_ttl)
                .build(),
            tombstones: moka::sync::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(cfg.cache_ttl.saturating_add(TOMBSTONE_SLACK))
                .build(),
            known: Arc::default(),
            budget: Arc::default(),
            hasher: TokenHasher::new(cfg.hash_key.as_deref()),
            owners: Arc::default(),
            owner_sync_issuer: cfg
                .owner_sync
                .as_ref()
                .map(|o| Arc::from(o.issuer.as_str())),
        }
    }

    /// Reports revoked presentations to `sink` (reuse detection). Once.
    pub fn set_reuse_sink(&self, sink: ReuseSink) {
        let _ = self.reuse_sink.set(sink);
    }

    /// The local-jwt key, when `pat.issuer` is `local-jwt`.
    pub fn local_jwt(&self) -> Option<&Arc<LocalJwt>> {
        self.local_jwt.as_ref()
    }

    /// Whether `token` takes the local-jwt path: `pat.issuer` is
    /// `local-jwt` and the token is an HS256 JWT. No signature check yet.
    pub fn is_local_jwt(&self, token: &str) -> bool {
        self.local_jwt.as_ref().is_some_and(|lj| lj.is_ours(token))
    }

    /// `pat.issuer: local-jwt` tokens: `None` when local-jwt is off or the
    /// token is not an HS256 JWT (another path decides); otherwise the
    /// outcome: signature and `exp` first (no I/O), then registration by
    /// hash through the same cache as opaque PATs.
    pub async fn validate_local_jwt(&self, token: &str) -> Result<Option<PatOutcome>, StoreError> {
        let Some(lj) = &self.local_jwt else {
            return Ok(None);
        };
        match lj.check(token) {
            LocalCheck::NotOurs => Ok(None),
            LocalCheck::Invalid => Ok(Some(Err(PatRejection::Malformed))),
            LocalCheck::Expired => Ok(Some(Err(PatRejection::Expired))),
            LocalCheck::Signed => match self.lookup(format::hash(token), None, None).await? {
                Ok(rec) if rec.kind != TokenKind::Jwt => Ok(Some(Err(PatRejection::Unknown))),
                other => Ok(Some(other)),
            },
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The usage tracker fed by successful validations.
    pub fn usage(&self) -> &UsageTracker {
        &self.usage
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// PAT owners' synced states (empty unless `pat.owner_sync` is set).
    pub fn owners(&self) -> &Arc<OwnerStates> {
        &self.owners
    }

    /// The issuer `pat.owner_sync` follows, if set.
    pub fn owner_sync_issuer(&self) -> Option<&str> {
        self.owner_sync_issuer.as_deref()
    }

    /// How opaque PATs are hashed (creation uses the same).
    pub fn hasher(&self) -> &TokenHasher {
        &self.hasher
    }

    /// Validates a presented token. `Err` only for store failures (→ 503).
    pub async fn validate(&self, token: &str) -> Result<PatOutcome, StoreError> {
        if format::check(&self.prefix, token).is_err() {
            return Ok(Err(PatRejection::Malformed));
        }
        let (hash, version) = self.hasher.primary(token);
        self.lookup(hash, None, Some(version)).await
    }

    /// Validates a PAT-marked JWT (already signature-checked) by the SHA-256
    /// of the token, else by its `jti`, through the same cache. Only a
    /// record of kind `jwt` counts; anything else is `Unknown`. `Err` only
    /// for store failures (→ 503).
    pub async fn validate_jwt(
        &self,
        hash: TokenHash,
        jti: Option<&str>,
    ) -> Result<PatOutcome, StoreError> {
        self.lookup(hash, Some(jti), None).await
    }

    /// `jwt`: `None` for an opaque PAT, `Some(jti)` for a PAT-marked JWT.
    /// `opaque`: for an opaque PAT, the version `hash` is under (only rows
    /// of that version are accepted).
    async fn lookup(
        &self,
        hash: TokenHash,
        jwt: Option<Option<&str>>,
        opaque: Option<HashVersion>,
    ) -> Result<PatOutcome, StoreError> {
        let now = (self.clock)();
        if let Some(e) = self.cache.get(&hash)
            && e.fresh_until > now
        {
            crate::metrics::global().cache("pat", true);
            return Ok(self.outcome(&hash, &e, now));
        }
        crate::metrics::global().cache("pat", false);
        // Opaque PATs can be forged at will (public checksum): one whose hash
        // is not known to be active is looked up only within the budget, and
        // denied without I/O (and without a cache entry) past it. Signed
        // (JWT) PATs are not gated: forging one needs a signing key.
        let gated = jwt.is_none() && !self.known.may_exist(&hash);
        if gated && !self.budget.available() {
            return Ok(Err(PatRejection::Unknown));
        }
        // Coalesce: a fresh entry (put by a load we waited for) is the
        // answer; a stale one is swapped for our placeholder, and so is a
        // vacant slot. While we hold it, other misses on this hash wait.
        let fresh = |_: &TokenHash, e: &mut CacheEntry| {
            if e.fresh_until > (self.clock)() {
                EntryAction::Retain(e.clone())
            } else {
                EntryAction::ReplaceWithGuard
            }
        };
        let guard = match self.cache.entry_async(&hash, fresh).await {
            EntryResult::Retained(e) => return Ok(self.outcome(&hash, &e, (self.clock)())),
            EntryResult::Vacant(g) | EntryResult::Replaced(g, _) => g,
            // Neither is returned for `Retain`/`ReplaceWithGuard` without a
            // timeout; failing closed costs nothing.
            EntryResult::Removed(..) | EntryResult::Timeout => {
                return Ok(Err(PatRejection::Unknown));
            }
        };
        // Spent here, after coalescing, so concurrent misses on one hash
        // cost one unit, like one query. Without it the placeholder goes
        // (dropped) and nothing is cached.
        if gated && !self.budget.take() {
            return Ok(Err(PatRejection::Unknown));
        }
        // A store error drops the placeholder: not cached, a waiter retries.
        let mut rec = self.store.find_by_hash(&hash).await?;
        if let Some(v) = opaque {
            // A row counts only under its own hash version: a bare
            // SHA-256 planted as version 2 never matches, and with
            // a key a version-1 row is never looked up at all.
            rec = rec.filter(|r| r.hash_version == v);
        }
        if let Some(jti) = jwt {
            if rec.is_none()
                && let Some(jti) = jti
            {
                rec = self.store.find_by_jti(jti).await?;
            }
            rec = rec.filter(|r| r.kind == TokenKind::Jwt);
        }
        let now = (self.clock)();
        // Revoked on this replica while we were reading: what we read is
        // stale and must not be cached (or answered) as valid.
        if let Some(r) = rec.as_mut()
            && r.revoked_at.is_none()
            && self.tombstones.contains_key(&hash)
        {
            r.revoked_at = Some(now);
        }
        if jwt.is_none()
            && let Some(r) = &rec
            && r.revoked_at.is_none()
        {
            self.known.insert(hash);
        }
        let entry = entry_for(rec, now, self.cache_ttl, self.negative_ttl, &self.parts);
        // Refused when a revocation replaced or removed our placeholder
        // meanwhile: its entry stays (module docs).
        let _ = guard.insert(entry.clone());
        Ok(self.outcome(&hash, &entry, (self.clock)()))
    }

    fn outcome(&self, hash: &TokenHash, e: &CacheEntry, now: DateTime<Utc>) -> PatOutcome {
        match &e.state {
            State::Unknown => Err(PatRejection::Unknown),
            State::Revoked => self.revoked(hash),
            State::Found(rec) if rec.revoked => self.revoked(hash),
            // A load's entry can land after its tombstone check and before
            // the revocation's cache write (tombstone first); this catches
            // it, and the stale loader's answer to its own request.
            State::Found(_) if self.tombstones.contains_key(hash) => self.revoked(hash),
            State::Found(rec) if rec.expires_at <= now => Err(PatRejection::Expired),
            State::Found(rec) => {
                self.usage.record(rec.id, now);
                Ok(Arc::clone(rec))
            }
        }
    }

    /// A revoked token was presented: report it (at most once per
    /// `cache_ttl`) so the reuse detector can check whether it was rotated
    /// away. Never blocks; a full queue drops the report.
    fn revoked(&self, hash: &TokenHash) -> PatOutcome {
        self.report_revoked(hash);
        Err(PatRejection::Revoked)
    }

    /// Reports a presented revoked token to the reuse detector (if any).
    pub fn report_revoked(&self, hash: &TokenHash) {
        if let Some(sink) = self.reuse_sink.get()
            && !self.reuse_seen.contains_key(hash)
        {
            self.reuse_seen.insert(*hash, ());
            if sink.try_send(*hash).is_err() {
                tracing::warn!(
                    hash = %format::hash_prefix(hash),
                    "reuse-detection queue full; report dropped"
                );
            }
        }
    }

    /// Drops any cached lookup for `hash`, and any load of it in flight
    /// (its result is then not cached).
    pub async fn evict(&self, hash: &TokenHash) {
        self.cache.remove(hash);
    }

    /// Caches `hash` as revoked for `pat.cache_ttl` (revocation bus), and
    /// tombstones it so an in-flight load cannot bring it back.
    pub async fn mark_revoked(&self, hash: &TokenHash) {
        // Tombstone first: a load finishing between the two writes sees it.
        self.tombstones.insert(*hash, ());
        self.known.remove(hash);
        let now = (self.clock)();
        let entry = CacheEntry {
            state: State::Revoked,
            fresh_until: now + delta(self.cache_ttl),
        };
        // Replaces a load's placeholder too, so that load cannot cache.
        self.cache.insert(*hash, entry);
    }

    /// A token was created (here, or on another replica: bus, resync): its
    /// hash is worth a store lookup from now on. Never allows by itself.
    pub fn note_created(&self, hash: &TokenHash) {
        self.known.insert(*hash);
    }

    /// The set of active PAT hashes (loaded and refreshed by the resync loop).
    pub fn known(&self) -> &KnownHashes {
        &self.known
    }

    /// Drops cached lookups that are no longer fresh, so memory follows
    /// the tokens in use rather than staying at the high-water mark until
    /// capacity evicts them (a stale entry is reloaded when presented
    /// anyway). The server calls it every minute.
    pub fn purge_stale(&self) {
        let now = (self.clock)();
        self.cache.retain(|_, e| e.fresh_until > now);
    }

    /// Current cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            entries: self.cache.len() as u64,
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Positive entries live `min(cache_ttl, time until expires_at)`; unknown
/// ones `negative_cache_ttl`; revoked (permanent) and expired (permanent,
/// expiry is never extended) ones `cache_ttl`.
fn entry_for(
    rec: Option<TokenRecord>,
    now: DateTime<Utc>,
    ttl: Duration,
    neg: Duration,
    parts: &GrantParts,
) -> CacheEntry {
    let (state, ttl) = match rec {
        None => (State::Unknown, neg),
        Some(r) if r.revoked_at.is_some() => (State::Revoked, ttl),
        Some(r) => {
            let left = (r.expires_at - now).to_std().unwrap_or(Duration::ZERO);
            let t = if left.is_zero() { ttl } else { ttl.min(left) };
            (State::Found(Arc::new(PatGrant::new(r, parts))), t)
        }
    };
    CacheEntry {
        state,
        fresh_until: now + delta(ttl),
    }
}

impl std::fmt::Debug for PatValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatValidator")
            .field("prefix", &self.prefix)
            .field("store", &self.store.backend_name())
            .finish_non_exhaustive()
    }
}
