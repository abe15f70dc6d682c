//! Token signatures checked against public keys parsed once per JWKS entry.
//!
//! jsonwebtoken hands aws-lc the raw key bytes on every verification, and
//! aws-lc parses them again each time: for a 2048-bit RSA key that is a new
//! bignum for the modulus and a new Montgomery context, about a quarter of a
//! cold RS256 verification (benches/BENCHMARKS.md, "Cold RS256"). Here each
//! [`VerifyKey`](super::keys::VerifyKey) carries an aws-lc `ParsedPublicKey`
//! for every algorithm it may verify, built when the JWKS is parsed (so a
//! refresh or rotation builds them anew with the key set, and a withdrawn key
//! takes its parsed forms with it).
//!
//! The answer must be the one jsonwebtoken's own verifier would give, so
//! each parsed key is built from the very bytes jsonwebtoken's aws-lc
//! verifier uses (the `DecodingKey`'s modulus and exponent, or its raw EC
//! point or Ed25519 key) with the very aws-lc algorithm it names (same
//! padding, digest and RSA key-size range, 2048–8192 bits), and the signing
//! input is what jsonwebtoken signs: everything before the token's last `.`.
//! A key aws-lc will not parse gets no parsed form; its tokens then go
//! through jsonwebtoken's full path, which refuses them as before.
//! Claims are still validated by jsonwebtoken (`exp`, `nbf`, `iss`, `aud`,
//! required claims), only without its signature step.

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

use super::JwtError;
use super::keys::KeyType;

/// The algorithms of each key family that can have a parsed form, in the
/// order they are tried (the JWK's own `alg`, when published, limits them to
/// one).
const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The aws-lc parameters jsonwebtoken 10's aws-lc backend verifies an RSA
/// `alg` with (`crypto::aws_lc::rsa`).
fn rsa_params(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The same for the elliptic-curve and Edwards `alg`s
/// (`crypto::aws_lc::{ecdsa, eddsa}`).
fn point_alg(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return None,
    })
}

/// One key's parsed forms, one per algorithm it may verify.
#[derive(Default)]
pub struct ParsedKeys {
    by_alg: Box<[(Algorithm, ParsedPublicKey)]>,
}

impl ParsedKeys {
    /// Parses `key` for each algorithm of its family (or only `alg`, the
    /// JWK's own restriction). An algorithm aws-lc refuses the key for is
    /// left out, so its tokens take jsonwebtoken's path and its refusal.
    pub fn build(key: &DecodingKey, key_type: KeyType, alg: Option<Algorithm>) -> ParsedKeys {
        let algs: &[Algorithm] = match key_type {
            KeyType::Rsa => &RSA_ALGS,
            KeyType::EcP256 => &[Algorithm::ES256],
            KeyType::EcP384 => &[Algorithm::ES384],
            KeyType::Ed25519 => &[Algorithm::EdDSA],
        };
        let by_alg = algs
            .iter()
            .copied()
            .filter(|a| alg.is_none_or(|only| only == *a))
            .filter_map(|a| Some((a, parse(key, a)?)))
            .collect();
        ParsedKeys { by_alg }
    }

    /// The parsed form for `alg`, if there is one.
    pub fn get(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.by_alg.iter().find(|(a, _)| *a == alg).map(|(_, k)| k)
    }

    /// The algorithms that have a parsed form.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.by_alg.iter().map(|(a, _)| *a)
    }
}

fn parse(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(rsa_params(alg)?)
            .ok(),
        DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(point_alg(alg)?, bytes).ok(),
    }
}

/// Checks the signature of `token` (JWS compact serialisation, already
/// split into exactly three segments) with `key`, as jsonwebtoken's
/// `decode` would: the signature is the base64url (no padding) text after
/// the last `.`, and it signs every byte before it.
pub fn verify(token: &str, key: &ParsedPublicKey) -> Result<(), JwtError> {
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or(JwtError::Malformed("not a JWT (expected 3 segments)"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed("token is not valid base64url"))?;
    key.verify_sig(signing_input.as_bytes(), &signature)
        .map_err(|_| JwtError::BadSignature)
}
