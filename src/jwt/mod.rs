//! Keycloak JWT verification (RFC 8725 checks) with a verified-token cache.
//!
//! Cold path: structure → header → `iss` peek → issuer → `kid` → key of a
//! fitting type → signature, against the key parsed once per JWKS entry
//! (`signature`) → registered claims (jsonwebtoken) → our own
//! checks (`iat`, Keycloak `typ`) → scopes → cache. Warm path: a keyed MAC
//! of the token ([`CacheKeys`]) → cache hit → `exp` re-check → is the signing key still in the
//! issuer's current JWKS?
//!
//! The cache is `quick_cache` (S3-FIFO in flat per-shard tables: about
//! 110 bytes per entry besides the value, slabs grown by doubling, where
//! moka spent about 300 in seven allocations; benches/BENCHMARKS.md). It
//! has no per-entry expiry: the exact `exp` is checked on every hit (and the
//! entry dropped then), capacity bounds it, and [`Verifier::purge_expired`]
//! reclaims tokens that expired without being presented again.

mod cache_key;
pub mod claims;
pub mod config;
mod issuer;
pub mod keys;
mod logout;
mod payload;
#[cfg(test)]
mod payload_tests;
mod scopes;
mod signature;
#[cfg(test)]
mod signature_tests;
mod token;

pub use cache_key::{CacheKey, CacheKeys};
pub use issuer::{IssuerKeys, JwksError, KeyLookupError, Published};
pub use logout::{BACKCHANNEL_LOGOUT_EVENT, LogoutToken, LogoutTokenError};
pub use scopes::from_roles as scopes_from_roles;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use quick_cache::sync::Cache;
use serde::Deserialize;

use crate::identity::{CredentialKind, Identity};
pub use config::{BackchannelLogoutConfig, IssuerConfig, JwtConfig, ScopeSourceConfig};

/// Why a JWT was refused. Each maps to one denial in `authz::deny`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("bad header: {0}")]
    Header(&'static str),
    #[error("bad claims: {0}")]
    Claims(&'static str),
    #[error("untrusted issuer")]
    UnknownIssuer,
    #[error("alg not allowed for this issuer")]
    AlgNotAllowed,
    #[error("unknown signing key")]
    UnknownKey,
    /// A cached verification whose signing key has left the JWKS since.
    #[error("signing key no longer published")]
    KeyWithdrawn,
    #[error("key cannot verify this alg")]
    KeyMismatch,
    #[error("invalid signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("audience not accepted")]
    Audience,
    #[error("token type not accepted")]
    TokenType,
    /// Keys unavailable (never loaded, or refetch timed out): a 503, not a 401.
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

/// A verified token: the identity plus the claims later stages need.
#[derive(Debug)]
pub struct VerifiedJwt {
    pub identity: Arc<Identity>,
    /// `jti`, for the deny-list.
    pub jti: Option<Box<str>>,
    /// `sid` (Keycloak session), for the deny-list and logout marks.
    pub sid: Option<Box<str>>,
    /// `iat`, for a logged-out subject's not-before mark.
    pub issued_at: Option<i64>,
    /// `aud` values, for exchanged-PAT detection. Shared between tokens
    /// with the same audiences (interned like scopes: nearly every token of
    /// an issuer carries the same list).
    pub audiences: Arc<[String]>,
    /// The value of the PAT marker claim (`pat.jwt_marker.claim`, default
    /// `token_use`), when present.
    pub token_use: Option<Box<str>>,
    /// `cnf`: the key or certificate the token is bound to, if any.
    pub cnf: Confirmation,
    /// The issuer's `dpop` setting.
    pub dpop: config::DpopMode,
    /// The key that verified the signature, re-checked on every cache hit.
    signed_by: SignedBy,
}

/// A token's `cnf` claim (RFC 7800): what the presenter must prove it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmation {
    /// `cnf.jkt`: RFC 7638 thumbprint of a DPoP key (RFC 9449).
    pub jkt: Option<Box<str>>,
    /// `cnf["x5t#S256"]`: SHA-256 thumbprint of a client certificate (RFC 8705).
    pub x5t_s256: Option<Box<str>>,
}

impl Confirmation {
    /// Reads `cnf`. A member we know with a non-string value makes the
    /// token unusable (it is bound to something we cannot check).
    fn from_claim(cnf: Option<&serde_json::Value>) -> Result<Confirmation, JwtError> {
        let Some(cnf) = cnf else {
            return Ok(Confirmation::default());
        };
        let obj = cnf
            .as_object()
            .ok_or(JwtError::Claims("cnf is not an object"))?;
        let member = |name: &str| match obj.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.as_str().into())),
            Some(_) => Err(JwtError::Claims("cnf member is not a non-empty string")),
        };
        Ok(Confirmation {
            jkt: member("jkt")?,
            x5t_s256: member("x5t#S256")?,
        })
    }
}

