//! An access token's claims read in one pass, borrowing from the payload.
//!
//! The cold path used to read the payload three times: [`super::token::peek`]
//! for `iss` and duplicate names, then `jsonwebtoken::decode` twice (our
//! claims struct and its own validation struct), besides base64-decoding it
//! twice and reading the header three times (benches/BENCHMARKS.md, "Stop
//! 26"). [`read`] does all of it once, for the payloads real issuers send.
//!
//! It answers only when it is sure to agree with that older path: it takes
//! the common shape (no duplicate names, `iss`, `sub` and `exp` present and
//! of the expected types, and so on, see [`read`]) and returns `None` for
//! anything else. The caller then takes the older path, which decides as it
//! always did, in the same order. So every refusal, and the reason given,
//! stays what `peek` and jsonwebtoken's `decode` say; [`validate`] repeats
//! jsonwebtoken 10's registered-claims checks only for the shapes [`read`]
//! lets through. `jwt::signature_tests` holds the two paths to the same
//! answer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scopes::Roles;
use super::{Claims, JwtError, OneOrMany};

/// Claims read by [`read`]: what [`Claims`] holds, plus what `peek` and
/// jsonwebtoken's validation read.
pub struct Read<'a> {
    pub iss: Cow<'a, str>,
    /// The PAT marker claim's value (`pat.jwt_marker.claim`).
    pub marker: Option<Cow<'a, str>>,
    /// `nbf`, when present (a non-negative integer).
    pub nbf: Option<u64>,
    pub claims: Claims<'a>,
}

/// A JSON string, borrowed unless it had escapes; nothing else.
pub struct Text<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Text)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A string or `null` (`None`); anything else is an error, which sends the
/// token down the older path.
fn opt_str<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Text<'de>>>()?.map(|s| s.0))
}

/// `aud`: a string or an array of strings.
struct Aud<'de>(OneOrMany<'de>);

impl<'de> de::Deserialize<'de> for Aud<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(s) = seq.next_element::<Text<'de>>()? {
                    all.push(s.0);
                }
                Ok(OneOrMany::Many(all))
            }
        }
        d.deserialize_any(V).map(Aud)
    }
}

/// A JSON integer that fits `i64`, nothing else (`exp`, `iat`, `nbf`).
struct Int(i64);

impl<'de> de::Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                i64::try_from(v).map_err(|_| E::custom("out of range"))
            }
        }
        d.deserialize_any(V).map(Int)
    }
}

/// Any value; kept only when it is a string (`client_id`, which a custom
/// mapper may fill with anything: see `jwt::credential_kind`).
struct AnyStr<'de>(Option<Cow<'de, str>>);

/// [`AnyStr`] for the derived [`Claims`] (jsonwebtoken's path, owned).
pub fn any_str<'de, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    let s: AnyStr<'de> = de::Deserialize::deserialize(d)?;
    Ok(s.0.map(|c| Cow::Owned(c.into_owned())))
}

impl<'de> de::Deserialize<'de> for AnyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| None)
            }
        }
        d.deserialize_any(V).map(AnyStr)
    }
}

/// The claim names [`read`] interprets (the marker claim must be none of
/// them for [`read`] to be used: `peek` would read it as the marker and
/// jsonwebtoken as itself).
pub const READ_NAMES: &[&str] = &[
    "iss",
    "sub",
    "exp",
    "nbf",
    "iat",
    "typ",
    "azp",
    "preferred_username",
    "email",
    "scope",
    "sid",
    "jti",
    "aud",
    "client_id",
    "clientId",
    "realm_access",
    "resource_access",
    "cnf",
];

/// Reads `payload` (the decoded, UTF-8 JSON text) in one pass, or `None`
/// when the older path must decide. Taken: a JSON object of at most
/// [`MAX_MEMBERS`] members without duplicate names, with `iss` and `sub`
/// strings, `exp` an integer from 0 to `i64::MAX`, `aud` a string or an
/// array of strings, `nbf` absent or such an integer, `iat` absent, `null`
/// or an integer, the other strings of
/// [`Claims`] strings or `null`, the marker claim a string or `null`, and the
/// roles and `cnf` of the shapes [`Claims`] reads.
pub fn read<'a>(payload: &'a str, marker: &str) -> Option<Read<'a>> {
    let mut de = serde_json::Deserializer::from_str(payload);
    let read = de.deserialize_map(Reader { marker }).ok()?;
    de.end().ok()?;
    Some(read)
}

/// The most members [`read`] (and `token::plain_header`) scan for
/// repeats. Keycloak's access tokens carry about 15 to 30; a forged
/// payload fits some 800 in the default 8 KiB token and 6,000 at 64 KiB
/// (`jwt.max_token_bytes`'s ceiling), which a scan compares n²/2 times
/// (18 million) before any signature is looked at: 150 ms a token in a
/// debug build where the older path took 3.5 ms.
pub const MAX_MEMBERS: usize = 64;

