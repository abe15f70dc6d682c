//! JWT header and claims decoding, up to and including the signature check.
//!
//! A `Verifier` with fixed keys (generated at start-up; the private halves
//! never leave the harness) runs `verify` inside a current-thread runtime.
//! Input: `[0]` mode, `[1..4]` mode parameters, then the text.
//!
//! * mode 0 `raw`: the text is the token. `verify` must never return Ok: the
//!   fuzzer cannot produce a valid signature.
//! * mode 1 `signed`: the text is `header JSON \n payload JSON`; the harness
//!   base64url-encodes both and signs them with the key `[1]` picks. If
//!   `verify` says Ok, every check it promises must hold on the JSON the
//!   fuzzer wrote (issuer, audience, exp/nbf/iat, typ, sub, header alg and
//!   kid of the signing key, no duplicate claims, no `crit`), and a second
//!   call (cache hit) must agree.
//! * mode 2 `wrong key`: as 1, signed with a key that is not in the key set
//!   (same kids): never Ok.
//! * mode 3 `tampered`: as 1, then one character at `[2..4]` is replaced by
//!   `[1]`-derived byte (or removed, or one inserted): never Ok.
//! * mode 4 `jwks`: the text is a JWKS document for `parse_jwks`: never
//!   panics, kids are unique and non-empty, a kid reported as duplicate is
//!   never kept, and every kept key fits its own `alg`.
#![no_main]

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use portcullis::config::{Config, IssuerConfig};
use portcullis::jwt::keys::{KeySet, parse_jwks};
use portcullis::jwt::{IssuerKeys, Verifier, unix_now};
use portcullis::scope::{ScopeRole, validate};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

const ISS: &str = "https://kc.example.org/realms/fuzz";
/// A trusted issuer that has no keys at all.
const ISS_EMPTY: &str = "https://kc.example.org/realms/empty";
const AUD: &str = "portcullis";
const LEEWAY: i64 = 30;

struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    /// kids under which this key's public half is published.
    kids: &'static [&'static str],
}

struct Harness {
    rt: tokio::runtime::Runtime,
    verifier: Verifier,
    /// Published keys: ES256, EdDSA.
    signers: Vec<Signer>,
    /// Same algorithms, never published.
    strangers: Vec<Signer>,
}

fn es256() -> EncodingKey {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EncodingKey::from_ec_der(doc.as_ref())
}

/// An Ed25519 signing key and its public JWK (jsonwebtoken's
/// `Jwk::from_encoding_key` does not implement OKP keys).
fn ed25519(kid: &str) -> (EncodingKey, Value) {
    use aws_lc_rs::signature::KeyPair;
    let pair = Ed25519KeyPair::generate().unwrap();
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    });
    let key = EncodingKey::from_ed_der(pair.to_pkcs8().unwrap().as_ref());
    (key, jwk)
}

fn rs256() -> EncodingKey {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str, with_alg: bool) -> Value {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.to_owned());
    j.common.public_key_use = Some(PublicKeyUse::Signature);
    if !with_alg {
        j.common.key_algorithm = None;
    }
    serde_json::to_value(j).unwrap()
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let es = es256();
        let (ed, ed_jwk) = ed25519("ed");
        // Only verified against (RSA signing is too slow for a fuzz loop):
        // RS256 headers reach the RSA verifier and fail there.
        let rs = rs256();
        let jwks = json!({
            "keys": [
                jwk(&es, Algorithm::ES256, "es", true),
                jwk(&es, Algorithm::ES256, "es-noalg", false),
                ed_jwk,
                jwk(&rs, Algorithm::RS256, "rs", true),
            ],
        });
        let parsed = parse_jwks(&serde_json::to_vec(&jwks).unwrap()).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let mut keys = Some(parsed.keys);

        let mut ic = IssuerConfig::new(ISS, AUD);
        ic.algorithms = vec![
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        ic.leeway_seconds = LEEWAY as u64;
        ic.scopes.from = vec![
            "claim:scope".into(),
            "realm_roles".into(),
            "client_roles:web".into(),
        ];
        ic.scopes
            .map
            .insert("admin".into(), vec!["admin:all".into(), "*:read".into()]);
        ic.scopes.default = vec!["profile:read".into()];
        let mut empty = IssuerConfig::new(ISS_EMPTY, AUD);
        empty.algorithms = ic.algorithms.clone();
        let mut cfg = Config::default();
        cfg.jwt.cache_capacity = 64;
        let verifier = Verifier::new(&[ic, empty], &cfg.jwt, |ic| {
            let ks = if ic.issuer == ISS {
                keys.take().unwrap()
            } else {
                KeySet::default()
            };
            IssuerKeys::fixed(ic, ks)
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Harness {
            rt,
            verifier,
            signers: vec![
                Signer {
                    alg: Algorithm::ES256,
                    key: es,
                    kids: &["es", "es-noalg"],
                },
                Signer {
                    alg: Algorithm::EdDSA,
                    key: ed,
                    kids: &["ed"],
                },
            ],
            strangers: vec![
                Signer {
                    alg: Algorithm::ES256,
                    key: es256(),
                    kids: &[],
                },
                Signer {
                    alg: Algorithm::EdDSA,
                    key: ed25519("ed").0,
                    kids: &[],
                },
            ],
        }
    })
}

