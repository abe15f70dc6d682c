//! Signed identity assertions (`assertion` config, per-route
//! `assertion.audience`): a short-lived JWT in `x-auth-assertion` for
//! upstreams that must not trust plain headers (Pomerium's, Authorino's
//! "wristband", Oathkeeper's `id_token`).
//!
//! Signed by portcullis with ES256 or EdDSA; the key comes from
//! `assertion.key_file` or is generated once into `data_dir`. Public keys
//! are served at `/.well-known/jwks.json` on the HTTP port. An assertion is
//! cached per identity, route and audience until shortly before it expires,
//! so the hot path hashes and looks up, it does not sign.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config_error::ConfigError;
use crate::identity::Identity;

/// File the generated key is kept in, under `data_dir`.
pub const KEY_FILE: &str = "assertion-signing-key.pem";

/// The `assertion:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionConfig {
    /// `ES256` (default) or `EdDSA`.
    pub algorithm: AssertionAlgorithm,
    /// PKCS#8 PEM private key; absent: generated into `data_dir`.
    pub key_file: Option<PathBuf>,
    /// `iss` of the assertions (default `portcullis`).
    pub issuer: String,
    /// Lifetime of one assertion (default `5m`; 10s to 1h), capped at the
    /// credential's own expiry.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Cached assertions kept (default 100000).
    pub cache_capacity: u64,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        AssertionConfig {
            algorithm: AssertionAlgorithm::ES256,
            key_file: None,
            issuer: "portcullis".to_owned(),
            lifetime: Duration::from_secs(300),
            cache_capacity: 100_000,
        }
    }
}

/// `assertion.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AssertionAlgorithm {
    ES256,
    EdDSA,
}

impl AssertionConfig {
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if self.issuer.is_empty() {
            errs.push(ConfigError::new(
                "assertion.issuer",
                "must not be empty (default portcullis)",
            ));
        }
        if self.lifetime < Duration::from_secs(10) || self.lifetime > Duration::from_secs(3600) {
            errs.push(ConfigError::new(
                "assertion.lifetime",
                format!(
                    "{} is out of range; accepted: 10s to 1h",
                    humantime::format_duration(self.lifetime)
                ),
            ));
        }
        if self.cache_capacity == 0 {
            errs.push(ConfigError::new(
                "assertion.cache_capacity",
                "must be at least 1",
            ));
        }
        errs
    }
}

/// One cached assertion.
struct Minted {
    jwt: Arc<str>,
    /// Re-sign from this Unix second on (shortly before `exp`).
    refresh_at: i64,
}

/// The signer, its public JWKS and the assertion cache.
pub struct Assertions {
    issuer: String,
    lifetime: i64,
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwks: serde_json::Value,
    cache: moka::sync::Cache<[u8; 32], Arc<Minted>>,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions")
            .field("issuer", &self.issuer)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Assertions {
    /// Loads `key_file`, or the key in `data_dir` (creating it, mode 0600).
    pub fn load(cfg: &AssertionConfig, data_dir: &Path) -> anyhow::Result<Assertions> {
        let (path, generated) = match &cfg.key_file {
            Some(p) => (p.clone(), false),
            None => (data_dir.join(KEY_FILE), true),
        };
        let text = if path.exists() || !generated {
            std::fs::read_to_string(&path)
                .with_context(|| format!("assertion.key_file: reading {}", path.display()))?
        } else {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating data dir {}", data_dir.display()))?;
            let text = generate(cfg.algorithm)?;
            crate::dev::write_private(&path, text.as_bytes())?;
            tracing::info!(path = %path.display(), "created the identity assertion signing key");
            text
        };
        Self::from_pem(cfg, &text).with_context(|| {
            format!(
                "assertion.key_file: {} is not a PKCS#8 {:?} private key",
                path.display(),
                cfg.algorithm
            )
        })
    }

    fn from_pem(cfg: &AssertionConfig, text: &str) -> anyhow::Result<Assertions> {
        let der = pem::parse(text)?.into_contents();
        let (alg, encoding, jwk) = match cfg.algorithm {
            AssertionAlgorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                // Uncompressed point: 0x04 ‖ x ‖ y.
                let point = pair.public_key().as_ref();
                anyhow::ensure!(point.len() == 65, "unexpected P-256 public key");
                let jwk = serde_json::json!({
                    "crv": "P-256", "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                });
                (Algorithm::ES256, EncodingKey::from_ec_der(&der), jwk)
            }
            AssertionAlgorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
                let jwk = serde_json::json!({
                    "crv": "Ed25519", "kty": "OKP",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                });
                (Algorithm::EdDSA, EncodingKey::from_ed_der(&der), jwk)
            }
        };
        // RFC 7638 thumbprint of the required members, in lexical order.
        let canonical = serde_json::to_string(&jwk)?;
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let mut jwk = jwk;
        jwk["kid"] = kid.clone().into();
        jwk["use"] = "sig".into();
        jwk["alg"] = match alg {
            Algorithm::EdDSA => "EdDSA",
            _ => "ES256",
        }
        .into();
        let lifetime = cfg.lifetime.as_secs() as i64;
        Ok(Assertions {
            issuer: cfg.issuer.clone(),
            lifetime,
            alg,
            kid,
            encoding,
            jwks: serde_json::json!({ "keys": [jwk] }),
            cache: moka::sync::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .time_to_live(cfg.lifetime)
                .build(),
        })
    }

    /// The public keys (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// The assertion for `id` on `route` for `audience`: cached, or signed
    /// now. Shortly before expiry (the last fifth of its life, at most 60 s)
    /// a new one is signed.
    pub fn assertion(
        &self,
        id: &Identity,
        route: &str,
        audience: &str,
    ) -> anyhow::Result<Arc<str>> {
        let now = crate::jwt::unix_now();
        let key = cache_key(id, route, audience);
        if let Some(m) = self.cache.get(&key)
            && now < m.refresh_at
        {
            return Ok(m.jwt.clone());
        }
        let exp = (now + self.lifetime).min(id.expires_at);
        let margin = (self.lifetime / 5).clamp(1, 60);
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": id.subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": uuid::Uuid::new_v4().to_string(),
            "route": route,
            "auth_method": id.kind.as_str(),
            "idp_iss": id.issuer.as_deref(),
            "preferred_username": id.username,
            "email": id.email,
            "azp": id.client,
            "scope": id.scopes.join(" "),
            "token_id": id.token_id,
        });
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        let jwt: Arc<str> = jsonwebtoken::encode(&header, &claims, &self.encoding)?.into();
        self.cache.insert(
            key,
            Arc::new(Minted {
                jwt: jwt.clone(),
                refresh_at: exp - margin,
            }),
        );
        Ok(jwt)
    }
}

