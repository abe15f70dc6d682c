//! Structural checks done before any key is touched: segment count, the
//! protected header, and a peek at `iss` to choose the issuer.
//!
//! These run on untrusted bytes, so they are strict: duplicate top-level
//! claim names, `crit`, `alg: none` and JWE are refused here.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::JwtError;

/// What the header says, after validation.
#[derive(Debug)]
pub struct CheckedHeader {
    pub alg: Algorithm,
    pub kid: String,
}

/// Splits `header.payload.signature`, refusing JWE and anything else.
pub fn split(token: &str) -> Result<(&str, &str), JwtError> {
    let dots = token.bytes().filter(|b| *b == b'.').count();
    match dots {
        2 => {}
        4 => {
            return Err(JwtError::Malformed(
                "encrypted tokens (JWE) are not accepted",
            ));
        }
        _ => return Err(JwtError::Malformed("not a JWT (expected 3 segments)")),
    }
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("not a JWT (expected 3 segments)"));
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

/// The payload as a JSON object (for mapped claims, after verification).
pub fn payload_map(segment: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let text = b64_utf8(segment, "bad base64 in payload", "payload is not UTF-8").ok()?;
    serde_json::from_str(&text).ok()
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
    #[derive(serde::Deserialize)]
    struct Raw {
        alg: Option<String>,
        kid: Option<String>,
        typ: Option<String>,
        crit: Option<serde_json::Value>,
        enc: Option<serde_json::Value>,
        // jku, x5u, jwk, x5c: deliberately never read (RFC 8725 §3.10).
    }
    let text = b64_utf8(
        segment,
        "header is not valid base64url",
        "header is not valid UTF-8",
    )?;
    let raw: Raw = serde_json::from_str(&text)
        .map_err(|_| JwtError::Malformed("header is not a valid JSON object"))?;
    if raw.enc.is_some() {
        return Err(JwtError::Malformed(
            "encrypted tokens (JWE) are not accepted",
        ));
    }
    if raw.crit.is_some() {
        return Err(JwtError::Header(
            "critical header extensions (crit) are not supported",
        ));
    }
    let alg = match raw.alg.as_deref() {
        None => return Err(JwtError::Header("missing alg")),
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err(JwtError::Header("alg none is not accepted"));
        }
        Some(a) => Algorithm::from_str(a).map_err(|_| JwtError::Header("unsupported alg"))?,
    };
    match raw.typ.as_deref() {
        Some(typ) if !typs.iter().any(|t| typ.eq_ignore_ascii_case(t)) => {
            return Err(JwtError::Header("unexpected typ header"));
        }
        None if typ_required => return Err(JwtError::Header("missing typ header")),
        _ => {}
    }
    let kid = raw.kid.ok_or(JwtError::Header("missing kid"))?;
    if kid.is_empty() || kid.len() > 256 {
        return Err(JwtError::Header("invalid kid"));
    }
    Ok(CheckedHeader { alg, kid })
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
    let text = b64_utf8(
        segment,
        "payload is not valid base64url",
        "payload is not valid UTF-8",
    )?;
    let mut de = serde_json::Deserializer::from_str(&text);
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
    }
}
