//! Structural checks done before any key is touched: segment count, the
//! protected header, and a peek at `iss` to choose the issuer.
//!
//! These run on untrusted bytes, so they are strict: duplicate top-level
//! claim names, `crit`, `alg: none` and JWE are refused here.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{JwtError, payload};

/// What the header says, after validation.
#[derive(Debug)]
pub struct CheckedHeader {
    pub alg: Algorithm,
    pub kid: String,
    /// Every member a string, none repeated, no `jwk` or `x5c`: a header
    /// jsonwebtoken's `Header` reads without fail, so the claims may be
    /// read by [`super::payload::read`] instead of `jsonwebtoken::decode`.
    pub plain: bool,
}

/// Splits `header.payload.signature`, refusing JWE and anything else.
pub fn split(token: &str) -> Result<(&str, &str), JwtError> {
    // `split` on a `char` finds the dots with memchr; counting them with a
    // byte filter cost about 3k instructions per token.
    let mut parts = token.split('.');
    let h = parts.next().unwrap_or_default();
    let (p, s) = match (parts.next(), parts.next(), parts.count()) {
        (Some(p), Some(s), 0) => (p, s),
        (Some(_), Some(_), 2) => {
            return Err(JwtError::Malformed(
                "encrypted tokens (JWE) are not accepted",
            ));
        }
        _ => return Err(JwtError::Malformed("not a JWT (expected 3 segments)")),
    };
    if h.is_empty() || p.is_empty() {
        return Err(JwtError::Malformed("empty JWT segment"));
    }
    if s.is_empty() {
        return Err(JwtError::Malformed("unsigned token"));
    }
    Ok((h, p))
}

fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed(what))
}

/// A segment that must be UTF-8 JSON (RFC 7519 §7.2). serde_json does not
/// check the UTF-8 of strings it skips (unknown names), so check it here.
fn b64_utf8(segment: &str, what: &'static str, not_utf8: &'static str) -> Result<String, JwtError> {
    String::from_utf8(b64(segment, what)?).map_err(|_| JwtError::Malformed(not_utf8))
}

/// Header `typ` values an access token may carry (absent is accepted too).
const ACCESS_TYPS: &[&str] = &["JWT", "at+jwt", "application/at+jwt"];
/// Header `typ` values of a back-channel logout token (required).
pub const LOGOUT_TYPS: &[&str] = &["logout+jwt", "application/logout+jwt"];

/// Parses and vets an access token's protected header.
pub fn header(segment: &str) -> Result<CheckedHeader, JwtError> {
    header_typed(segment, ACCESS_TYPS, false)
}

/// Parses and vets a protected header whose `typ` must be one of `typs`
/// (case-insensitive), or absent unless `typ_required`.
pub fn header_typed(
    segment: &str,
    typs: &[&str],
    typ_required: bool,
) -> Result<CheckedHeader, JwtError> {
    let text = b64_utf8(
        segment,
        "header is not valid base64url",
        "header is not valid UTF-8",
    )?;
    let (fields, plain) = match plain_header(&text) {
        Some(fields) => (fields, true),
        None => (raw_header(&text)?, false),
    };
    if fields.enc {
        return Err(JwtError::Malformed(
            "encrypted tokens (JWE) are not accepted",
        ));
    }
    if fields.crit {
        return Err(JwtError::Header(
            "critical header extensions (crit) are not supported",
        ));
    }
    let alg = match fields.alg.as_deref() {
        None => return Err(JwtError::Header("missing alg")),
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err(JwtError::Header("alg none is not accepted"));
        }
        Some(a) => Algorithm::from_str(a).map_err(|_| JwtError::Header("unsupported alg"))?,
    };
    match fields.typ.as_deref() {
        Some(typ) if !typs.iter().any(|t| typ.eq_ignore_ascii_case(t)) => {
            return Err(JwtError::Header("unexpected typ header"));
        }
        None if typ_required => return Err(JwtError::Header("missing typ header")),
        _ => {}
    }
    let kid = fields.kid.ok_or(JwtError::Header("missing kid"))?;
    if kid.is_empty() || kid.len() > 256 {
        return Err(JwtError::Header("invalid kid"));
    }
    Ok(CheckedHeader {
        alg,
        kid: kid.into_owned(),
        plain,
    })
}

/// The header members the checks read.
struct HeaderFields<'a> {
    alg: Option<Cow<'a, str>>,
    kid: Option<Cow<'a, str>>,
    typ: Option<Cow<'a, str>>,
    crit: bool,
    enc: bool,
}

