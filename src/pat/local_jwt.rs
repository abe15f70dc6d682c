//! `pat.issuer: local-jwt` (development only): PATs that are HS256 JWTs
//! signed with `pat.local_jwt_key`. A valid signature is not enough: Check
//! also requires the token's SHA-256 to be registered and unrevoked, exactly
//! like an opaque PAT.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// `iss` of every local-jwt PAT.
pub const ISSUER: &str = "urn:portcullis:local-pat";

/// The HS256 key, parsed once.
pub struct LocalJwt {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for LocalJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalJwt { .. }")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    jti: String,
    iat: i64,
    exp: i64,
    scope: String,
    token_use: String,
}

/// What a presented token is, as far as the local key can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCheck {
    /// Not an HS256 JWT: leave it to the other credential paths.
    NotOurs,
    /// HS256 but the signature or claims are wrong.
    Invalid,
    /// Signed by us, but `exp` has passed.
    Expired,
    /// Signed by us and unexpired; registration is still to be checked.
    Signed,
}

impl LocalJwt {
    pub fn new(key: &str) -> LocalJwt {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        LocalJwt {
            enc: EncodingKey::from_secret(key.as_bytes()),
            dec: DecodingKey::from_secret(key.as_bytes()),
            validation,
        }
    }

    /// Signs a PAT for `sub`.
    pub fn mint(
        &self,
        sub: &str,
        scopes: &[String],
        jti: &str,
        now: DateTime<Utc>,
        exp: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            jti: jti.into(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            scope: scopes.join(" "),
            token_use: "pat".into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
    }

    /// An HS256 JWT: the only kind this key could have signed.
    pub fn is_ours(&self, token: &str) -> bool {
        matches!(jsonwebtoken::decode_header(token), Ok(h) if h.alg == Algorithm::HS256)
    }

    /// Signature, `iss` and `exp`. No I/O.
    pub fn check(&self, token: &str) -> LocalCheck {
        if !self.is_ours(token) {
            return LocalCheck::NotOurs;
        }
        match jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation) {
            Ok(d) if d.claims.token_use == "pat" => LocalCheck::Signed,
            Ok(_) => LocalCheck::Invalid,
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                LocalCheck::Expired
            }
            Err(_) => LocalCheck::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_then_check() {
        let k = LocalJwt::new("0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let t = k
            .mint(
                "alice",
                &["a:read".into()],
                "j1",
                now,
                now + chrono::Duration::hours(1),
            )
            .unwrap();
        assert_eq!(k.check(&t), LocalCheck::Signed);
        let other = LocalJwt::new("another key, also 32 bytes long!!");
        assert_eq!(other.check(&t), LocalCheck::Invalid);
        let old = k
            .mint("alice", &[], "j2", now, now - chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(k.check(&old), LocalCheck::Expired);
        assert_eq!(k.check("pat_abc"), LocalCheck::NotOurs);
        assert_eq!(k.check("a.b.c"), LocalCheck::NotOurs);
    }
}