/// Keycloak's `typ` claim: one of the issuer's `token_types`, or `DPoP`,
/// which Keycloak 26 puts in a DPoP-bound access token (instead of
/// `Bearer`). `DPoP` is accepted only from a token carrying `cnf.jkt`, so
/// the binding check that follows always demands its proof.
fn token_type_accepted(typ: Option<&str>, accepted: &[String], cnf: &Confirmation) -> bool {
    match typ {
        Some("DPoP") => cnf.jkt.is_some(),
        Some(t) => accepted.iter().any(|a| a == t),
        None => false,
    }
}

/// The issuer's key manager and the key a verification rests on. Kept in
/// the cached entry so a hit costs one lookup in the current key set, not a
/// search for the issuer.
#[derive(Debug)]
struct SignedBy {
    keys: Arc<IssuerKeys>,
    key: Arc<keys::VerifyKey>,
}

/// Claims we read. Derived `Deserialize` (jsonwebtoken's path, every
/// string owned) rejects duplicate names of these; [`payload::read`] fills
/// it borrowing from the payload.
#[derive(Debug, Default, Deserialize)]
struct Claims<'a> {
    sub: Option<Cow<'a, str>>,
    exp: Option<i64>,
    iat: Option<i64>,
    typ: Option<Cow<'a, str>>,
    azp: Option<Cow<'a, str>>,
    preferred_username: Option<Cow<'a, str>>,
    email: Option<Cow<'a, str>>,
    scope: Option<Cow<'a, str>>,
    sid: Option<Cow<'a, str>>,
    jti: Option<Cow<'a, str>>,
    /// Keycloak's service-account marker (see [`credential_kind`]). Read as
    /// any JSON value so an odd type from a custom mapper is simply "not a
    /// service account" instead of failing the whole token; only a string
    /// is kept.
    #[serde(default, deserialize_with = "payload::any_str")]
    client_id: Option<Cow<'a, str>>,
    /// The same marker under its pre-`client_id` Keycloak name.
    #[serde(default, rename = "clientId", deserialize_with = "payload::any_str")]
    client_id_legacy: Option<Cow<'a, str>>,
    #[serde(default)]
    aud: Option<OneOrMany<'a>>,
    realm_access: Option<scopes::Roles>,
    /// Confirmation (sender-constrained tokens).
    cnf: Option<serde_json::Value>,
    resource_access: Option<HashMap<String, scopes::Roles>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

struct IssuerRuntime {
    cfg: IssuerConfig,
    issuer: Arc<str>,
    keys: Arc<IssuerKeys>,
    /// Prebuilt `Validation`s per allowed alg (a `Validation` must not mix
    /// key families).
    validations: HashMap<Algorithm, Validations>,
}

/// Verifies JWTs from the configured issuers.
pub struct Verifier {
    issuers: HashMap<String, IssuerRuntime>,
    cache: Cache<CacheKey, Arc<VerifiedJwt>>,
    /// How a token becomes its cache key.
    keys: CacheKeys,
    /// Name of the PAT marker claim, captured into `VerifiedJwt::token_use`.
    marker_claim: Arc<str>,
    /// Claims captured into `Identity::claims` (`identity_headers.claims`).
    captured_claims: Vec<Arc<str>>,
    /// Scope sets shared by the verified tokens.
    scope_sets: scopes::ScopeSets,
    /// Audience lists shared by the verified tokens (the same interning).
    audience_sets: scopes::ScopeSets,
    /// Whether [`payload::read`] may read the claims: not when the marker
    /// claim is one of the claims it interprets (`peek` would read that
    /// member as the marker and jsonwebtoken as itself).
    read_claims: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// SHA-256 of a credential: the only form in which tokens are stored or
/// compared across replicas.
/// aws-lc's assembly (SHA-NI, AVX2 or SSSE3 by what the CPU has): on every
/// warm Check, and several times cheaper than `sha2`'s portable code on
/// CPUs without SHA-NI.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    // SHA-256 output is 32 bytes by definition.
    out.copy_from_slice(d.as_ref());
    out
}