/// The header read as it always was: `alg`, `kid` and `typ` strings or
/// `null`, no repeated `alg`, `kid`, `typ`, `crit` or `enc`, anything else
/// ignored.
fn raw_header(text: &str) -> Result<HeaderFields<'static>, JwtError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        alg: Option<String>,
        kid: Option<String>,
        typ: Option<String>,
        crit: Option<serde_json::Value>,
        enc: Option<serde_json::Value>,
        // jku, x5u, jwk, x5c: deliberately never read (RFC 8725 §3.10).
    }
    let raw: Raw = serde_json::from_str(text)
        .map_err(|_| JwtError::Malformed("header is not a valid JSON object"))?;
    Ok(HeaderFields {
        alg: raw.alg.map(Cow::Owned),
        kid: raw.kid.map(Cow::Owned),
        typ: raw.typ.map(Cow::Owned),
        crit: raw.crit.is_some(),
        enc: raw.enc.is_some(),
    })
}

/// The common header in one borrowing pass, or `None`: an object of at
/// most `payload::MAX_MEMBERS` members, all strings, no name repeated, and
/// none of `jwk`, `x5c`, `crit`, `enc`. [`raw_header`] reads such a header
/// the same way, and so does jsonwebtoken's `Header` (every member it types
/// is a string or unknown, and unknown members land in its string map),
/// which is what lets the claims skip jsonwebtoken (`CheckedHeader::plain`).
fn plain_header(text: &str) -> Option<HeaderFields<'_>> {
    struct Plain;
    impl<'de> Visitor<'de> for Plain {
        type Value = HeaderFields<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(4);
            let mut h = HeaderFields {
                alg: None,
                kid: None,
                typ: None,
                crit: false,
                enc: false,
            };
            while let Some(key) = map.next_key::<payload::Text<'de>>()? {
                let key = key.0;
                // The scan is quadratic: a forged header of thousands of
                // members goes to `raw_header` (`payload::MAX_MEMBERS`).
                if seen.len() == payload::MAX_MEMBERS
                    || seen.contains(&key)
                    || matches!(&*key, "jwk" | "x5c" | "crit" | "enc")
                {
                    return Err(serde::de::Error::custom("not a plain header"));
                }
                let value = map.next_value::<payload::Text<'de>>()?.0;
                match &*key {
                    "alg" => h.alg = Some(value),
                    "kid" => h.kid = Some(value),
                    "typ" => h.typ = Some(value),
                    _ => {}
                }
                seen.push(key);
            }
            Ok(h)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(Plain).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// The payload as UTF-8 JSON text, refused as [`peek`] refuses it.
pub fn payload_text(segment: &str) -> Result<String, JwtError> {
    b64_utf8(
        segment,
        "payload is not valid base64url",
        "payload is not valid UTF-8",
    )
}

/// What [`peek`] read from the payload.
#[derive(Debug)]
pub struct Peeked {
    pub iss: String,
    /// The configured PAT marker claim (`pat.jwt_marker.claim`), if present.
    pub marker: Option<String>,
}

/// Decodes the payload just far enough to read `iss` and the PAT marker
/// claim named `marker`, refusing duplicate top-level names (a
/// parser-differential trick: two `iss` or two `exp`). The values are only
/// used once the signature has been verified. A marker claim that is not a
/// string is refused rather than ignored: a token that looks like a PAT must
/// never be waved through as a plain login token.
pub fn peek(segment: &str, marker: &str) -> Result<Peeked, JwtError> {
    peek_text(&payload_text(segment)?, marker)
}

/// [`peek`] on the payload already decoded by [`payload_text`].
pub fn peek_text(text: &str, marker: &str) -> Result<Peeked, JwtError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let (iss, marker) = de.deserialize_map(Peek { marker }).map_err(|e| {
        let e = e.to_string();
        if e.starts_with("duplicate claim") {
            JwtError::Malformed("duplicate claim name")
        } else if e.starts_with("marker claim") {
            JwtError::Claims("PAT marker claim is not a string")
        } else {
            JwtError::Malformed("payload is not a valid JSON object")
        }
    })?;
    de.end()
        .map_err(|_| JwtError::Malformed("payload is not a valid JSON object"))?;
    let iss = iss.ok_or(JwtError::Claims("missing iss"))?;
    Ok(Peeked { iss, marker })
}

