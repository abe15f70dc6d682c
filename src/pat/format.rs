//! Opaque personal access token format: `<prefix><body><checksum>`.
//!
//! * `body`: [`BODY_LEN`] base62 characters drawn from the OS CSPRNG
//!   (≈190 bits of entropy);
//! * `checksum`: CRC32 of `prefix + body`, base62-encoded and left-padded
//!   with `'0'` to [`CHECKSUM_LEN`] characters.
//!
//! The checksum lets [`check`] reject typos and random garbage without any
//! I/O. Only [`hash`] (SHA-256 of the whole token) is ever stored; logs carry
//! [`hash_prefix`] or the token id, never the raw token.

use rand::{RngCore, TryRngCore, rngs::OsRng};

/// SHA-256 of a whole token: the only form in which a token is stored.
pub type TokenHash = [u8; 32];

/// Number of random base62 characters in a token body.
pub const BODY_LEN: usize = 32;
/// Number of base62 characters of the CRC32 checksum.
pub const CHECKSUM_LEN: usize = 6;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed token. Never contains the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("token does not start with the configured prefix")]
    Prefix,
    #[error("token has the wrong length")]
    Length,
    #[error("token contains characters outside [0-9A-Za-z]")]
    Charset,
    #[error("token checksum does not match")]
    Checksum,
}

/// Encodes `n` in base62, left-padded with `'0'` to [`CHECKSUM_LEN`] chars.
/// (`u32::MAX` < 62^6, so six characters always suffice.)
fn checksum_chars(n: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    let mut n = n;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

fn checksum(prefix: &str, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix.as_bytes());
    h.update(body);
    checksum_chars(h.finalize())
}

fn fill_random(buf: &mut [u8]) {
    if let Err(err) = OsRng.try_fill_bytes(buf) {
        // ThreadRng is a ChaCha CSPRNG seeded from the OS; only reached if the
        // OS source failed for this one call.
        tracing::error!(error = %err, "OS RNG failed; falling back to OS-seeded thread RNG");
        rand::rng().fill_bytes(buf);
    }
}

/// Generates a fresh token `<prefix><32 base62><6 base62 checksum>`.
pub fn generate(prefix: &str) -> String {
    let mut body = Vec::with_capacity(BODY_LEN);
    let mut buf = [0u8; 64];
    while body.len() < BODY_LEN {
        fill_random(&mut buf);
        // Rejection sampling: 248 = 4 * 62, so `b % 62` is unbiased below it.
        body.extend(
            buf.iter()
                .filter(|&&b| b < 248)
                .map(|&b| ALPHABET[(b % 62) as usize])
                .take(BODY_LEN - body.len()),
        );
    }
    let sum = checksum(prefix, &body);
    let mut token = String::with_capacity(prefix.len() + BODY_LEN + CHECKSUM_LEN);
    token.push_str(prefix);
    token.extend(body.iter().map(|&b| char::from(b)));
    token.extend(sum.iter().map(|&b| char::from(b)));
    token
}

/// Checks prefix, length, charset and checksum. No I/O.
pub fn check(prefix: &str, token: &str) -> Result<(), Malformed> {
    let rest = token.strip_prefix(prefix).ok_or(Malformed::Prefix)?;
    let rest = rest.as_bytes();
    if rest.len() != BODY_LEN + CHECKSUM_LEN {
        return Err(Malformed::Length);
    }
    if !rest.iter().all(u8::is_ascii_alphanumeric) {
        return Err(Malformed::Charset);
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if checksum(prefix, body) != sum {
        return Err(Malformed::Checksum);
    }
    Ok(())
}

/// Alias of [`check`].
pub fn parse(prefix: &str, token: &str) -> Result<(), Malformed> {
    check(prefix, token)
}

/// SHA-256 of the whole token (prefix included), with aws-lc's assembly
/// (see `jwt::token_hash`).
pub fn hash(token: &str) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    // SHA-256 output is 32 bytes by definition.
    out.copy_from_slice(d.as_ref());
    out
}

/// First 8 hex characters of a token hash: safe to log.
pub fn hash_prefix(hash: &TokenHash) -> String {
    hex::encode(&hash[..4])
}

/// `prefix + first 4 body chars + "…"`, shown to users to recognise a token.
pub fn display_hint(prefix: &str, token: &str) -> String {
    let body = token.strip_prefix(prefix).unwrap_or(token);
    let head: String = body.chars().take(4).collect();
    format!("{prefix}{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored PAT hashes are plain SHA-256 (FIPS 180-2 test vectors):
    /// changing the implementation must not change a byte.
    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            hex::encode(hash(long)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn generate_then_check() {
        for prefix in ["pat_", "x", "acme-pat_"] {
            let t = generate(prefix);
            assert_eq!(t.len(), prefix.len() + BODY_LEN + CHECKSUM_LEN);
            assert!(t.starts_with(prefix));
            assert_eq!(check(prefix, &t), Ok(()));
        }
        assert_ne!(generate("pat_"), generate("pat_"));
    }

    #[test]
    fn checksum_padding() {
        assert_eq!(&checksum_chars(0), b"000000");
        assert_eq!(&checksum_chars(61), b"00000z");
        assert_eq!(&checksum_chars(62), b"000010");
        assert_eq!(&checksum_chars(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn rejects() {
        let t = generate("pat_");
        assert_eq!(check("tok_", &t), Err(Malformed::Prefix));
        assert_eq!(check("pat_", &t[..t.len() - 1]), Err(Malformed::Length));
        assert_eq!(check("pat_", &format!("{t}a")), Err(Malformed::Length));
        let mut bad = t.clone().into_bytes();
        bad[6] = b'-';
        assert_eq!(
            check("pat_", &String::from_utf8(bad).unwrap_or_default()),
            Err(Malformed::Charset)
        );
        // Flip one body character: the checksum must catch it.
        let mut bytes = t.clone().into_bytes();
        bytes[5] = if bytes[5] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(bytes).unwrap_or_default();
        assert_eq!(check("pat_", &flipped), Err(Malformed::Checksum));
        // Multi-byte characters never panic.
        let weird = format!("pat_{}", "é".repeat(19));
        assert!(check("pat_", &weird).is_err());
        assert_eq!(check("pat_", ""), Err(Malformed::Prefix));
    }

    #[test]
    fn hash_and_hint() {
        let t = generate("pat_");
        let h = hash(&t);
        assert_eq!(h, hash(&t));
        assert_eq!(hash_prefix(&h).len(), 8);
        let hint = display_hint("pat_", &t);
        assert_eq!(hint, format!("pat_{}…", &t[4..8]));
        // Malformed errors never echo the token.
        assert!(!Malformed::Checksum.to_string().contains(&t));
    }
}
