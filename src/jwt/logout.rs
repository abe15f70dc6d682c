//! OpenID Connect Back-Channel Logout 1.0 §2.6: validating a logout token.
//!
//! In order: header (`typ` must be `logout+jwt`, as Keycloak sends it; an
//! access token's `JWT` is refused, and the access-token path refuses
//! `logout+jwt`, so neither passes as the other), `iss` of an issuer with
//! `backchannel_logout` configured, signature with that issuer's keys
//! (`alg` from its allow-list), `aud` containing one of
//! `backchannel_logout.audiences`, `exp` if present, `iat` within
//! `leeway_seconds` of now (either way), the back-channel-logout event in
//! `events`, `sid` and/or `sub`, no `nonce`, a `jti`. The replay check (`jti`
//! seen before) is the caller's: it must only remember tokens that passed.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use super::{JwtError, KeyLookupError, Verifier, map_jwt_err, token, unix_now};

/// The `events` member a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a logout token was refused (a 400, except [`Self::KeysUnavailable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// Structure, header, signature, `iss`, `aud`, `exp` (see [`JwtError`]).
    #[error("{0}")]
    Jwt(JwtError),
    /// A claim §2.6 requires is missing or wrong.
    #[error("{0}")]
    Claims(&'static str),
    /// The token's issuer does not accept back-channel logout.
    #[error("issuer does not accept back-channel logout")]
    NotEnabled,
    /// Its `jti` was seen before.
    #[error("logout token replayed")]
    Replayed,
    /// The issuer's keys could not be loaded: we cannot decide (a 503).
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl LogoutTokenError {
    /// A fixed metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            LogoutTokenError::Jwt(JwtError::BadSignature | JwtError::UnknownKey) => "signature",
            LogoutTokenError::Jwt(JwtError::Audience) => "audience",
            LogoutTokenError::Jwt(JwtError::UnknownIssuer) => "issuer",
            LogoutTokenError::Jwt(JwtError::Expired) => "expired",
            LogoutTokenError::Jwt(_) => "malformed",
            LogoutTokenError::Claims(_) => "claims",
            LogoutTokenError::NotEnabled => "issuer",
            LogoutTokenError::Replayed => "replayed",
            LogoutTokenError::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl From<JwtError> for LogoutTokenError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::KeysUnavailable => LogoutTokenError::KeysUnavailable,
            other => LogoutTokenError::Jwt(other),
        }
    }
}

/// A valid logout token: what it logs out, and the issuer's settings.
#[derive(Debug, Clone)]
pub struct LogoutToken {
    pub issuer: Arc<str>,
    pub jti: String,
    pub iat: i64,
    pub sid: Option<String>,
    pub sub: Option<String>,
    /// `issuers[].backchannel_logout.include_pats`.
    pub include_pats: bool,
    /// `issuers[].max_token_lifetime`: how long the logout is remembered.
    pub max_token_lifetime: Duration,
    /// How long its `jti` must be remembered to refuse a replay (until its
    /// `iat` leaves the accepted window).
    pub replay_window: Duration,
}

// === impl Verifier ===

impl Verifier {
    /// Does any configured issuer accept back-channel logout?
    pub fn accepts_backchannel_logout(&self) -> bool {
        self.issuers
            .values()
            .any(|rt| rt.cfg.backchannel_logout.is_some())
    }

    /// Whether logouts apply to `issuer`'s tokens: `None` when it has no
    /// `backchannel_logout`, else `Some(include_pats)`.
    pub fn logout_policy(&self, issuer: &str) -> Option<bool> {
        let rt = self.issuers.get(issuer)?;
        rt.cfg.backchannel_logout.as_ref().map(|b| b.include_pats)
    }

