//! The one-pass reading ([`super::payload`]) against the path it replaced
//! for the common shape: `token::peek` for `iss` and the PAT marker, then
//! `jsonwebtoken::decode` with its signature step for the claims and their
//! validation. `signature_tests` compares parsed keys with unparsed ones on
//! a verifier that reads claims once either way; here the reference reads
//! nothing once (`read_claims` off, no parsed keys), so it takes the older
//! path from the `iss` peek on, and the header is checked against the
//! header reading of before the change, kept below.
//!
//! Payloads come from a seeded generator (names spelled with escapes,
//! repeated, dropped; values of every JSON type and number spelling that
//! matters to `exp`, `nbf`, `iat`, `aud`, roles and `cnf`), all properly
//! signed so each reaches the claims.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::keys::{KeySet, VerifyKey, parse_jwks};
use super::signature::ParsedKeys;
use super::signature_tests::{ISS, Signer, answer, ec, sign_text};
use super::{IssuerConfig, IssuerKeys, JwtConfig, JwtError, Verifier, token, unix_now};

/// splitmix64: a fixed sequence per seed, so a failure names its token.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, all: &'a [T]) -> &'a T {
        &all[self.below(all.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The header check as it was before `plain_header` (168279e): what it
/// accepted and the `alg` and `kid` it read.
fn old_header(text: &str) -> Result<(Algorithm, String), JwtError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        alg: Option<String>,
        kid: Option<String>,
        typ: Option<String>,
        crit: Option<serde_json::Value>,
        enc: Option<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_str(text)
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
        Some(typ)
            if !["JWT", "at+jwt", "application/at+jwt"]
                .iter()
                .any(|t| typ.eq_ignore_ascii_case(t)) =>
        {
            return Err(JwtError::Header("unexpected typ header"));
        }
        _ => {}
    }
    let kid = raw.kid.ok_or(JwtError::Header("missing kid"))?;
    if kid.is_empty() || kid.len() > 256 {
        return Err(JwtError::Header("invalid kid"));
    }
    Ok((alg, kid))
}

/// A member name as it may be spelled in JSON text: plain, one character
/// escaped, every character escaped, or not quite the name.
fn spell(rng: &mut Rng, name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    match rng.below(10) {
        0 => {
            let i = rng.below(name.len());
            name.char_indices()
                .map(|(j, c)| match j == i {
                    true => format!("\\u{:04x}", c as u32),
                    false => c.to_string(),
                })
                .collect()
        }
        1 => name
            .chars()
            .map(|c| format!("\\u{:04X}", c as u32))
            .collect(),
        2 => match rng.below(4) {
            0 => name.to_uppercase(),
            1 => format!("{name} "),
            2 => format!("{name}\\u0000"),
            _ => format!("\\ufeff{name}"),
        },
        _ => name.to_owned(),
    }
}

/// Values, as JSON text, for any member.
fn values(now: i64) -> Vec<String> {
    let mut v: Vec<String> = [
        "null",
        "true",
        "false",
        r#""""#,
        r#""api""#,
        r#""\u0061pi""#,
        r#""api ""#,
        r#""API""#,
        r#""other""#,
        r#""Bearer""#,
        r#""DPoP""#,
        r#""ID""#,
        r#""web""#,
        r#""pat""#,
        r#""openid orders:read orders:write""#,
        r#""admin""#,
        "0",
        "-1",
        "-0",
        "0.0",
        "-0.0",
        "1.5",
        "1e10",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "[]",
        r#"["api"]"#,
        r#"["api","api"]"#,
        r#"["other","api"]"#,
        r#"["other"]"#,
        r#"[""]"#,
        r#"[["api"]]"#,
        r#"["api",1]"#,
        r#"["api",null]"#,
        "[null]",
        "{}",
        r#"{"roles":["orders:write"]}"#,
        r#"{"roles":["orders:write"],"roles":[]}"#,
        r#"{"roles":null}"#,
        r#"{"roles":"orders:write"}"#,
        r#"[["orders:write"]]"#,
        r#"{"api":{"roles":["orders:write"]}}"#,
        r#"{"api":[["orders:write"]]}"#,
        r#"{"api":{"roles":["orders:write"]},"api":{"roles":[]}}"#,
        r#"{"jkt":"thumb"}"#,
        r#"{"jkt":""}"#,
        r#"{"jkt":1}"#,
        r#"{"jkt":null}"#,
        r#"{"jkt":"a","jkt":"b"}"#,
        r#"{"\u006akt":"thumb"}"#,
        r#"{"x5t#S256":"t"}"#,
        r#"{"api":"x"}"#,
    ]
    .map(str::to_owned)
    .to_vec();
    for t in [
        now,
        now + 600,
        now - 3600,
        now + 3600,
        now - 60,
        now - 61,
        now + 60,
        now + 61,
        now - 30,
        now - 31,
        now + 30,
        now + 31,
        now - 300,
        now - 301,
        now + 300,
        now + 301,
    ] {
        v.push(t.to_string());
        v.push(format!("{t}.0"));
        v.push(format!("{t}e0"));
        v.push(format!("{t}.4"));
        v.push(format!(" {t} "));
        v.push(format!("\"{t}\""));
        v.push(format!("[{t}]"));
    }
    v.push(format!("\"{ISS}\""));
    v.push(format!("\"{}\"", ISS.replace('/', "\\/")));
    v.push(format!("\"{ISS}/\""));
    v.push(format!("[\"{ISS}\"]"));
    v.push(format!("\"{}\"", ISS.to_uppercase()));
    v.push(format!("{}1{}", "[".repeat(130), "]".repeat(130)));
    v
}