// === impl Verifier ===

impl Verifier {
    /// Builds the verifier; `keys` supplies one key manager per issuer.
    pub fn new(
        issuers: &[IssuerConfig],
        jwt: &JwtConfig,
        mut keys: impl FnMut(&IssuerConfig) -> Arc<IssuerKeys>,
    ) -> Verifier {
        let issuers = issuers
            .iter()
            .map(|cfg| {
                let validations = cfg
                    .algorithms
                    .iter()
                    .map(|alg| (*alg, Validations::new(cfg, *alg)))
                    .collect();
                let rt = IssuerRuntime {
                    cfg: cfg.clone(),
                    issuer: Arc::from(cfg.issuer.as_str()),
                    keys: keys(cfg),
                    validations,
                };
                (cfg.issuer.clone(), rt)
            })
            .collect();
        let marker_claim = crate::pat::JwtMarker::default().claim;
        Verifier {
            issuers,
            cache: Cache::new(usize::try_from(jwt.cache_capacity).unwrap_or(usize::MAX)),
            keys: CacheKeys::random(),
            read_claims: !payload::READ_NAMES.contains(&marker_claim.as_str()),
            marker_claim: Arc::from(marker_claim.as_str()),
            captured_claims: Vec::new(),
            scope_sets: Default::default(),
            audience_sets: Default::default(),
        }
    }

    /// Sets the claim read into [`VerifiedJwt::token_use`]
    /// (`pat.jwt_marker.claim`; default `token_use`).
    pub fn with_marker_claim(mut self, claim: &str) -> Verifier {
        self.marker_claim = Arc::from(claim);
        self.read_claims = !payload::READ_NAMES.contains(&claim);
        self
    }

    /// Captures these claims into [`Identity::claims`] at verification
    /// (`identity_headers.claims`), so a cached token costs nothing more.
    pub fn with_captured_claims(mut self, claims: Vec<Arc<str>>) -> Verifier {
        self.captured_claims = claims;
        self
    }

    /// Key managers, for the refresher tasks and `/readyz`.
    pub fn key_managers(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers.values().map(|rt| &rt.keys)
    }

    /// True when every issuer has keys.
    /// The configured issuers' `iss` values (token ownership defaults).
    pub fn issuer_names(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// Whether `issuer` is configured (PATs of a removed issuer's users are
    /// refused: their owner can no longer be vouched for).
    pub fn trusts(&self, issuer: &str) -> bool {
        self.issuers.contains_key(issuer)
    }

    pub fn ready(&self) -> bool {
        self.issuers.values().all(|rt| rt.keys.is_ready())
    }

    /// Verifies `token`, from cache when possible.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedJwt>, JwtError> {
        let Some(hash) = self.keys.of(token) else {
            return Ok(Arc::new(self.verify_uncached(token).await?));
        };
        let cached = self.cache.get(&hash);
        crate::metrics::global().cache("jwt", cached.is_some());
        if let Some(hit) = cached {
            // The cache has no per-entry expiry; the claim is exact.
            if hit.identity.expires_at <= unix_now() {
                self.cache.remove(&hash);
                return Err(JwtError::Expired);
            }
            // A key removed from the JWKS was removed for a reason (often a
            // compromise): its tokens stop passing at the next refresh, not
            // at their `exp`.
            match hit.signed_by.keys.publishes(&hit.signed_by.key) {
                Published::Still => return Ok(hit),
                // The entry stays: replays keep getting this answer from
                // memory instead of unknown-`kid` refetches, and it follows
                // the key set should the key ever be published again.
                Published::Withdrawn => return Err(JwtError::KeyWithdrawn),
                // The kid now names other material: the cached answer says
                // nothing about it, so verify again from scratch.
                Published::Replaced => {
                    self.cache.remove(&hash);
                }
            }
        }
        let verified = Arc::new(self.verify_uncached(token).await?);
        self.cache.insert(hash, verified.clone());
        Ok(verified)
    }