fn sign(s: &Signer, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &s.key, s.alg).unwrap();
    format!("{input}.{sig}")
}

/// Top-level names of a JSON object in document order (duplicates kept), or
/// None if it is not an object.
fn names(bytes: &[u8]) -> Option<Vec<String>> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<IgnoredAny>()?;
                out.push(k);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_map(V).ok()
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

/// The header parameters and claims we assert on. Unknown names are skipped
/// like the verifier skips them (serde_json accepts lone surrogates there).
#[derive(serde::Deserialize)]
struct Seen {
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
    crit: Option<Value>,
    enc: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    sub: Option<Value>,
}

/// What an accepted token must satisfy, checked on the JSON as written.
fn assert_acceptable(
    signer: &Signer,
    header: &[u8],
    payload: &[u8],
    v: &portcullis::jwt::VerifiedJwt,
) {
    let now = unix_now();
    // RFC 7519 §7.2: both are UTF-8 JSON objects.
    let header = std::str::from_utf8(header).expect("accepted header is UTF-8");
    let payload = std::str::from_utf8(payload).expect("accepted payload is UTF-8");
    // Duplicates of a parameter we act on are a parser-differential risk;
    // unknown ones are never read.
    let hn = names(header.as_bytes()).expect("accepted header is an object");
    for p in [
        "alg", "kid", "typ", "crit", "enc", "jku", "jwk", "x5u", "x5c",
    ] {
        assert!(count(&hn, p) <= 1, "duplicate header {p:?} accepted");
    }
    let cn = names(payload.as_bytes()).expect("accepted payload is an object");
    let unique: HashSet<&String> = cn.iter().collect();
    assert_eq!(unique.len(), cn.len(), "duplicate claim names accepted");

    let h: Seen = serde_json::from_str(header).expect("accepted header parses");
    let alg = h.alg.as_ref().and_then(Value::as_str).expect("alg");
    assert_eq!(
        serde_json::to_value(signer.alg).unwrap().as_str(),
        Some(alg),
        "alg of another key family accepted"
    );
    let kid = h.kid.as_ref().and_then(Value::as_str).expect("kid");
    assert!(
        signer.kids.contains(&kid),
        "kid {kid:?} of another key accepted"
    );
    assert!(h.crit.is_none() && h.enc.is_none());
    if let Some(t) = &h.typ {
        let t = t.as_str().expect("typ string").to_ascii_lowercase();
        assert!(["jwt", "at+jwt", "application/at+jwt"].contains(&t.as_str()));
    }

    let c: Seen = serde_json::from_str(payload).expect("accepted payload parses");
    assert_eq!(c.iss.as_ref().and_then(Value::as_str), Some(ISS));
    let aud_ok = match &c.aud {
        Some(Value::String(a)) => a == AUD,
        Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(AUD)),
        _ => false,
    };
    assert!(aud_ok, "audience {:?} accepted", c.aud);
    let exp = c.exp.as_ref().and_then(Value::as_f64).expect("numeric exp");
    assert!(
        exp + LEEWAY as f64 > now as f64 - 1.0,
        "expired token accepted: {exp}"
    );
    assert_eq!(v.identity.expires_at as f64, exp.trunc());
    for (claim, t) in [("nbf", &c.nbf), ("iat", &c.iat)] {
        if let Some(t) = t {
            let t = t.as_f64().expect("numeric nbf/iat");
            assert!(
                t <= (now + LEEWAY + 1) as f64,
                "{claim} in the future accepted: {t}"
            );
        }
    }
    assert_eq!(c.typ.as_ref().and_then(Value::as_str), Some("Bearer"));
    let sub = c.sub.as_ref().and_then(Value::as_str).expect("sub");
    assert!(!sub.is_empty());
    assert_eq!(v.identity.subject, sub);
    assert_eq!(v.identity.issuer.as_deref(), Some(ISS));
    for s in v.identity.scopes.iter() {
        assert!(validate(s, ScopeRole::Granted).is_ok(), "bad scope {s:?}");
    }
}

