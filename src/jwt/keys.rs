//! JWKS parsing: turns an issuer's key set into ready-to-use verification
//! keys, built once per `kid` so no request ever parses key material.
//!
//! Keycloak publishes every enabled key, including `use: "enc"` (RSA-OAEP)
//! keys and sometimes `oct` secrets. Only signature keys of an asymmetric
//! type survive; everything else is skipped with a reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::signature::ParsedKeys;

/// The asymmetric key families a token's `alg` can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyType {
    /// Can a key of this type verify `alg`? This is the guard against
    /// algorithm confusion: the header's `alg` must fit the key, never the
    /// other way round.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyType::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyType::EcP256 => alg == ES256,
            KeyType::EcP384 => alg == ES384,
            KeyType::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key, parsed once.
pub struct VerifyKey {
    /// Key id as published.
    pub kid: String,
    /// Family, to refuse an `alg` the key cannot have produced.
    pub key_type: KeyType,
    /// The JWK's own `alg`, when published: the token must then use exactly it.
    pub alg: Option<Algorithm>,
    /// Ready decoding key (jsonwebtoken's full path: logout tokens, and
    /// any `alg` without a parsed form in `parsed`).
    pub key: DecodingKey,
    /// The key parsed into aws-lc once per algorithm it may verify, so a
    /// cold token costs a signature check and no key parse.
    pub parsed: ParsedKeys,
    /// SHA-256 of the key material and its `alg` restriction. A JWKS refresh
    /// parses every key anew, so a cached verification recognises "the same
    /// key is still published" by this, not by pointer or `kid` alone (a
    /// `kid` could be re-published with other material).
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .field("parsed", &self.parsed.algorithms().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Keys of one issuer, by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.by_kid.get(kid)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.by_kid.keys().map(String::as_str)
    }

    /// Builds a set from already-parsed keys (the dev issuer).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyKey>) -> KeySet {
        KeySet {
            by_kid: keys
                .into_iter()
                .map(|k| (k.kid.clone(), Arc::new(k)))
                .collect(),
        }
    }
}

/// Result of parsing a JWKS document.
#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: KeySet,
    /// `(kid or index, reason)` for every key that was not usable.
    pub skipped: Vec<(String, KeySkip)>,
}

/// Why one JWKS entry is not used (logged, never fatal: the other keys
/// still load).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySkip {
    #[error("kty oct (shared secret) is never used for verification")]
    SharedSecret,
    #[error("use {0:?} is not a signature key")]
    Use(String),
    #[error("not a signature key")]
    NotSignature,
    #[error("unsupported JWK: {0}")]
    Unsupported(String),
    #[error("key_ops does not include verify")]
    NoVerifyOp,
    #[error("no kid")]
    NoKid,
    #[error("unsupported curve {0}")]
    Curve(String),
    #[error("alg {0} is not a signature algorithm")]
    NotSignatureAlg(String),
    #[error("alg {alg:?} does not fit key type {key_type:?}")]
    AlgMismatch { alg: Algorithm, key_type: KeyType },
    #[error("bad key material: {0}")]
    Material(String),
    /// Two keys under one kid would make selection ambiguous.
    #[error("duplicate kid")]
    DuplicateKid,
}

/// Parses a JWKS JSON body. Individual bad keys are skipped; a body that is
/// not a JWKS at all is an error.
pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, super::JwksError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| super::JwksError::NotJwks(e.to_string()))?;
    let mut by_kid = HashMap::new();
    // Kids seen more than once: never usable, however many more copies follow.
    let mut duplicates = HashSet::new();
    let mut skipped = Vec::new();
    for (i, value) in raw.keys.into_iter().enumerate() {
        let label = value
            .get("kid")
            .and_then(|k| k.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{i}"));
        match parse_key(value) {
            Ok(key) => {
                if by_kid.contains_key(&key.kid) || duplicates.contains(&key.kid) {
                    // Two keys under one kid would make selection ambiguous.
                    skipped.push((label, KeySkip::DuplicateKid));
                    by_kid.remove(&key.kid);
                    duplicates.insert(key.kid);
                    continue;
                }
                by_kid.insert(key.kid.clone(), Arc::new(key));
            }
            Err(reason) => skipped.push((label, reason)),
        }
    }
    Ok(ParsedJwks {
        keys: KeySet { by_kid },
        skipped,
    })
}

