//! One test per proof check, each with a proof that fails only that check.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::*;

const URL: &str = "https://api.example.org/api/v1/uploads";
const TOKEN: &str = "eyJ.access.token";
const NOW: i64 = 1_800_000_000;

/// A client key pair, as a DPoP client holds it.
struct Client {
    enc: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

fn es256() -> Client {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let enc = EncodingKey::from_ec_der(doc.as_ref());
    let jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
    Client {
        enc,
        alg: Algorithm::ES256,
        jwk: public_members(jwk),
    }
}

fn ed25519() -> Client {
    let kp = Ed25519KeyPair::generate().unwrap();
    let enc = EncodingKey::from_ed_der(kp.to_pkcs8().unwrap().as_ref());
    let x = URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
    Client {
        enc,
        alg: Algorithm::EdDSA,
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
    }
}

/// Only the key's public members (no `alg`/`use` noise).
fn public_members(mut jwk: Value) -> Value {
    let m = jwk.as_object_mut().unwrap();
    m.retain(|k, _| ["kty", "crv", "x", "y", "n", "e"].contains(&k.as_str()));
    jwk
}

impl Client {
    fn jkt(&self) -> String {
        thumbprint(self.jwk.as_object().unwrap()).unwrap()
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": format!("{:?}", self.alg), "jwk": self.jwk})
    }

    fn claims(&self) -> Value {
        json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": "POST",
            "htu": URL,
            "iat": NOW,
            "ath": sha256_b64url(TOKEN.as_bytes()),
        })
    }

    /// Signs `header`.`claims` with this client's key.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.enc, self.alg).unwrap();
        format!("{input}.{sig}")
    }

    fn proof(&self) -> String {
        self.sign(&self.header(), &self.claims())
    }
}

fn check_as(proof: &str, jkt: &str, replay: &ReplayCache) -> Result<VerifiedProof, ProofError> {
    let input = ProofInput {
        proof,
        method: "POST",
        url: URL,
        access_token: TOKEN,
        expected_jkt: jkt,
        now: NOW,
    };
    verify(&input, &DpopConfig::default(), replay)
}

fn replay() -> ReplayCache {
    ReplayCache::new(1000, std::time::Duration::from_secs(70))
}

fn check(c: &Client, proof: &str) -> Result<VerifiedProof, ProofError> {
    check_as(proof, &c.jkt(), &replay())
}

/// A proof whose claims are changed by `f`.
fn with_claims(c: &Client, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = c.claims();
    f(claims.as_object_mut().unwrap());
    c.sign(&c.header(), &claims)
}

/// A proof whose header is changed by `f`.
fn with_header(c: &Client, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut header = c.header();
    f(header.as_object_mut().unwrap());
    c.sign(&header, &c.claims())
}

#[test]
fn a_good_proof_passes_with_es256_and_eddsa() {
    for c in [es256(), ed25519()] {
        let got = check(&c, &c.proof()).unwrap();
        assert_eq!(got.jkt, c.jkt());
    }
}

#[test]
fn typ_must_be_dpop_jwt() {
    let c = es256();
    for typ in [json!("JWT"), json!(null), json!("at+jwt")] {
        let p = with_header(&c, |h| {
            h.insert("typ".into(), typ.clone());
        });
        assert_eq!(check(&c, &p), Err(ProofError::Type), "{typ}");
    }
    let p = with_header(&c, |h| {
        h.remove("typ");
    });
    assert_eq!(check(&c, &p), Err(ProofError::Type));
}

#[test]
fn alg_must_be_allowed_and_fit_the_key() {
    let c = es256();
    for alg in ["none", "HS256", "ES384", "RS256", "bogus"] {
        let p = with_header(&c, |h| {
            h.insert("alg".into(), json!(alg));
        });
        assert_eq!(check(&c, &p), Err(ProofError::Algorithm), "{alg}");
    }
}

#[test]
fn a_public_jwk_is_required() {
    let c = es256();
    let p = with_header(&c, |h| {
        h.remove("jwk");
    });
    assert_eq!(check(&c, &p), Err(ProofError::NoKey));
    let p = with_header(&c, |h| {
        h.insert("jwk".into(), json!("not an object"));
    });
    assert_eq!(check(&c, &p), Err(ProofError::NoKey));
}

#[test]
fn private_key_members_are_refused() {
    let c = es256();
    for m in ["d", "p", "k"] {
        let p = with_header(&c, |h| {
            h["jwk"]
                .as_object_mut()
                .unwrap()
                .insert(m.into(), json!("AAAA"));
        });
        assert_eq!(check(&c, &p), Err(ProofError::PrivateKey), "{m}");
    }
}

#[test]
fn unsupported_keys_are_refused_without_panicking() {
    let c = es256();
    for jwk in [
        json!({"kty": "oct", "k": "AAAA"}),
        json!({"kty": "EC", "crv": "Ed25519", "x": "AAAA", "y": "AAAA"}),
        json!({"kty": "EC", "crv": "P-521", "x": "AAAA", "y": "AAAA"}),
        json!({"kty": "EC", "crv": "P-256", "x": "AAAA"}),
        json!({"kty": "EC", "crv": "P-256", "x": 1, "y": 2}),
    ] {
        let p = with_header(&c, |h| {
            h.insert("jwk".into(), jwk.clone());
        });
        let got = check(&c, &p);
        assert!(
            matches!(
                got,
                Err(ProofError::UnsupportedKey(_) | ProofError::PrivateKey)
            ),
            "{jwk}: {got:?}"
        );
    }
}