fn jwks_mode(body: &[u8]) {
    let Ok(parsed) = parse_jwks(body) else {
        return;
    };
    let kids: Vec<&str> = parsed.keys.kids().collect();
    for kid in &kids {
        assert!(!kid.is_empty());
        let k = parsed.keys.get(kid).unwrap();
        assert_eq!(k.kid, *kid);
        if let Some(alg) = k.alg {
            assert!(k.key_type.fits(alg), "{kid}: {alg:?} on {:?}", k.key_type);
        }
    }
    for (label, reason) in &parsed.skipped {
        if *reason == portcullis::jwt::keys::KeySkip::DuplicateKid {
            assert!(
                parsed.keys.get(label).is_none(),
                "kid {label:?} reported as duplicate but kept"
            );
        }
    }
}

/// `FUZZ_DEBUG=1`: print what `verify` said about signed inputs.
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (ctl, rest) = data.split_at(4);
    let h = harness();
    let verify = |t: &str| h.rt.block_on(h.verifier.verify(t));
    match ctl[0] % 5 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            if let Ok(v) = verify(&token) {
                panic!("unsigned input accepted: {token:?} -> {v:?}");
            }
        }
        mode @ 1..=3 => {
            let (header, payload) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let signers = if mode == 2 { &h.strangers } else { &h.signers };
            let signer = &signers[usize::from(ctl[1]) % signers.len()];
            let token = sign(signer, header, payload);
            match mode {
                1 => {
                    let first = verify(&token);
                    if debug() {
                        eprintln!("signed: {:?}", first.as_ref().map(|v| &v.identity));
                    }
                    if let Ok(v) = &first {
                        assert_acceptable(signer, header, payload, v);
                    }
                    // Second call: a cache hit (or the same refusal).
                    let second = verify(&token);
                    assert_eq!(first.is_ok(), second.is_ok(), "{first:?} then {second:?}");
                    if let (Ok(a), Ok(b)) = (&first, &second) {
                        assert_eq!(a.identity, b.identity);
                    }
                }
                2 => {
                    if let Ok(v) = verify(&token) {
                        panic!("token signed by an unknown key accepted: {token:?} -> {v:?}");
                    }
                }
                _ => {
                    let mut bytes = token.clone().into_bytes();
                    let pos = usize::from(u16::from_le_bytes([ctl[2], ctl[3]])) % bytes.len();
                    // Stay inside the token alphabet half of the time.
                    const ALPHA: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
                    let with = if ctl[1] & 1 == 0 {
                        ALPHA[usize::from(ctl[1] >> 1) % ALPHA.len()]
                    } else {
                        ctl[1]
                    };
                    match ctl[1] % 3 {
                        0 => bytes.insert(pos, with),
                        1 if bytes[pos] != with => bytes[pos] = with,
                        _ => {
                            bytes.remove(pos);
                        }
                    }
                    let bad = String::from_utf8_lossy(&bytes);
                    if bad != token {
                        if let Ok(v) = verify(&bad) {
                            panic!("tampered token accepted: {token:?} -> {bad:?} -> {v:?}");
                        }
                    }
                }
            }
            // No state carried over to the next input.
            h.verifier.forget(&token);
        }
        _ => jwks_mode(rest),
    }
});