    /// Validates a back-channel logout token (never cached).
    pub async fn verify_logout(&self, token: &str) -> Result<LogoutToken, LogoutTokenError> {
        let (h, p) = token::split(token)?;
        let header = token::header_typed(h, token::LOGOUT_TYPS, true)?;
        // `peek` refuses duplicate claim names before anything reads them.
        let peeked = token::peek(p, "")?;
        let rt = self
            .issuers
            .get(&peeked.iss)
            .ok_or(JwtError::UnknownIssuer)?;
        let bcl = rt
            .cfg
            .backchannel_logout
            .as_ref()
            .ok_or(LogoutTokenError::NotEnabled)?;
        if !rt.cfg.algorithms.contains(&header.alg) {
            return Err(JwtError::AlgNotAllowed.into());
        }
        let key = rt.keys.key_for(&header.kid).await.map_err(|e| match e {
            KeyLookupError::UnknownKid => JwtError::UnknownKey,
            KeyLookupError::Unavailable => JwtError::KeysUnavailable,
        })?;
        if !key.key_type.fits(header.alg) || key.alg.is_some_and(|a| a != header.alg) {
            return Err(JwtError::KeyMismatch.into());
        }
        let mut v = Validation::new(header.alg);
        v.leeway = rt.cfg.leeway_seconds;
        // §2.6: `exp` is optional in a logout token; checked when present.
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_audience(&bcl.audiences);
        v.set_issuer(&[&rt.cfg.issuer]);
        v.set_required_spec_claims(&["iss", "aud"]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(map_jwt_err)?;
        let leeway = rt.cfg.leeway_seconds;
        let c = checked_claims(&data.claims, leeway as i64, unix_now())?;
        Ok(LogoutToken {
            issuer: rt.issuer.clone(),
            jti: c.jti,
            iat: c.iat,
            sid: c.sid,
            sub: c.sub,
            include_pats: bcl.include_pats,
            max_token_lifetime: rt.cfg.max_token_lifetime,
            replay_window: Duration::from_secs(2 * leeway + 1),
        })
    }
}

/// The claims §2.6 asks for, after the signature checks.
struct Checked {
    jti: String,
    iat: i64,
    sid: Option<String>,
    sub: Option<String>,
}

/// Longest accepted `sid`/`sub`/`jti` (as the revocation bus carries them).
const MAX_VALUE_LEN: usize = 512;

/// Non-empty, bounded, no control characters: safe to store, log and put
/// on the bus.
fn valid_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_VALUE_LEN && !v.chars().any(char::is_control)
}

/// §2.6 steps 3–5 on verified claims, at `now` (Unix seconds).
fn checked_claims(
    c: &Map<String, Value>,
    leeway: i64,
    now: i64,
) -> Result<Checked, LogoutTokenError> {
    let bad = LogoutTokenError::Claims;
    let iat = c
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(bad("missing iat"))?;
    if iat > now + leeway {
        return Err(bad("iat is in the future"));
    }
    if iat < now - leeway {
        return Err(bad("iat is too old (beyond leeway_seconds)"));
    }
    let event = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(bad("events does not contain the back-channel logout event"));
    }
    if c.contains_key("nonce") {
        return Err(bad("nonce is not allowed in a logout token"));
    }
    // Keycloak also sends its own `typ` claim: "Logout".
    if c.get("typ").is_some_and(|t| t.as_str() != Some("Logout")) {
        return Err(bad("typ claim is not Logout"));
    }
    let text = |k: &str| -> Result<Option<String>, LogoutTokenError> {
        match c.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if valid_value(s) => Ok(Some(s.clone())),
            Some(_) => Err(bad("sid, sub and jti must be non-empty strings")),
        }
    };
    let (sid, sub) = (text("sid")?, text("sub")?);
    if sid.is_none() && sub.is_none() {
        return Err(bad("neither sid nor sub is present"));
    }
    let jti = text("jti")?.ok_or(bad("missing jti"))?;
    Ok(Checked { jti, iat, sid, sub })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({
            "iat": 1000, "jti": "j1", "sid": "s1", "sub": "u1", "typ": "Logout",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base.as_object().unwrap().clone()
    }

    fn refusal(extra: Value) -> String {
        match checked_claims(&claims(extra), 30, 1000) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_claim_rule_refuses_on_its_own() {
        let ok = checked_claims(&claims(json!({})), 30, 1000).unwrap();
        assert_eq!((ok.jti.as_str(), ok.sid.as_deref()), ("j1", Some("s1")));
        assert!(
            checked_claims(&claims(json!({"sid": null})), 30, 1000).is_ok(),
            "sub alone"
        );
        assert!(
            checked_claims(&claims(json!({"sub": null})), 30, 1000).is_ok(),
            "sid alone"
        );
        let cases = [
            (json!({"iat": null}), "missing iat"),
            (json!({"iat": 1031}), "future"),
            (json!({"iat": 969}), "too old"),
            (json!({"events": null}), "events"),
            (json!({"events": {"other": {}}}), "events"),
            (json!({"events": {BACKCHANNEL_LOGOUT_EVENT: "x"}}), "events"),
            (json!({"nonce": "n"}), "nonce"),
            (json!({"typ": "Bearer"}), "typ"),
            (json!({"sid": null, "sub": null}), "neither sid nor sub"),
            (json!({"sid": 5}), "non-empty strings"),
            (json!({"sub": ""}), "non-empty strings"),
            (json!({"jti": null}), "missing jti"),
        ];
        for (extra, want) in cases {
            let e = refusal(extra.clone());
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