/// [`peek`] for `iss` alone.
#[cfg(test)]
pub fn peek_issuer(segment: &str) -> Result<String, JwtError> {
    peek(segment, "").map(|p| p.iss)
}

struct Peek<'m> {
    marker: &'m str,
}

impl<'de> Visitor<'de> for Peek<'_> {
    type Value = (Option<String>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let (mut iss, mut marker) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom("duplicate claim"));
            }
            if key == "iss" {
                iss = map.next_value::<Option<String>>()?;
            } else if !self.marker.is_empty() && key == self.marker {
                match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(v) => marker = Some(v),
                    serde_json::Value::Null => {}
                    _ => return Err(serde::de::Error::custom("marker claim")),
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((iss, marker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn header_checks() {
        let ok = header(&enc(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#)).unwrap();
        assert_eq!(ok.alg, Algorithm::RS256);
        let cases = [
            (r#"{"alg":"none","kid":"k"}"#, "alg none"),
            (r#"{"alg":"nOnE","kid":"k"}"#, "alg none"),
            (r#"{"kid":"k"}"#, "missing alg"),
            (r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#, "crit"),
            (r#"{"alg":"RS256"}"#, "missing kid"),
            (r#"{"alg":"XX1","kid":"k"}"#, "unsupported alg"),
            (r#"{"alg":"RS256","kid":"k","typ":"JWE"}"#, "typ"),
            (r#"{"alg":"RS256","kid":"k","typ":"logout+jwt"}"#, "typ"),
            (r#"{"alg":"RS256","alg":"none","kid":"k"}"#, "JSON"),
            (r#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"k"}"#, "JWE"),
        ];
        for (h, want) in cases {
            let err = header(&enc(h)).unwrap_err().to_string();
            assert!(err.contains(want), "{h}: {err}");
        }
        assert!(header("!!!").is_err());
    }

    /// As `payload::read`: the plain reading's repeat check is a scan, so
    /// a forged header of thousands of members goes to `raw_header`.
    #[test]
    fn a_header_of_many_members_is_not_read_as_plain() {
        let members = |n: usize| -> String { (0..n).map(|i| format!(r#","m{i}":"v""#)).collect() };
        let text = |n| enc(&format!(r#"{{"alg":"RS256","kid":"k"{}}}"#, members(n)));
        assert!(header(&text(8)).unwrap().plain);
        let many = header(&text(5000)).unwrap();
        assert_eq!(
            (many.alg, many.kid.as_str(), many.plain),
            (Algorithm::RS256, "k", false)
        );
    }

    #[test]
    fn peek_rejects_duplicates() {
        assert_eq!(peek_issuer(&enc(r#"{"iss":"a","x":1}"#)).unwrap(), "a");
        let e = peek_issuer(&enc(r#"{"iss":"a","iss":"b"}"#)).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = peek_issuer(&enc(r#"{"iss":"a","exp":1,"exp":2}"#)).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert!(peek_issuer(&enc(r#"{"sub":"x"}"#)).is_err());
        assert!(peek_issuer(&enc("[1]")).is_err());
    }

    #[test]
    fn peek_reads_the_configured_marker_claim() {
        let p = peek(&enc(r#"{"iss":"a","use":"pat","token_use":"x"}"#), "use").unwrap();
        assert_eq!((p.iss.as_str(), p.marker.as_deref()), ("a", Some("pat")));
        let p = peek(&enc(r#"{"iss":"a","token_use":"pat"}"#), "use").unwrap();
        assert_eq!(p.marker, None);
        let e = peek(&enc(r#"{"iss":"a","use":["pat"]}"#), "use").unwrap_err();
        assert_eq!(e, JwtError::Claims("PAT marker claim is not a string"));
        let e = peek(&enc(r#"{"iss":"a","use":"pat","use":"x"}"#), "use").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn split_counts_segments() {
        assert!(split("a.b.c").is_ok());
        assert!(split("a.b.c.d.e").unwrap_err().to_string().contains("JWE"));
        assert!(split("a.b").is_err());
        assert!(split("a.b.").is_err());
        for bad in [
            "",
            "abc",
            ".",
            "..",
            "a.b.c.d",
            "a.b.c.d.e.f",
            "a..c",
            ".b.c",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
        assert_eq!(split("a.b.c").unwrap(), ("a", "b"));
        let e = split("a.b.c.d").unwrap_err().to_string();
        assert!(e.contains("3 segments"), "{e}");
    }
}
