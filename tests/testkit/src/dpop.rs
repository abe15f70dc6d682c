//! A DPoP client (RFC 9449) for tests: a P-256 key pair, its RFC 7638
//! thumbprint (what a bound token's `cnf.jkt` names) and signed proofs.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// A client's DPoP key.
pub struct DpopClient {
    enc: EncodingKey,
    /// The public JWK (kty, crv, x, y only).
    pub jwk: Value,
}

impl Default for DpopClient {
    fn default() -> Self {
        Self::new()
    }
}

impl DpopClient {
    /// A fresh ES256 key.
    pub fn new() -> DpopClient {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("P-256 key");
        let enc = EncodingKey::from_ec_der(doc.as_ref());
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap())
            .expect("JWK");
        jwk.as_object_mut()
            .unwrap()
            .retain(|k, _| ["kty", "crv", "x", "y"].contains(&k.as_str()));
        DpopClient { enc, jwk }
    }

    /// RFC 7638 thumbprint: the token's `cnf.jkt`.
    pub fn jkt(&self) -> String {
        let s = |k: &str| self.jwk[k].as_str().unwrap().to_owned();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            s("crv"),
            s("kty"),
            s("x"),
            s("y")
        );
        b64_sha256(canonical.as_bytes())
    }

    /// A proof for `method` `url` and `token`, issued now.
    pub fn proof(&self, method: &str, url: &str, token: &str) -> String {
        self.proof_with(method, url, token, |_| {})
    }

    /// A proof whose claims `edit` changes before signing.
    pub fn proof_with(
        &self,
        method: &str,
        url: &str,
        token: &str,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": url,
            "iat": chrono::Utc::now().timestamp(),
            "ath": b64_sha256(token.as_bytes()),
        });
        edit(claims.as_object_mut().unwrap());
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.enc, Algorithm::ES256)
            .expect("sign proof");
        format!("{input}.{sig}")
    }
}

/// base64url(SHA-256(bytes)), no padding.
pub fn b64_sha256(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}