    async fn verify_uncached(&self, token: &str) -> Result<VerifiedJwt, JwtError> {
        let (h, p) = token::split(token)?;
        let header = token::header(h)?;
        let text = token::payload_text(p)?;
        // One pass over the payload for the common shape, else `peek` now
        // and jsonwebtoken after the signature, as before (`payload`).
        let read = match header.plain && self.read_claims {
            true => payload::read(&text, &self.marker_claim),
            false => None,
        };
        let peeked;
        let (iss, marker) = match &read {
            Some(r) => (&*r.iss, r.marker.as_deref()),
            None => {
                peeked = token::peek_text(&text, &self.marker_claim)?;
                (peeked.iss.as_str(), peeked.marker.as_deref())
            }
        };
        let rt = self.issuers.get(iss).ok_or(JwtError::UnknownIssuer)?;
        let validation = rt
            .validations
            .get(&header.alg)
            .ok_or(JwtError::AlgNotAllowed)?;
        let key = rt.keys.key_for(&header.kid).await.map_err(|e| match e {
            KeyLookupError::UnknownKid => JwtError::UnknownKey,
            KeyLookupError::Unavailable => JwtError::KeysUnavailable,
        })?;
        if !key.key_type.fits(header.alg) || key.alg.is_some_and(|a| a != header.alg) {
            return Err(JwtError::KeyMismatch);
        }
        let token_use = marker.map(Box::<str>::from);
        let now = unix_now();
        let claims = match (key.parsed.get(header.alg), read) {
            // The signature against the key parsed at JWKS time, then
            // jsonwebtoken's registered-claims checks on the one reading.
            (Some(parsed), Some(read)) => {
                signature::verify(token, parsed)?;
                let leeway = rt.cfg.leeway_seconds;
                let clock = u64::try_from(now).unwrap_or(0);
                payload::validate(&read, clock, leeway, &rt.cfg.issuer, &rt.cfg.audiences)?;
                read.claims
            }
            // The signature against the parsed key, then jsonwebtoken for
            // everything else it checks.
            (Some(parsed), None) => {
                signature::verify(token, parsed)?;
                self.decode(token, &key, &validation.claims, header.alg)?
            }
            (None, _) => self.decode(token, &key, &validation.full, header.alg)?,
        };
        let exp = claims.exp.ok_or(JwtError::Claims("missing exp"))?;
        let leeway = rt.cfg.leeway_seconds as i64;
        if claims.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(JwtError::Claims("iat is in the future"));
        }
        let cnf = Confirmation::from_claim(claims.cnf.as_ref())?;
        if !token_type_accepted(claims.typ.as_deref(), &rt.cfg.token_types, &cnf) {
            return Err(JwtError::TokenType);
        }
        let kind = credential_kind(&claims);
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::Claims("missing sub"))?;
        let scopes = self.scope_sets.intern(scopes::effective(
            &rt.cfg.scopes,
            claims.scope.as_deref(),
            claims.realm_access.as_ref(),
            claims.resource_access.as_ref(),
        ));
        // Verified above; read again as a map only when claims are mapped.
        let captured = if self.captured_claims.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&text)
                .map(|m| claims::extract_claims(&m, &self.captured_claims))
                .unwrap_or_default()
        };
        let audiences = self.audience_sets.intern(match claims.aud {
            None => Vec::new(),
            Some(OneOrMany::One(a)) => vec![a.into_owned()],
            Some(OneOrMany::Many(v)) => v.into_iter().map(Cow::into_owned).collect(),
        });
        Ok(VerifiedJwt {
            identity: Arc::new(Identity {
                kind,
                subject: sub.into_owned(),
                username: claims.preferred_username.map(Cow::into_owned),
                email: claims.email.map(Cow::into_owned),
                client: claims.azp.map(Cow::into_owned),
                scopes,
                token_id: None,
                issuer: Some(rt.issuer.clone()),
                expires_at: exp,
                claims: captured,
                rendered: Default::default(),
            }),
            jti: claims.jti.map(Box::from),
            sid: claims.sid.map(Box::from),
            issued_at: claims.iat,
            audiences,
            token_use,
            cnf,
            dpop: rt.cfg.dpop,
            signed_by: SignedBy {
                keys: rt.keys.clone(),
                key,
            },
        })
    }

    /// The claims through `jsonwebtoken::decode` (with or without its
    /// signature step, as `validation` says), for tokens `payload::read`
    /// does not take.
    fn decode(
        &self,
        token: &str,
        key: &keys::VerifyKey,
        validation: &Validation,
        alg: Algorithm,
    ) -> Result<Claims<'static>, JwtError> {
        let data = jsonwebtoken::decode::<Claims<'static>>(token, &key.key, validation)
            .map_err(map_jwt_err)?;
        // jsonwebtoken read the header itself: it must have seen the alg the
        // key was chosen and the signature checked for.
        if data.header.alg != alg {
            return Err(JwtError::KeyMismatch);
        }
        Ok(data.claims)
    }

    /// Drops `token`'s cached verification (tests, fuzzing).
    pub fn forget(&self, token: &str) {
        if let Some(key) = self.keys.of(token) {
            self.cache.remove(&key);
        }
    }

    /// Number of cached verifications.
    pub fn cached(&self) -> u64 {
        self.cache.len() as u64
    }

    /// Drops every cached verification.
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Drops cached verifications whose token has expired, so memory
    /// follows the tokens in use rather than staying at the high-water mark
    /// until capacity evicts them (a hit on one is refused and dropped
    /// anyway). The server calls it every minute.
    pub fn purge_expired(&self) {
        let now = unix_now();
        self.cache.retain(|_, v| v.identity.expires_at > now);
    }
}