#[test]
fn the_signature_must_verify_with_the_header_key() {
    let (c, other) = (es256(), es256());
    // Signed by `other`, but naming `c`'s key.
    let p = other.sign(&c.header(), &c.claims());
    assert_eq!(check(&c, &p), Err(ProofError::BadSignature));
    let mut tampered = c.proof();
    tampered.insert(tampered.rfind('.').unwrap() + 1, 'A');
    assert!(check(&c, &tampered).is_err());
}

#[test]
fn htm_must_equal_the_method() {
    let c = es256();
    for m in ["GET", "post", ""] {
        let p = with_claims(&c, |cl| {
            cl.insert("htm".into(), json!(m));
        });
        assert_eq!(check(&c, &p), Err(ProofError::Method), "{m}");
    }
}

#[test]
fn htu_must_equal_the_url_after_normalisation() {
    let c = es256();
    for ok in [
        "https://API.example.org/api/v1/uploads",
        "https://api.example.org:443/api/v1/uploads?x=1",
    ] {
        let p = with_claims(&c, |cl| {
            cl.insert("htu".into(), json!(ok));
        });
        assert!(check(&c, &p).is_ok(), "{ok}");
    }
    for bad in [
        "https://api.example.org/api/v1/other",
        "http://api.example.org/api/v1/uploads",
        "https://evil.example/api/v1/uploads",
        "/api/v1/uploads",
    ] {
        let p = with_claims(&c, |cl| {
            cl.insert("htu".into(), json!(bad));
        });
        assert_eq!(check(&c, &p), Err(ProofError::Url), "{bad}");
    }
}

#[test]
fn iat_must_be_within_the_window() {
    let c = es256();
    // Default: max_age 60s, leeway 5s.
    for (iat, ok) in [
        (NOW, true),
        (NOW - 65, true),
        (NOW - 66, false),
        (NOW + 5, true),
        (NOW + 6, false),
    ] {
        let p = with_claims(&c, |cl| {
            cl.insert("iat".into(), json!(iat));
        });
        let got = check(&c, &p);
        assert_eq!(got.is_ok(), ok, "iat {}: {got:?}", iat - NOW);
        if !ok {
            assert_eq!(got, Err(ProofError::Iat));
        }
    }
}

#[test]
fn ath_must_hash_the_access_token() {
    let c = es256();
    let p = with_claims(&c, |cl| {
        cl.insert("ath".into(), json!(sha256_b64url(b"another token")));
    });
    assert_eq!(check(&c, &p), Err(ProofError::TokenHash));
}

#[test]
fn each_claim_is_required() {
    let c = es256();
    for claim in ["jti", "htm", "htu", "iat", "ath"] {
        let p = with_claims(&c, |cl| {
            cl.remove(claim);
        });
        assert_eq!(
            check(&c, &p),
            Err(ProofError::MissingClaim(claim)),
            "{claim}"
        );
    }
}

#[test]
fn the_key_must_be_the_one_the_token_is_bound_to() {
    let (c, other) = (es256(), es256());
    assert_eq!(
        check_as(&c.proof(), &other.jkt(), &replay()),
        Err(ProofError::KeyMismatch)
    );
}

#[test]
fn a_proof_is_accepted_once() {
    let c = es256();
    let r = replay();
    let p = c.proof();
    assert!(check_as(&p, &c.jkt(), &r).is_ok());
    assert_eq!(check_as(&p, &c.jkt(), &r), Err(ProofError::Replayed));
}

#[test]
fn a_refused_proof_does_not_burn_its_jti() {
    let c = es256();
    let r = replay();
    let mut claims = c.claims();
    claims["ath"] = json!(sha256_b64url(b"another token"));
    let bad = c.sign(&c.header(), &claims);
    assert_eq!(check_as(&bad, &c.jkt(), &r), Err(ProofError::TokenHash));
    claims["ath"] = json!(sha256_b64url(TOKEN.as_bytes()));
    let good = c.sign(&c.header(), &claims);
    assert!(check_as(&good, &c.jkt(), &r).is_ok());
}

#[test]
fn malformed_proofs_are_refused() {
    let c = es256();
    for p in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.e30.sig",
        "e30.e30.",
        "bm90IGpzb24.e30.c2ln",
    ] {
        assert!(
            matches!(check(&c, p), Err(ProofError::Malformed(_))),
            "{p}: {:?}",
            check(&c, p)
        );
    }
    let p = with_header(&c, |h| {
        h.insert("crit".into(), json!(["exp"]));
    });
    assert!(matches!(check(&c, &p), Err(ProofError::Malformed(_))));
}

#[test]
fn rfc7638_thumbprint_example() {
    // RFC 7638 §3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        thumbprint(jwk.as_object().unwrap()).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}