fn parse_key(value: serde_json::Value) -> Result<VerifyKey, KeySkip> {
    if value.get("kty").and_then(|v| v.as_str()) == Some("oct") {
        return Err(KeySkip::SharedSecret);
    }
    if let Some(u) = value.get("use").and_then(|v| v.as_str())
        && u != "sig"
    {
        return Err(KeySkip::Use(u.to_owned()));
    }
    let jwk: Jwk =
        serde_json::from_value(value).map_err(|e| KeySkip::Unsupported(e.to_string()))?;
    if let Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_)) = jwk.common.public_key_use {
        return Err(KeySkip::NotSignature);
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops
            .iter()
            .any(|o| matches!(o, jsonwebtoken::jwk::KeyOperations::Verify))
    {
        return Err(KeySkip::NoVerifyOp);
    }
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or(KeySkip::NoKid)?;
    let key_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyType::EcP256,
            EllipticCurve::P384 => KeyType::EcP384,
            ref c => return Err(KeySkip::Curve(format!("EC {c:?}"))),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            ref c => return Err(KeySkip::Curve(format!("OKP {c:?}"))),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(KeySkip::SharedSecret);
        }
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => {
            Some(signing_alg(ka).ok_or_else(|| KeySkip::NotSignatureAlg(format!("{ka:?}")))?)
        }
    };
    if let Some(alg) = alg
        && !key_type.fits(alg)
    {
        return Err(KeySkip::AlgMismatch { alg, key_type });
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| KeySkip::Material(e.to_string()))?;
    let fingerprint = fingerprint(&jwk.algorithm, alg);
    let parsed = ParsedKeys::build(&key, key_type, alg);
    Ok(VerifyKey {
        kid,
        key_type,
        alg,
        key,
        parsed,
        fingerprint,
    })
}

/// Hashes what makes a key verify what it verifies: its public material and
/// the `alg` it is restricted to. Each field is length-prefixed so no two
/// different keys can concatenate to the same input.
fn fingerprint(params: &AlgorithmParameters, alg: Option<Algorithm>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |v: &[u8]| {
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    };
    match params {
        AlgorithmParameters::RSA(p) => {
            field(b"RSA");
            field(p.n.as_bytes());
            field(p.e.as_bytes());
        }
        AlgorithmParameters::EllipticCurve(p) => {
            field(b"EC");
            field(format!("{:?}", p.curve).as_bytes());
            field(p.x.as_bytes());
            field(p.y.as_bytes());
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            field(b"OKP");
            field(format!("{:?}", p.curve).as_bytes());
            field(p.x.as_bytes());
        }
        // Never parsed into a VerifyKey; hashed apart all the same.
        AlgorithmParameters::OctetKey(_) => field(b"oct"),
    }
    field(format!("{alg:?}").as_bytes());
    h.finalize().into()
}

fn signing_alg(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_enc_oct_and_bad_keys() {
        let body = serde_json::json!({"keys": [
            {"kid": "sig-ec", "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kid": "enc-rsa", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kid": "oct", "kty": "oct", "k": "c2VjcmV0"},
            {"kid": "weird", "kty": "EC", "crv": "P-256", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kid": "garbage"}
        ]});
        let parsed = parse_jwks(body.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.keys.kids().collect::<Vec<_>>(), vec!["sig-ec"]);
        let k = parsed.keys.get("sig-ec").unwrap();
        assert_eq!(k.key_type, KeyType::EcP256);
        assert!(k.key_type.fits(Algorithm::ES256));
        assert!(!k.key_type.fits(Algorithm::RS256));
        assert_eq!(parsed.skipped.len(), 5, "{:?}", parsed.skipped);
    }

    #[test]
    fn item16_fingerprint_follows_material_and_alg_not_parsing() {
        const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let fp = |alg: Option<&str>, y: &str| {
            let mut jwk =
                serde_json::json!({"kid": "k", "kty": "EC", "crv": "P-256", "x": X, "y": y});
            if let Some(a) = alg {
                jwk["alg"] = serde_json::json!(a);
            }
            let body = serde_json::json!({ "keys": [jwk] }).to_string();
            parse_jwks(body.as_bytes())
                .unwrap()
                .keys
                .get("k")
                .unwrap()
                .fingerprint
        };
        // Parsed twice (as every refresh does): the same key.
        assert_eq!(fp(Some("ES256"), Y), fp(Some("ES256"), Y));
        assert_ne!(fp(Some("ES256"), Y), fp(None, Y), "alg restriction counts");
        // A different point under the same kid is another key.
        let other_y = "y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        assert_ne!(fp(None, Y), fp(None, other_y));
    }

    #[test]
    fn not_a_jwks() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(b"{\"keys\": 5}").is_err());
    }
}
