//! Who is calling the API: the same engine that answers Checks verifies the
//! `Authorization` header. PATs are recognised in every form: opaque and
//! local-jwt (the engine says `pat`), and IdP-signed PAT JWTs (marked by
//! `pat.jwt_marker` or carrying `pat.exchange.audience`), which must be
//! registered and unrevoked here too.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::ApiError;
use crate::authz::Engine;
use crate::identity::{CredentialKind, Identity};
use crate::pat::{PatConfig, format};
use crate::store::TokenKind;

/// A verified API caller.
#[derive(Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    /// The PAT presented on this call, when the credential is a PAT.
    pub pat_id: Option<Uuid>,
    /// The presented credential: the `subject_token` of a token exchange.
    /// Never logged (see the `Debug` impl).
    bearer: String,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.identity)
            .field("pat_id", &self.pat_id)
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn subject(&self) -> &str {
        &self.identity.subject
    }

    /// The issuer vouching for the subject (for a PAT: its owner's issuer);
    /// empty when unknown, which owns nothing.
    pub fn issuer(&self) -> &str {
        self.identity.issuer.as_deref().unwrap_or("")
    }

    pub fn is_pat(&self) -> bool {
        self.identity.kind == CredentialKind::Pat
    }

    pub(crate) fn bearer(&self) -> &str {
        &self.bearer
    }
}

/// The token from `Authorization: Bearer <token>`.
pub fn bearer_token(header: Option<&str>, max_bytes: usize) -> Result<&str, ApiError> {
    let h = header.ok_or_else(|| ApiError::invalid_token("missing bearer token"))?;
    let (scheme, token) = h
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::invalid_token("Authorization is not a Bearer credential"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::invalid_token(
            "Authorization is not a Bearer credential",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid_token("missing bearer token"));
    }
    if token.len() > max_bytes {
        return Err(ApiError::invalid_token("token too long"));
    }
    Ok(token)
}

/// Verifies the caller. Any failure to classify a credential refuses it.
pub async fn authenticate(
    engine: &Engine,
    pat: &PatConfig,
    header: Option<&str>,
) -> Result<Caller, ApiError> {
    let token = bearer_token(header, engine.max_token_bytes)?;
    let identity = engine.authenticate(token).await?;
    if identity.kind == CredentialKind::Pat {
        let id = identity
            .token_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("PAT identity without a token id"))?;
        return Ok(Caller {
            identity,
            pat_id: Some(id),
            bearer: token.to_owned(),
        });
    }
    // A JWT: is it an IdP-signed PAT (token exchange)? The verification is
    // cached, so this costs a hash and a map lookup.
    let verified = engine.verifier.verify(token).await?;
    let marked = verified.token_use.as_deref() == Some(pat.jwt_marker.value.as_str())
        || pat
            .exchange
            .audience
            .as_deref()
            .is_some_and(|a| verified.audiences.iter().any(|x| x == a));
    if !marked {
        return Ok(Caller {
            identity,
            pat_id: None,
            bearer: token.to_owned(),
        });
    }
    let jti = verified
        .jti
        .as_deref()
        .ok_or_else(|| ApiError::invalid_token("personal access token without jti"))?;
    let rec = engine
        .pats
        .store()
        .find_by_jti(jti)
        .await?
        .filter(|r| {
            r.kind == TokenKind::Jwt
                && r.token_hash == format::hash(token)
                // Owned by the token's own (iss, sub), as in `Engine::jwt_pat`.
                && r.user_id == identity.subject
                && !r.user_issuer.is_empty()
                && identity.issuer.as_deref() == Some(r.user_issuer.as_str())
        })
        .ok_or_else(|| ApiError::invalid_token("unknown token"))?;
    if rec.revoked_at.is_some() {
        engine.pats.report_revoked(&rec.token_hash);
        return Err(ApiError::invalid_token("token revoked"));
    }
    if rec.expires_at <= Utc::now() {
        return Err(ApiError::invalid_token("token expired"));
    }
    let pat_identity = Identity {
        kind: CredentialKind::Pat,
        token_id: Some(rec.id.to_string()),
        scopes: rec.scopes.clone(),
        ..(*identity).clone()
    };
    Ok(Caller {
        identity: Arc::new(pat_identity),
        pat_id: Some(rec.id),
        bearer: token.to_owned(),
    })
}