struct Reader<'m> {
    marker: &'m str,
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Read<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let fail = || de::Error::custom("not the common shape");
        // Member names seen so far: a token has a dozen or two, so a scan
        // beats hashing. A scan is quadratic, though, and these bytes are
        // not yet vouched for by any signature: past `MAX_MEMBERS` the
        // older path (a hash set in `peek`) decides.
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(24);
        let (mut iss, mut marker, mut nbf, mut exp) = (None, None, None, None);
        let mut c = Claims::default();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if seen.len() == MAX_MEMBERS || seen.contains(&key) {
                return Err(fail());
            }
            match &*key {
                "iss" => iss = Some(map.next_value::<Text<'de>>()?.0),
                "sub" => c.sub = Some(map.next_value::<Text<'de>>()?.0),
                "exp" => {
                    let v = map.next_value::<Int>()?.0;
                    if v < 0 {
                        return Err(fail());
                    }
                    exp = Some(v);
                }
                "nbf" => {
                    let v = map.next_value::<Int>()?.0;
                    nbf = Some(u64::try_from(v).map_err(|_| fail())?);
                }
                "iat" => c.iat = map.next_value::<Option<Int>>()?.map(|i| i.0),
                "typ" => c.typ = opt_str(&mut map)?,
                "azp" => c.azp = opt_str(&mut map)?,
                "preferred_username" => c.preferred_username = opt_str(&mut map)?,
                "email" => c.email = opt_str(&mut map)?,
                "scope" => c.scope = opt_str(&mut map)?,
                "sid" => c.sid = opt_str(&mut map)?,
                "jti" => c.jti = opt_str(&mut map)?,
                "aud" => c.aud = Some(map.next_value::<Aud<'de>>()?.0),
                "client_id" => c.client_id = map.next_value::<AnyStr<'de>>()?.0,
                "clientId" => c.client_id_legacy = map.next_value::<AnyStr<'de>>()?.0,
                "realm_access" => c.realm_access = map.next_value::<Option<Roles>>()?,
                "resource_access" => {
                    c.resource_access = map.next_value::<Option<HashMap<String, Roles>>>()?;
                }
                "cnf" => c.cnf = map.next_value::<Option<serde_json::Value>>()?,
                k if !self.marker.is_empty() && k == self.marker => {
                    marker = opt_str(&mut map)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            seen.push(key);
        }
        let (Some(iss), Some(exp), Some(_), Some(_)) = (iss, exp, &c.sub, &c.aud) else {
            return Err(fail());
        };
        c.exp = Some(exp);
        Ok(Read {
            iss,
            marker,
            nbf,
            claims: c,
        })
    }
}

/// jsonwebtoken 10's registered-claims checks (`validation::validate`) as
/// `validation_for` configures them, for a payload [`read`] took (so `exp`,
/// `iss`, `aud` and `sub` are present and well-formed, and none of
/// jsonwebtoken's format errors can arise): `exp` and `nbf` against the
/// clock with the issuer's leeway, `iss` one of `issuers`, `aud` sharing a
/// value with `audiences`.
pub fn validate(
    read: &Read<'_>,
    now: u64,
    leeway: u64,
    issuer: &str,
    audiences: &[String],
) -> Result<(), JwtError> {
    let exp = read.claims.exp.and_then(|e| u64::try_from(e).ok());
    let Some(exp) = exp else {
        return Err(JwtError::Claims("missing exp"));
    };
    // jsonwebtoken: `exp < now - leeway` in u64 (leeway is at most 300).
    if exp < now.saturating_sub(leeway) {
        return Err(JwtError::Expired);
    }
    if read.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(JwtError::NotYetValid);
    }
    if read.iss != issuer {
        return Err(JwtError::UnknownIssuer);
    }
    let accepted = |a: &str| audiences.iter().any(|x| x == a);
    match &read.claims.aud {
        Some(OneOrMany::One(a)) if accepted(a) => Ok(()),
        Some(OneOrMany::Many(all)) if all.iter().any(|a| accepted(a)) => Ok(()),
        _ => Err(JwtError::Audience),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON: &str = r#"{"iss":"https://kc/realms/r","sub":"u1","aud":["api","account"],
        "exp":2000000000,"iat":1700000000,"typ":"Bearer","azp":"web","scope":"openid a:b",
        "preferred_username":"alice","email":"a@example.org","jti":"j","sid":"s",
        "realm_access":{"roles":["r"]},"token_use":"pat","x":{"y":[1,2]}}"#;

    #[test]
    fn the_common_shape_is_read_once_borrowing_its_strings() {
        let r = read(COMMON, "token_use").expect("common shape");
        assert_eq!(r.iss, "https://kc/realms/r");
        assert_eq!(r.marker.as_deref(), Some("pat"));
        assert_eq!(r.claims.exp, Some(2_000_000_000));
        assert_eq!(r.claims.iat, Some(1_700_000_000));
        assert!(matches!(r.claims.sub, Some(Cow::Borrowed("u1"))));
        assert!(matches!(&r.claims.aud, Some(OneOrMany::Many(a)) if a.len() == 2));
        assert_eq!(
            r.claims.realm_access.map(|r| r.roles),
            Some(vec!["r".into()])
        );
        // An escape costs a copy, not a refusal.
        let r = read(r#"{"iss":"i","sub":"\u0075","aud":"api","exp":1}"#, "").unwrap();
        assert!(matches!(r.claims.sub, Some(Cow::Owned(ref s)) if s == "u"));
    }

    #[test]
    fn other_shapes_are_left_to_the_older_path() {
        let base = r#""iss":"i","sub":"u","aud":"api","exp":1"#;
        for (what, extra) in [
            ("duplicate", r#","sub":"v""#),
            ("duplicate by escape", r#","\u0073ub":"v""#),
            ("nbf float", r#","nbf":1.5"#),
            ("nbf negative", r#","nbf":-1"#),
            ("nbf null", r#","nbf":null"#),
            ("iat float", r#","iat":1.0"#),
            ("typ number", r#","typ":1"#),
            ("marker number", r#","token_use":1"#),
            ("roles not a list", r#","realm_access":{"roles":"r"}"#),
        ] {
            let text = format!("{{{base}{extra}}}");
            assert!(read(&text, "token_use").is_none(), "{what}");
        }
        for (what, text) in [
            ("no iss", r#"{"sub":"u","aud":"api","exp":1}"#),
            ("no sub", r#"{"iss":"i","aud":"api","exp":1}"#),
            ("no aud", r#"{"iss":"i","sub":"u","exp":1}"#),
            ("no exp", r#"{"iss":"i","sub":"u","aud":"api"}"#),
            ("sub null", r#"{"iss":"i","sub":null,"aud":"api","exp":1}"#),
            ("aud null", r#"{"iss":"i","sub":"u","aud":null,"exp":1}"#),
            ("aud numbers", r#"{"iss":"i","sub":"u","aud":[1],"exp":1}"#),
            (
                "exp negative",
                r#"{"iss":"i","sub":"u","aud":"api","exp":-1}"#,
            ),
            (
                "exp float",
                r#"{"iss":"i","sub":"u","aud":"api","exp":1e3}"#,
            ),
            (
                "exp huge",
                r#"{"iss":"i","sub":"u","aud":"api","exp":18446744073709551615}"#,
            ),
            ("trailing", r#"{"iss":"i","sub":"u","aud":"api","exp":1} 1"#),
            ("array", r#"[{"iss":"i","sub":"u","aud":"api","exp":1}]"#),
        ] {
            assert!(read(text, "").is_none(), "{what}");
        }
    }

    /// The repeat check scans the names seen so far: fine for the two or
    /// three dozen members of a real token, quadratic for a forged payload
    /// of thousands (some 800 fit in the default 8 KiB token, 6,000 in
    /// 64 KiB), and this runs before any signature is checked. Past a real
    /// token's count, the older path (`peek`'s hash set) decides.
    #[test]
    fn a_payload_of_many_members_is_left_to_the_older_path() {
        let members = |n: usize| -> String { (0..n).map(|i| format!(r#","m{i}":0"#)).collect() };
        let text = |n| {
            format!(
                r#"{{"iss":"i","sub":"u","aud":"api","exp":1{}}}"#,
                members(n)
            )
        };
        assert!(read(&text(40), "").is_some());
        assert!(read(&text(5000), "").is_none());
    }

    #[test]
    fn validate_checks_as_jsonwebtoken_does() {
        let text = r#"{"iss":"i","sub":"u","aud":["x","api"],"exp":1000,"nbf":900}"#;
        let r = read(text, "").unwrap();
        let auds = ["api".to_owned()];
        assert_eq!(validate(&r, 1000, 0, "i", &auds), Ok(()));
        // `exp` passes up to and including `now - leeway`.
        assert_eq!(validate(&r, 1060, 60, "i", &auds), Ok(()));
        assert_eq!(validate(&r, 1061, 60, "i", &auds), Err(JwtError::Expired));
        assert_eq!(
            validate(&r, 839, 60, "i", &auds),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(validate(&r, 840, 60, "i", &auds), Ok(()));
        assert_eq!(
            validate(&r, 1000, 0, "j", &auds),
            Err(JwtError::UnknownIssuer)
        );
        let other = ["y".to_owned()];
        assert_eq!(validate(&r, 1000, 0, "i", &other), Err(JwtError::Audience));
        assert_eq!(validate(&r, 1000, 0, "i", &[]), Err(JwtError::Audience));
        let empty = read(r#"{"iss":"i","sub":"u","aud":[],"exp":1000}"#, "").unwrap();
        assert_eq!(
            validate(&empty, 1000, 0, "i", &auds),
            Err(JwtError::Audience)
        );
    }
}
