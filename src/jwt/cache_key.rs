//! [`CacheKeys`]: how a token becomes its verified-cache key.

use std::sync::Arc;

/// The verified-token cache's key for a token: a 128-bit MAC of the token
/// under a secret drawn at start-up, the tag of AES-256-GCM-SIV (RFC 8452)
/// over no plaintext with the token as associated data and a fixed nonce.
///
/// What that computes is `AES(POLYVAL(token, length))`: a universal hash,
/// then a block cipher, both under keys derived from the secret. That is a
/// pseudorandom function: two different tokens share a key with
/// probability about 2⁻¹²⁰ (RFC 8452's bound for a kilobyte), and the
/// keys' bits say nothing about the secret. aws-lc runs it with AES-NI and
/// carry-less multiplication: about 300 ns for a Keycloak JWT, where keyed
/// BLAKE3 took about 1,200 and SHA-256 about 860 on the same machine
/// (benches/BENCHMARKS.md).
///
/// Why not [`super::token_hash`]: the key never leaves memory, is never stored and
/// never compared across replicas, so it need not be SHA-256; every warm
/// Check computes it over the whole token.
///
/// What a hit relies on: to land on another token's entry, a client must
/// send a different string with the same tag, and a tag is never shown to
/// anyone. Without the secret that is a 2⁻¹²⁰ guess; even with it, aiming
/// at a token's tag needs the token itself.
#[derive(Clone)]
pub struct CacheKeys {
    /// `None` when the system had no randomness, or aws-lc refused the key
    /// (it takes any 32 bytes): then nothing is cached, and every token is
    /// verified.
    mac: Option<Arc<aws_lc_rs::aead::LessSafeKey>>,
}

/// A verified-token cache key ([`CacheKeys::of`]).
pub type CacheKey = [u8; 16];

impl CacheKeys {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn random() -> CacheKeys {
        let mut secret = [0u8; 32];
        // The system RNG fails only when the kernel has no entropy source
        // at all. A public secret would still not reach another token's
        // entry (see above), but lets anyone make two strings collide, so
        // nothing is cached then: every JWT is verified.
        if aws_lc_rs::rand::fill(&mut secret).is_err() {
            tracing::error!("no system randomness for the JWT cache key: every JWT is verified");
            return CacheKeys { mac: None };
        }
        CacheKeys::with_secret(&secret)
    }

    fn with_secret(secret: &[u8; 32]) -> CacheKeys {
        use aws_lc_rs::aead::{AES_256_GCM_SIV, LessSafeKey, UnboundKey};
        let mac = UnboundKey::new(&AES_256_GCM_SIV, secret)
            .map(|k| Arc::new(LessSafeKey::new(k)))
            .ok();
        if mac.is_none() {
            tracing::error!("no JWT cache key (AES-256-GCM-SIV refused it): every JWT is verified");
        }
        CacheKeys { mac }
    }

    /// The cache key of `token`; `None` (the token is then verified, never
    /// looked up or cached) only for input beyond GCM-SIV's limits, which
    /// the token size limit keeps far away.
    pub fn of(&self, token: &str) -> Option<CacheKey> {
        use aws_lc_rs::aead::{Aad, Nonce};
        // One nonce for every token: the tag is then a deterministic
        // function of the token, which is what a cache key must be. Nothing
        // is encrypted, so the nonce reuse GCM-SIV tolerates costs nothing.
        let nonce = Nonce::assume_unique_for_key([0u8; 12]);
        let tag = self
            .mac
            .as_ref()?
            .seal_in_place_separate_tag(nonce, Aad::from(token.as_bytes()), &mut [])
            .ok()?;
        tag.as_ref().try_into().ok()
    }
}

/// Never prints the secret.
impl std::fmt::Debug for CacheKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKeys(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_always_gets_the_same_key() {
        let keys = CacheKeys::with_secret(&[7; 32]);
        assert_eq!(keys.of("a.b.c"), keys.of("a.b.c"));
        assert!(keys.of("a.b.c").is_some());
    }

    /// Tokens that differ anywhere (one byte, a trailing byte, the length)
    /// get different keys.
    #[test]
    fn different_tokens_get_different_keys() {
        let keys = CacheKeys::with_secret(&[7; 32]);
        let base = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(keys.of(base)));
        for i in 0..base.len() {
            let mut b = base.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert!(seen.insert(keys.of(&t)), "byte {i}");
        }
        // Same blocks, other length: the length is part of the MAC.
        assert!(seen.insert(keys.of(&base[..base.len() - 1])));
        assert!(seen.insert(keys.of(&format!("{base}A"))));
        assert!(seen.insert(keys.of("")));
    }

    /// The key depends on the secret: another process (or a restart)
    /// cannot predict this one's keys.
    #[test]
    fn the_key_depends_on_the_secret() {
        let (a, b) = (
            CacheKeys::with_secret(&[1; 32]),
            CacheKeys::with_secret(&[2; 32]),
        );
        assert_ne!(a.of("a.b.c"), b.of("a.b.c"));
        assert_ne!(
            CacheKeys::random().of("a.b.c"),
            CacheKeys::random().of("a.b.c")
        );
    }

    /// Without a key nothing is cached: no token has a cache key.
    #[test]
    fn no_key_means_no_cache_key() {
        assert_eq!(CacheKeys { mac: None }.of("a.b.c"), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert_eq!(
            format!("{:?}", CacheKeys::with_secret(&[9; 32])),
            "CacheKeys(<secret>)"
        );
    }
}
