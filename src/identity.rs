//! Who the caller is, once a credential has been verified. Every credential
//! path (login JWT, service account, PAT) produces an [`Identity`]; policy
//! decides on it and the response builder turns it into `x-auth-*` headers
//! (written from these fields on every allow: nothing rendered is kept
//! here, so a cached identity costs only its own values).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::policy::CredentialKind;

/// An identity's scopes: immutable and shared. Every token of every user
/// carries one of a few scope sets, so the JWT verifier interns them and a
/// cached token holds a pointer, not its own copies.
pub type Scopes = Arc<[String]>;

/// Most distinct values an [`Interner`] keeps. Real issuers hand out a few
/// scope sets (one per role combination), audience lists and PAT-owner
/// issuers; past this, new values are simply not shared.
pub const INTERNED_MAX: usize = 4096;

/// Shares equal immutable values (scope sets, audience lists, issuers)
/// between cached tokens, so each cached token holds a pointer instead of
/// its own allocations. Immutable, so sharing exposes nothing of one token
/// to another.
#[derive(Debug)]
pub struct Interner<T: ?Sized>(Mutex<HashSet<Arc<T>>>);

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner(Mutex::new(HashSet::new()))
    }
}

impl<T: ?Sized + Eq + Hash> Interner<T> {
    /// The shared value equal to `v`.
    pub fn intern<B: Borrow<T>>(&self, v: B) -> Arc<T>
    where
        Arc<T>: From<B>,
    {
        // A poisoned lock only loses sharing, never a value.
        let Ok(mut kept) = self.0.lock() else {
            return Arc::from(v);
        };
        if let Some(s) = kept.get(v.borrow()) {
            return s.clone();
        }
        let s: Arc<T> = Arc::from(v);
        if kept.len() < INTERNED_MAX {
            kept.insert(s.clone());
        }
        s
    }

    /// Number of values kept.
    pub fn len(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A verified caller. Shared (`Arc`) so a cached verification costs no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Credential kind, reported as `x-auth-method`.
    pub kind: CredentialKind,
    /// `sub` of the token or the PAT's owner (`x-auth-subject`).
    pub subject: String,
    /// `preferred_username` (`x-auth-username`).
    pub username: Option<String>,
    /// `email` (`x-auth-email`).
    pub email: Option<String>,
    /// `azp`, the OAuth client (`x-auth-client`).
    pub client: Option<String>,
    /// Effective scopes after mapping (`x-auth-scopes`).
    pub scopes: Scopes,
    /// PAT id (`x-auth-token-id`), never the token itself.
    pub token_id: Option<String>,
    /// Issuer (`x-auth-issuer`): `iss`, or a PAT owner's issuer.
    pub issuer: Option<Arc<str>>,
    /// Expiry as Unix seconds.
    pub expires_at: i64,
    /// Claims named in `identity_headers.claims`, as (claim, value); only
    /// JWTs carry them.
    pub claims: Vec<(Arc<str>, String)>,
    /// What writing this identity's headers learned once (filled on its
    /// first allow; unknown in a clone, ignored by `==`). One byte in the
    /// struct's padding: nothing rendered is kept here.
    pub rendered: RenderHints,
}

/// Whether an identity's header values are free of control characters
/// (then an allow copies them as they are), learned on its first allow
/// (`authz::render`). Like every field of an identity it is fixed once the
/// identity is shared (`Arc`); a clone starts unknown, since a cloned
/// identity is usually then changed.
#[derive(Default)]
pub struct RenderHints(AtomicU8);

const UNKNOWN: u8 = 0;
const CLEAN: u8 = 1;
const NEEDS_REPLACING: u8 = 2;

impl RenderHints {
    /// `Some(true)` when no header value needs a replacement, `None` when
    /// not yet learned.
    pub fn clean(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            CLEAN => Some(true),
            NEEDS_REPLACING => Some(false),
            _ => None,
        }
    }

    /// Records what was learned.
    pub fn set_clean(&self, clean: bool) {
        let v = if clean { CLEAN } else { NEEDS_REPLACING };
        self.0.store(v, Ordering::Relaxed);
    }
}

impl Clone for RenderHints {
    fn clone(&self) -> Self {
        RenderHints(AtomicU8::new(UNKNOWN))
    }
}

impl PartialEq for RenderHints {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RenderHints {}

impl std::fmt::Debug for RenderHints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RenderHints(clean: {:?})", self.clean())
    }
}