/// Everything an assertion says, hashed: a different identity, route or
/// audience is a different entry.
fn cache_key(id: &Identity, route: &str, audience: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(audience);
    field(route);
    field(id.kind.as_str());
    field(id.issuer.as_deref().unwrap_or("\u{0}"));
    field(&id.subject);
    field(id.username.as_deref().unwrap_or("\u{0}"));
    field(id.email.as_deref().unwrap_or("\u{0}"));
    field(id.client.as_deref().unwrap_or("\u{0}"));
    field(id.token_id.as_deref().unwrap_or("\u{0}"));
    for s in id.scopes.iter() {
        field(s);
    }
    h.update(id.expires_at.to_le_bytes());
    h.finalize().into()
}

fn generate(alg: AssertionAlgorithm) -> anyhow::Result<String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = match alg {
        AssertionAlgorithm::ES256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?
                .as_ref()
                .to_vec()
        }
        AssertionAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?
            .as_ref()
            .to_vec(),
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CredentialKind;

    fn id(sub: &str) -> Identity {
        Identity {
            kind: CredentialKind::Jwt,
            subject: sub.into(),
            username: Some("u".into()),
            email: None,
            client: Some("web".into()),
            scopes: vec!["a:read".to_owned()].into(),
            token_id: None,
            issuer: Some(Arc::from("https://idp.example")),
            expires_at: crate::jwt::unix_now() + 3600,
            claims: Vec::new(),
            rendered: Default::default(),
        }
    }

    #[test]
    fn signs_verifiable_tokens_cached_per_identity_route_and_audience() {
        for alg in [AssertionAlgorithm::ES256, AssertionAlgorithm::EdDSA] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = AssertionConfig {
                algorithm: alg,
                ..Default::default()
            };
            let a = Assertions::load(&cfg, dir.path()).unwrap();
            // The generated key is reused, so the kid is stable.
            let b = Assertions::load(&cfg, dir.path()).unwrap();
            assert_eq!(a.kid, b.kid);
            let t1 = a.assertion(&id("alice"), "orders", "orders-api").unwrap();
            assert!(Arc::ptr_eq(
                &t1,
                &a.assertion(&id("alice"), "orders", "orders-api").unwrap()
            ));
            assert_ne!(t1, a.assertion(&id("bob"), "orders", "orders-api").unwrap());
            assert_ne!(t1, a.assertion(&id("alice"), "orders", "billing").unwrap());
            assert_ne!(
                t1,
                a.assertion(&id("alice"), "other", "orders-api").unwrap()
            );
            // Verifies against the published JWKS.
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(a.jwks().clone()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
            let mut v = jsonwebtoken::Validation::new(a.alg);
            v.set_audience(&["orders-api"]);
            v.set_issuer(&["portcullis"]);
            let data = jsonwebtoken::decode::<serde_json::Value>(t1.as_bytes(), &key, &v).unwrap();
            assert_eq!(data.claims["sub"], "alice");
            assert_eq!(data.claims["route"], "orders");
            assert_eq!(data.claims["auth_method"], "jwt");
            assert_eq!(data.header.kid.as_deref(), Some(a.kid.as_str()));
        }
    }

    #[test]
    fn expiry_is_capped_by_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let a = Assertions::load(&AssertionConfig::default(), dir.path()).unwrap();
        let mut short = id("carol");
        short.expires_at = crate::jwt::unix_now() + 20;
        let t = a.assertion(&short, "r", "aud").unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["exp"], short.expires_at);
    }

    #[test]
    fn a_wrong_key_file_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "not a key").unwrap();
        let cfg = AssertionConfig {
            key_file: Some(p),
            ..Default::default()
        };
        let err = format!("{:#}", Assertions::load(&cfg, dir.path()).unwrap_err());
        assert!(err.contains("assertion.key_file"), "{err}");
        let cfg = AssertionConfig {
            lifetime: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(cfg.validate()[0].key, "assertion.lifetime");
    }
}
