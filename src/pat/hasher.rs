//! How opaque PATs are hashed for storage.
//!
//! Version 1 is a bare SHA-256 of the token; version 2 is
//! HMAC-SHA256(`pat.hash_key`, token). With a key, an attacker who can write
//! the database but not read the server's environment cannot compute the
//! stored value of a token they made up, so they cannot plant a usable one.
//! Each row records its version (migration 0003); a row is accepted only
//! when its hash matches the token under *its own* version, so a bare
//! SHA-256 planted as version 2 never matches. Legacy (version 1) rows keep
//! working and are upgraded to version 2 on first use when a key is set.
//!
//! JWT-kind PATs (Keycloak-exchanged, local-jwt) stay on SHA-256: they are
//! signed, so a planted row alone cannot make one, and they can also be
//! found by `jti`, which a pepper would not protect anyway.

use aws_lc_rs::hmac;

use super::{TokenHash, format};
use crate::store::HashVersion;

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
            Some(k) => (mac(k, token), HashVersion::Hmac),
            None => (format::hash(token), HashVersion::Sha256),
        }
    }

    /// The hash of `token` under `version`; `None` for HMAC without a key.
    pub fn under(&self, token: &str, version: HashVersion) -> Option<TokenHash> {
        match version {
            HashVersion::Sha256 => Some(format::hash(token)),
            HashVersion::Hmac => self.key.as_ref().map(|k| mac(k, token)),
        }
    }
}

fn mac(key: &hmac::Key, token: &str) -> TokenHash {
    let tag = hmac::sign(key, token.as_bytes());
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
        assert_eq!(plain.under(t, HashVersion::Hmac), None);
        assert!(format!("{a:?}").contains("keyed: true"));
    }
}
