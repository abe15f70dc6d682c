//! How opaque PATs are hashed for storage.
//!
//! Version 1 is a bare SHA-256 of the token; version 2 is
//! HMAC-SHA256(`pat.hash_key`, SHA-256(token)). With a key, an attacker who
//! can write the database but not read the server's environment cannot
//! compute the stored value of a token they made up, so they cannot plant a
//! usable one. Each row records its version (migration 0003); a row is
//! accepted only when its hash matches the token under *its own* version,
//! and with a key only version 2 is ever accepted: a version-1 row (the
//! column's default, so the easiest thing to plant) never authenticates.
//!
//! The MAC is over the SHA-256 rather than the token so that legacy rows can
//! be moved to version 2 without their tokens: `portcullis token rekey`
//! ([`TokenHasher::rekey`], run once by the operator when the key is set)
//! rewrites every version-1 opaque row. Nothing does that on its own, since
//! the server cannot tell a legacy row from a planted one.
//!
//! JWT-kind PATs (Keycloak-exchanged, local-jwt) stay on SHA-256: they are
//! signed, so a planted row alone cannot make one, and they can also be
//! found by `jti`, which a pepper would not protect anyway.

use aws_lc_rs::hmac;

use super::{TokenHash, format};
use crate::store::{HashVersion, Store, StoreError};

/// Hashes opaque PATs under the configured pepper (if any). Cheap to clone.
#[derive(Clone)]
pub struct TokenHasher {
    key: Option<hmac::Key>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHasher")
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl TokenHasher {
    /// `key`: `pat.hash_key` (already validated: at least 32 bytes).
    pub fn new(key: Option<&str>) -> Self {
        TokenHasher {
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes())),
        }
    }

    /// Is a pepper configured?
    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// What a new opaque token is stored under: HMAC (version 2) with a key,
    /// SHA-256 (version 1) without.
    pub fn primary(&self, token: &str) -> (TokenHash, HashVersion) {
        match &self.key {
            Some(k) => (mac(k, &format::hash(token)), HashVersion::Hmac),
            None => (format::hash(token), HashVersion::Sha256),
        }
    }

    /// The version-2 hash of a token whose version-1 hash is `legacy`;
    /// `None` without a key.
    pub fn rekey(&self, legacy: &TokenHash) -> Option<TokenHash> {
        self.key.as_ref().map(|k| mac(k, legacy))
    }
}

/// `portcullis token rekey`: moves every version-1 opaque row to version 2
/// under the hasher's key; returns how many rows moved. Idempotent (a row
/// moved by a concurrent run is skipped). Without a key, moves nothing.
pub async fn rekey_legacy(store: &Store, hasher: &TokenHasher) -> Result<u64, StoreError> {
    let mut moved = 0;
    for (id, old) in store.legacy_opaque_hashes().await? {
        let Some(new) = hasher.rekey(&old) else {
            return Ok(0);
        };
        if store.upgrade_hash(id, &old, &new).await?.is_some() {
            moved += 1;
        }
    }
    Ok(moved)
}

fn mac(key: &hmac::Key, sha256: &TokenHash) -> TokenHash {
    let tag = hmac::sign(key, sha256);
    let t = tag.as_ref();
    let mut out = [0u8; 32];
    // HMAC-SHA256 tags are 32 bytes; `min` keeps this panic-free regardless.
    let n = t.len().min(32);
    out[..n].copy_from_slice(&t[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_differs_from_sha256_and_depends_on_the_key() {
        let t = "pat_abc";
        let a = TokenHasher::new(Some(&"k".repeat(32)));
        let b = TokenHasher::new(Some(&"j".repeat(32)));
        let plain = TokenHasher::new(None);
        assert_eq!(a.primary(t).1, HashVersion::Hmac);
        assert_eq!(plain.primary(t), (format::hash(t), HashVersion::Sha256));
        assert_ne!(a.primary(t).0, format::hash(t));
        assert_ne!(a.primary(t).0, b.primary(t).0);
        assert!(format!("{a:?}").contains("keyed: true"));
        // A legacy row re-keyed without its token equals a fresh version 2.
        assert_eq!(a.rekey(&format::hash(t)), Some(a.primary(t).0));
        assert_eq!(plain.rekey(&format::hash(t)), None);
    }
}