/// `service_account` for a Keycloak client_credentials token, else `jwt`.
///
/// Keycloak marks those tokens with the client's id in `client_id` (current
/// versions; `clientId` in older ones): the `service_account` client scope
/// maps it from a note only a client_credentials session carries, so user
/// tokens of the same client lack it. It must also equal `azp`, the client
/// the token was issued to. `preferred_username` plays no part: its
/// `service-account-` prefix is only a naming habit, and a user may be able
/// to choose a name such as `service-account-x`.
fn credential_kind(claims: &Claims<'_>) -> CredentialKind {
    let Some(azp) = claims.azp.as_deref().filter(|a| !a.is_empty()) else {
        return CredentialKind::Jwt;
    };
    let names_azp = |v: &Option<Cow<'_, str>>| v.as_deref() == Some(azp);
    if names_azp(&claims.client_id) || names_azp(&claims.client_id_legacy) {
        CredentialKind::ServiceAccount
    } else {
        CredentialKind::Jwt
    }
}

/// An issuer's `Validation`s for one alg.
struct Validations {
    /// Signature and claims: for keys without a parsed form.
    full: Validation,
    /// The same claims checks without the signature step, for a signature
    /// already checked against the parsed key ([`signature::verify`]).
    claims: Validation,
}

impl Validations {
    fn new(cfg: &IssuerConfig, alg: Algorithm) -> Validations {
        let full = validation_for(cfg, alg);
        let mut claims = full.clone();
        // Only ever used right after `signature::verify` succeeded on the
        // same token with a key of this alg (jsonwebtoken 10 offers no other
        // way to run its claims validation alone).
        #[allow(deprecated)]
        claims.insecure_disable_signature_validation();
        Validations { full, claims }
    }
}

fn validation_for(cfg: &IssuerConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = cfg.leeway_seconds;
    v.validate_exp = true;
    // jsonwebtoken leaves nbf unchecked by default.
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_audience(&cfg.audiences);
    v.set_issuer(&[&cfg.issuer]);
    // Without "aud" here a token lacking `aud` would pass the audience check.
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

fn map_jwt_err(e: jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => JwtError::Expired,
        K::ImmatureSignature => JwtError::NotYetValid,
        K::InvalidAudience => JwtError::Audience,
        K::InvalidIssuer => JwtError::UnknownIssuer,
        K::InvalidSignature => JwtError::BadSignature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => JwtError::KeyMismatch,
        K::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => JwtError::Claims("missing exp"),
            "aud" => JwtError::Audience,
            "sub" => JwtError::Claims("missing sub"),
            _ => JwtError::Claims("missing required claim"),
        },
        // Only a present but non-numeric `nbf` or `exp` (a missing or
        // malformed `exp` is caught as required first).
        K::InvalidClaimFormat(c) => match c.as_str() {
            "nbf" => JwtError::Claims("nbf is not a number"),
            "exp" => JwtError::Claims("exp is not a number"),
            _ => JwtError::Claims("a claim has an invalid format"),
        },
        K::Base64(_) => JwtError::Malformed("token is not valid base64url"),
        K::Json(_) | K::Utf8(_) => JwtError::Malformed("claims are not valid JSON"),
        K::InvalidRsaKey(_) | K::InvalidEcdsaKey | K::InvalidKeyFormat => JwtError::KeyMismatch,
        _ => JwtError::BadSignature,
    }
}
