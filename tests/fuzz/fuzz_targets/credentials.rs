//! Credential extraction and PAT format.
//!
//! Input: 5 control bytes, then the text under test (lossy UTF-8):
//! * `[0]` prefix: low 7 bits pick one of [`PREFIXES`]; with the high bit set
//!   the prefix is the text's first line instead (any string, even invalid
//!   config), and the rest is the text;
//! * `[1]` `max_len` for `parse_authorization` (see [`max_len`]);
//! * `[2..4]` position and `[4]` kind of the mutation applied to a freshly
//!   generated token; the replacement character is the text's first char.
//!
//! Properties:
//! * `parse_authorization` never panics; a token it returns is a non-empty
//!   RFC 6750 b64token of at most `max_len` bytes, and the header is
//!   `Bearer` (or `DPoP`) + whitespace + that token (modulo outer whitespace);
//! * `pat::format::check` never panics and accepts exactly what an
//!   independent implementation of the format accepts;
//! * `generate` output always passes `check`; replacing, deleting or
//!   inserting one character, or swapping two adjacent different
//!   characters, always fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::authz::request::{Credential, parse_authorization, parse_authorization_with};
use portcullis::pat::format::{self, BODY_LEN, CHECKSUM_LEN};

const PREFIXES: [&str; 6] = ["pat_", "x", "acme-pat_", "ab", "P-_9", "pat"];

fn max_len(b: u8) -> usize {
    match b % 4 {
        0 => 8192,
        1 => usize::from(b),
        2 => 64,
        _ => usize::MAX,
    }
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The format, written from its description in the README: `<prefix>` then
/// 32 base62 characters then 6 base62 digits of CRC32(prefix + body),
/// zero-padded.
fn reference_ok(prefix: &str, token: &str) -> bool {
    let Some(rest) = token.strip_prefix(prefix) else {
        return false;
    };
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| ALPHABET.contains(&b)) {
        return false;
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    let crc = crc32fast::hash(format!("{prefix}{body}").as_bytes());
    let mut value: u64 = 0;
    for b in sum.bytes() {
        let digit = ALPHABET.iter().position(|a| *a == b).unwrap() as u64;
        value = value * 62 + digit;
    }
    value == u64::from(crc)
}

fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn check_pat(prefix: &str, token: &str) {
    let got = format::check(prefix, token);
    assert_eq!(
        got.is_ok(),
        reference_ok(prefix, token),
        "check({prefix:?}, {token:?}) = {got:?}"
    );
    assert_eq!(format::parse(prefix, token), got);
    let _ = format::display_hint(prefix, token);
}

fn mutate(token: &str, pos: usize, kind: u8, with: char) -> Option<String> {
    let chars: Vec<char> = token.chars().collect();
    let i = pos % chars.len();
    let mut out = chars.clone();
    match kind % 4 {
        0 => {
            if chars[i] == with {
                return None;
            }
            out[i] = with;
        }
        1 => {
            out.remove(i);
        }
        2 => out.insert(i, with),
        _ => {
            let j = (i + 1) % chars.len();
            if chars[i] == chars[j] {
                return None;
            }
            out.swap(i, j);
        }
    }
    Some(out.into_iter().collect())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let (ctl, rest) = data.split_at(5);
    let text = String::from_utf8_lossy(rest);
    let (prefix, text): (&str, &str) = if ctl[0] & 0x80 != 0 {
        text.split_once('\n').unwrap_or((&text, ""))
    } else {
        (PREFIXES[usize::from(ctl[0]) % PREFIXES.len()], &text)
    };
    let max = max_len(ctl[1]);

    // 1. Authorization header parsing.
    match parse_authorization(text, max) {
        Ok(Credential::Bearer(t)) => {
            assert!(!t.is_empty() && t.len() <= max, "{text:?} -> {t:?}");
            assert!(is_b64token(t), "{text:?} -> {t:?}");
            let v = text.trim_matches([' ', '\t']);
            assert!(
                v.len() > 6 && v[..6].eq_ignore_ascii_case("bearer"),
                "{text:?}"
            );
            assert!(v[6..].starts_with([' ', '\t']), "{text:?}");
            assert_eq!(v[6..].trim_start_matches([' ', '\t']), t, "{text:?}");
            check_pat(prefix, t);
        }
        // `DPoP <token>`: the same token rules; the proof is read from the
        // `DPoP` header later.
        Ok(Credential::Dpop { token: t, proof: "" }) => {
            assert!(!t.is_empty() && t.len() <= max, "{text:?} -> {t:?}");
            assert!(is_b64token(t), "{text:?} -> {t:?}");
            let v = text.trim_matches([' ', '\t']);
            assert!(v.len() > 4 && v[..4].eq_ignore_ascii_case("dpop"), "{text:?}");
            assert!(v[4..].starts_with([' ', '\t']), "{text:?}");
            assert_eq!(v[4..].trim_start_matches([' ', '\t']), t, "{text:?}");
        }
        Ok(Credential::None) => panic!("parse_authorization returned None for {text:?}"),
        Ok(other) => panic!("parse_authorization returned {other:?} for {text:?}"),
        Err(_) => {}
    }
    // Basic (when enabled): a returned token is a non-empty b64token.
    if let Ok(c) = parse_authorization_with(text, max, true) {
        let t = c.token().expect("a credential, never None");
        assert!(!t.is_empty() && t.len() <= max && is_b64token(t), "{text:?}");
    }
    // A header built from a valid token is always accepted as that token.
    if is_b64token(text) && text.len() <= max {
        let header = format!("Bearer {text}");
        assert_eq!(
            parse_authorization(&header, max),
            Ok(Credential::Bearer(text)),
            "{header:?}"
        );
    }

    // 2. PAT format on the raw text.
    check_pat(prefix, text);

    // 3. Round trip: generated tokens pass, one-character changes fail.
    let token = format::generate(prefix);
    assert_eq!(
        format::check(prefix, &token),
        Ok(()),
        "{prefix:?} {token:?}"
    );
    assert!(reference_ok(prefix, &token), "{prefix:?} {token:?}");
    let with = text.chars().next().unwrap_or('a');
    let pos = usize::from(u16::from_le_bytes([ctl[2], ctl[3]]));
    if let Some(bad) = mutate(&token, pos, ctl[4], with) {
        assert!(
            format::check(prefix, &bad).is_err(),
            "mutation accepted: {prefix:?} {token:?} -> {bad:?}"
        );
    }
});
