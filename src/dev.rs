//! `--dev`: a built-in, Keycloak-shaped issuer so portcullis runs on a fresh
//! machine with no IdP. Its RSA key is created once in the data dir and kept
//! across restarts, so dev tokens survive a restart too.
//!
//! Never for production: `serve --dev` binds only to loopback and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

use crate::jwt::keys::{KeySet, parse_jwks};

/// Realm path of the dev issuer under the HTTP address.
pub const REALM_PATH: &str = "/realms/dev";
/// Audience the dev issuer puts in tokens and `--dev` accepts.
pub const AUDIENCE: &str = "portcullis";
const KEY_FILE: &str = "dev-signing-key.pem";
const ISSUER_FILE: &str = "dev-issuer";

/// The dev signing key and its public JWKS.
pub struct DevIssuer {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    jwks: JwkSet,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Claims of a dev token.
#[derive(Debug, Clone)]
pub struct DevTokenSpec {
    pub sub: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub scopes: Vec<String>,
    pub expires_in: Duration,
    pub client: String,
}

// === impl DevIssuer ===

impl DevIssuer {
    /// Loads the key from `data_dir`, creating it (mode 0600) if missing.
    pub fn load_or_create(data_dir: &Path, issuer: String) -> anyhow::Result<DevIssuer> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let path = data_dir.join(KEY_FILE);
        let pem_text = if path.exists() {
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
        } else {
            let text = generate_pem()?;
            write_private(&path, text.as_bytes())?;
            tracing::info!(path = %path.display(), "created dev signing key");
            text
        };
        Self::from_pem(&pem_text, issuer)
    }

    /// Loads an existing key (for `dev-token`); fails if `serve --dev` never ran.
    pub fn load_existing(data_dir: &Path, issuer: Option<String>) -> anyhow::Result<DevIssuer> {
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            bail!(
                "no dev signing key at {}; run `portcullis serve --dev --data-dir {}` once first",
                path.display(),
                data_dir.display()
            );
        }
        let issuer = match issuer {
            Some(i) => i,
            None => std::fs::read_to_string(data_dir.join(ISSUER_FILE))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| format!("http://127.0.0.1:9192{REALM_PATH}")),
        };
        let text = std::fs::read_to_string(&path)?;
        Self::from_pem(&text, issuer)
    }

    fn from_pem(pem_text: &str, issuer: String) -> anyhow::Result<DevIssuer> {
        let encoding = EncodingKey::from_rsa_pem(pem_text.as_bytes())
            .context("dev signing key is not a valid RSA private key")?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .context("deriving the dev public key")?;
        let kid = kid_for(&jwk);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(DevIssuer {
            issuer,
            kid,
            encoding,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    /// Records the issuer URL in the data dir so `dev-token` uses the same.
    pub fn remember_issuer(&self, data_dir: &Path) -> anyhow::Result<()> {
        std::fs::write(data_dir.join(ISSUER_FILE), &self.issuer)?;
        Ok(())
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Public JWKS as served at `/protocol/openid-connect/certs`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The same keys, parsed for verification.
    pub fn key_set(&self) -> anyhow::Result<KeySet> {
        let body = serde_json::to_vec(&self.jwks)?;
        let parsed = parse_jwks(&body)?;
        Ok(parsed.keys)
    }

    /// OIDC discovery document, Keycloak-shaped.
    pub fn discovery(&self) -> serde_json::Value {
        let iss = &self.issuer;
        serde_json::json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
            "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
            "authorization_endpoint": format!("{iss}/protocol/openid-connect/auth"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": [],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
        })
    }

    /// Signs an access token shaped like Keycloak's.
    pub fn mint(&self, spec: &DevTokenSpec) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let username = spec.username.clone().unwrap_or_else(|| spec.sub.clone());
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "sub": spec.sub,
            "aud": [AUDIENCE],
            "azp": spec.client,
            "typ": "Bearer",
            "iat": now,
            "exp": now.saturating_add(spec.expires_in.as_secs()),
            "jti": uuid::Uuid::new_v4().to_string(),
            "sid": uuid::Uuid::new_v4().to_string(),
            "preferred_username": username,
            "scope": spec.scopes.join(" "),
        });
        if let Some(email) = &spec.email {
            claims["email"] = serde_json::Value::from(email.as_str());
        }
        // Asked for a `service-account-…` user, mint what Keycloak issues on a
        // client_credentials grant: the `client_id` claim (equal to `azp`) is
        // what makes a token a service account, not the name.
        if username.starts_with("service-account-") {
            claims["client_id"] = serde_json::Value::from(spec.client.as_str());
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

fn kid_for(jwk: &Jwk) -> String {
    let material = serde_json::to_vec(&jwk.algorithm).unwrap_or_default();
    hex::encode(&Sha256::digest(material)[..8])
}

fn generate_pem() -> anyhow::Result<String> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
        .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
    Ok(pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        der.as_ref().to_vec(),
    )))
}

pub(crate) fn write_private(path: &PathBuf, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
