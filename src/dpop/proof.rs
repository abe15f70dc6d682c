//! Checking one DPoP proof JWT (RFC 9449 §4.3) against the request and the
//! access token it comes with. Every check has its own [`ProofError`], so
//! each refusal is tested on its own and named in the 401.

use std::collections::HashSet;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{DpopConfig, ReplayCache, htu, sha256_b64url};
use crate::jwt::keys::KeyType;

/// JWK members that only a private key has (RFC 7517/7518): a proof must
/// carry the public key only.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Longest `jti` accepted (it is kept in the replay cache).
const MAX_JTI: usize = 256;

/// What a proof is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ProofInput<'a> {
    /// The `DPoP` header's value.
    pub proof: &'a str,
    /// The request method (`htm` must equal it).
    pub method: &'a str,
    /// The request URL, normalised ([`htu::request_url`]).
    pub url: &'a str,
    /// The access token presented with the proof (`ath`).
    pub access_token: &'a str,
    /// The token's `cnf.jkt`: the proof's key must have this thumbprint.
    pub expected_jkt: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
}

/// Why a proof is refused (401 `invalid_dpop_proof`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("DPoP proof typ must be dpop+jwt")]
    Type,
    #[error("DPoP proof signing algorithm not allowed")]
    Algorithm,
    #[error("DPoP proof header has no public jwk")]
    NoKey,
    #[error("DPoP proof jwk contains private key material")]
    PrivateKey,
    #[error("DPoP proof jwk is not a supported public key: {0}")]
    UnsupportedKey(&'static str),
    #[error("DPoP proof signature is invalid")]
    BadSignature,
    #[error("DPoP proof lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("DPoP proof htm does not match the request method")]
    Method,
    #[error("DPoP proof htu does not match the request URL")]
    Url,
    #[error("DPoP proof iat is outside the accepted window")]
    Iat,
    #[error("DPoP proof ath does not match the access token")]
    TokenHash,
    #[error("DPoP proof key does not match the token's cnf.jkt")]
    KeyMismatch,
    #[error("DPoP proof was already used")]
    Replayed,
}

#[derive(serde::Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
}

/// Checks `input.proof`; on success its `jti` is remembered in `replay`
/// (only then, so a refused proof cannot burn a `jti`).
pub fn verify(
    input: &ProofInput<'_>,
    cfg: &DpopConfig,
    replay: &ReplayCache,
) -> Result<VerifiedProof, ProofError> {
    let (alg, jwk) = check_header(input.proof, cfg)?;
    let jkt = thumbprint(&jwk)?;
    let claims = check_signature(input.proof, alg, jwk)?;
    let jti = claims
        .jti
        .filter(|j| !j.is_empty())
        .ok_or(ProofError::MissingClaim("jti"))?;
    if jti.len() > MAX_JTI {
        return Err(ProofError::Malformed("jti longer than 256 bytes"));
    }
    let htm = claims.htm.ok_or(ProofError::MissingClaim("htm"))?;
    if htm != input.method {
        return Err(ProofError::Method);
    }
    let htu = claims.htu.ok_or(ProofError::MissingClaim("htu"))?;
    if htu::normalize(&htu).as_deref() != Some(input.url) {
        return Err(ProofError::Url);
    }
    let iat = claims.iat.ok_or(ProofError::MissingClaim("iat"))?;
    let (max_age, leeway) = (cfg.max_age.as_secs() as i64, cfg.leeway.as_secs() as i64);
    if iat > input.now.saturating_add(leeway) || input.now.saturating_sub(iat) > max_age + leeway {
        return Err(ProofError::Iat);
    }
    let ath = claims.ath.ok_or(ProofError::MissingClaim("ath"))?;
    if ath != sha256_b64url(input.access_token.as_bytes()) {
        return Err(ProofError::TokenHash);
    }
    if jkt != input.expected_jkt {
        return Err(ProofError::KeyMismatch);
    }
    if !replay.first_use(&jkt, &jti) {
        return Err(ProofError::Replayed);
    }
    Ok(VerifiedProof { jkt })
}

/// `typ`, `alg` (allowed and fitting the key) and a public `jwk`.
fn check_header(
    proof: &str,
    cfg: &DpopConfig,
) -> Result<(Algorithm, Map<String, Value>), ProofError> {
    let mut parts = proof.split('.');
    let (Some(h), Some(_), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed("not a JWS in compact form"));
    };
    if s.is_empty() {
        return Err(ProofError::Malformed("unsigned"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| ProofError::Malformed("header is not base64url"))?;
    let Ok(Value::Object(mut header)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(ProofError::Malformed("header is not a JSON object"));
    };
    if header.contains_key("crit") {
        return Err(ProofError::Malformed(
            "crit header parameters are not supported",
        ));
    }
    let typ = header.get("typ").and_then(Value::as_str);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
        return Err(ProofError::Type);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| Algorithm::from_str(a).ok())
        .filter(|a| cfg.algorithms.contains(a))
        .ok_or(ProofError::Algorithm)?;
    let Some(Value::Object(jwk)) = header.remove("jwk") else {
        return Err(ProofError::NoKey);
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::PrivateKey);
    }
    if !key_type(&jwk)?.fits(alg) {
        return Err(ProofError::Algorithm);
    }
    Ok((alg, jwk))
}

fn key_type(jwk: &Map<String, Value>) -> Result<KeyType, ProofError> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    match (s("kty"), s("crv")) {
        (Some("RSA"), _) => Ok(KeyType::Rsa),
        (Some("EC"), Some("P-256")) => Ok(KeyType::EcP256),
        (Some("EC"), Some("P-384")) => Ok(KeyType::EcP384),
        (Some("OKP"), Some("Ed25519")) => Ok(KeyType::Ed25519),
        (Some("EC" | "OKP"), _) => Err(ProofError::UnsupportedKey("curve")),
        _ => Err(ProofError::UnsupportedKey("kty")),
    }
}

/// RFC 7638: SHA-256 over the required members, in lexicographic order,
/// without white space.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, ProofError> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => return Err(ProofError::UnsupportedKey("kty")),
    };
    // Built by hand: a JSON map's key order depends on serde_json features.
    let mut text = String::from("{");
    for (i, m) in members.iter().enumerate() {
        let Some(v @ Value::String(_)) = jwk.get(*m) else {
            return Err(ProofError::UnsupportedKey("missing key member"));
        };
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("\"{m}\":{v}"));
    }
    text.push('}');
    Ok(sha256_b64url(text.as_bytes()))
}

fn check_signature(
    proof: &str,
    alg: Algorithm,
    jwk: Map<String, Value>,
) -> Result<Claims, ProofError> {
    let jwk: Jwk = serde_json::from_value(Value::Object(jwk))
        .map_err(|_| ProofError::UnsupportedKey("not a valid JWK"))?;
    let key =
        DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::UnsupportedKey("key material"))?;
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims = HashSet::new();
    match jsonwebtoken::decode::<Claims>(proof, &key, &v) {
        Ok(d) => Ok(d.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => ProofError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => ProofError::Algorithm,
            _ => ProofError::Malformed("claims are not a valid JSON object"),
        }),
    }
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