const NAMES: &[&str] = &[
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
    "token_use",
    "pat_marker",
    "scp",
    "x",
    "",
];

/// A payload near the common shape, changed by up to five random steps.
fn payload(rng: &mut Rng, now: i64, values: &[String]) -> String {
    let mut members: Vec<(String, String)> = vec![
        ("iss".into(), format!("\"{ISS}\"")),
        ("sub".into(), "\"user-1\"".into()),
        ("aud".into(), r#"["api"]"#.into()),
        ("exp".into(), (now + 600).to_string()),
        ("iat".into(), now.to_string()),
        ("typ".into(), "\"Bearer\"".into()),
        ("azp".into(), "\"web\"".into()),
        ("jti".into(), "\"jti-1\"".into()),
        ("sid".into(), "\"sid-1\"".into()),
        ("scope".into(), "\"openid orders:read\"".into()),
    ];
    for _ in 0..rng.below(6) {
        let name = rng.pick(NAMES).to_string();
        let value = rng.pick(values).clone();
        match rng.below(5) {
            // Replace (or add) the member.
            0 | 1 => match members.iter_mut().find(|(n, _)| *n == name) {
                Some(m) => m.1 = value,
                None => members.push((spell(rng, &name), value)),
            },
            // Add, perhaps a second time under another spelling.
            2 => {
                let at = rng.below(members.len() + 1);
                members.insert(at, (spell(rng, &name), value));
            }
            // Drop.
            3 => members.retain(|(n, _)| *n != name),
            // Respell an existing member's name.
            _ => {
                let i = rng.below(members.len().max(1));
                if let Some(m) = members.get_mut(i) {
                    m.0 = spell(rng, &m.0.clone());
                }
            }
        }
    }
    let body = members
        .iter()
        .map(|(n, v)| format!("\"{n}\":{v}"))
        .collect::<Vec<_>>()
        .join(",");
    match rng.below(40) {
        0 => format!(" {{{body}}}\n"),
        1 => format!("\u{feff}{{{body}}}"),
        2 => format!("{{{body}}} {{}}"),
        3 => format!("{{{body},}}"),
        _ => format!("{{{body}}}"),
    }
}

/// Headers: mostly plain, some that only the older reading takes.
fn header(rng: &mut Rng, kid: &str) -> String {
    let all = [
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"at+jwt"}}"#),
        format!(r#"{{"\u0061lg":"ES256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"ES\u0032\u00356","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","x":1}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","x":null}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":null}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","cty":"JWT"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","zip":"DEF"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","b64":false}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","b64":"false"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","crit":["b64"]}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","\u0063rit":["b64"]}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","x":"1","x":"2"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","\u0078":"1","x":"2"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","alg":"ES256"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","\u0061lg":"none"}}"#),
        format!(r#"{{"alg":"es256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"ES384","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","jwk":"x"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","x5c":"x"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","x5t#S256":"x"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","enc":"A256GCM"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","url":"u","nonce":"n"}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}"}} "#),
        format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","x":{{"y":"z"}}}}"#),
    ];
    match rng.chance(70) {
        true => all[0].clone(),
        false => rng.pick(&all).clone(),
    }
}

fn verifier(cfg: &IssuerConfig, body: &str, parsed: bool, marker: &str) -> Verifier {
    let keys = parse_jwks(body.as_bytes()).unwrap().keys;
    let keys = match parsed {
        true => keys,
        false => KeySet::from_keys(keys.kids().map(|kid| {
            let k = keys.get(kid).unwrap();
            VerifyKey {
                kid: k.kid.clone(),
                key_type: k.key_type,
                alg: k.alg,
                key: k.key.clone(),
                parsed: ParsedKeys::default(),
                fingerprint: k.fingerprint,
            }
        })),
    };
    let mut keys = Some(keys);
    let mut v = Verifier::new(std::slice::from_ref(cfg), &JwtConfig::default(), |c| {
        IssuerKeys::fixed(c, keys.take().unwrap())
    })
    .with_marker_claim(marker)
    .with_captured_claims(vec![Arc::from("email"), Arc::from("x")]);
    if !parsed {
        // The path of before: `peek`, then jsonwebtoken for everything.
        v.read_claims = false;
    }
    v
}

#[tokio::test]
async fn the_one_pass_reading_answers_as_the_older_path_does() {
    let signer: Signer = ec("ec", Algorithm::ES256);
    let body = json!({ "keys": [serde_json::to_value(&signer.jwk).unwrap()] }).to_string();
    let seed = std::env::var("PORTCULLIS_PAYLOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let rounds: usize = std::env::var("PORTCULLIS_PAYLOAD_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(seed);
    let (mut compared, mut accepted, mut read_once) = (0, 0, 0);
    let mut differ = Vec::new();
    // Leeway at both ends of its range and the default; one audience,
    // two, none.
    let configs: [(u64, &[&str]); 3] = [(30, &["api"]), (0, &["api", "other"]), (300, &[])];
    for (leeway, audiences) in configs {
        let mut cfg = IssuerConfig::new(ISS, "api");
        cfg.leeway_seconds = leeway;
        cfg.audiences = audiences.iter().map(|a| a.to_string()).collect();
        cfg.algorithms = vec![Algorithm::ES256, Algorithm::ES384];
        cfg.token_types = vec!["Bearer".into(), "ID".into()];
        cfg.scopes.from = vec![
            "claim:scope".into(),
            "realm_roles".into(),
            "client_roles:api".into(),
        ];
        for marker in ["token_use", "pat_marker"] {
            let fast = verifier(&cfg, &body, true, marker);
            let reference = verifier(&cfg, &body, false, marker);
            assert!(fast.read_claims && !reference.read_claims);
            for _ in 0..rounds {
                let now = unix_now();
                let vals = values(now);
                let (h, p) = (header(&mut rng, signer.kid), payload(&mut rng, now, &vals));
                let t = sign_text(&h, &p, &signer.key, Algorithm::ES256);
                // The header reading against the one of before.
                let seg = t.split('.').next().unwrap();
                let new = token::header(seg).map(|c| (c.alg, c.kid));
                if new != old_header(&h) {
                    differ.push(format!(
                        "header {h}: now {new:?}, before {:?}",
                        old_header(&h)
                    ));
                }
                let (mut a, mut b) = (answer(&fast, &t).await, answer(&reference, &t).await);
                if a != b {
                    // A second may have passed between the two (`exp` at
                    // the edge of the leeway): ask again before calling it
                    // a difference.
                    (a, b) = (answer(&fast, &t).await, answer(&reference, &t).await);
                }
                compared += 1;
                accepted += usize::from(a.is_ok());
                let taken = token::payload_text(t.split('.').nth(1).unwrap())
                    .ok()
                    .is_some_and(|text| super::payload::read(&text, marker).is_some());
                read_once += usize::from(taken);
                // jsonwebtoken checks its required claims in `HashSet`
                // order, which differs between two `Validation`s: with
                // several missing, the two verifiers may name different
                // ones. A token the one-pass reading takes has them all,
                // so there the reason must match too.
                let same = match (&a, &b) {
                    (Err(_), Err(_)) if !taken => true,
                    _ => a == b,
                };
                if !same {
                    differ.push(format!(
                        "leeway {leeway}, audiences {audiences:?}, marker {marker}\n  \
                         header {h}\n  payload {p}\n  one pass {a:?}\n  before {b:?}"
                    ));
                }
            }
        }
    }
    eprintln!("{compared} compared, {accepted} accepted, {read_once} readable in one pass");
    assert!(
        differ.is_empty(),
        "{} differences:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert!(
        accepted > compared / 20 && accepted < compared * 9 / 10,
        "{accepted}"
    );
    assert!(read_once > compared / 4, "{read_once}");
}
