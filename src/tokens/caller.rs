//! Who is calling the API: the same engine that answers Checks verifies the
//! `Authorization` header. PATs are recognised in every form (opaque,
//! local-jwt, and IdP-signed PAT JWTs marked by `pat.jwt_marker` or carrying
//! `pat.exchange.audience`): `Engine::authenticate` classifies the token and
//! checks registration, owner, expiry and revocation.

use std::sync::Arc;

use uuid::Uuid;

use super::ApiError;
use crate::authz::Engine;
use crate::identity::{CredentialKind, Identity};
use crate::store::{Actor, ActorKind, Cause};

/// A verified API caller.
#[derive(Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    /// The PAT presented on this call, when the credential is a PAT.
    pub pat_id: Option<Uuid>,
    /// The presented credential: the `subject_token` of a token exchange.
    /// Never logged (see the `Debug` impl).
    bearer: String,
    /// Where the call came from (`audit::client_addr`), recorded with the
    /// events it causes; set by the transport.
    pub client_addr: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.identity)
            .field("pat_id", &self.pat_id)
            .field("client_addr", &self.client_addr)
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

    /// The caller's address, as the transport determined it.
    pub fn with_client_addr(mut self, addr: Option<String>) -> Self {
        self.client_addr = addr;
        self
    }

    /// This caller as the actor of a change made for `reason`.
    pub fn cause(&self, reason: &'static str) -> Cause {
        Cause {
            actor: Actor {
                kind: match self.identity.kind {
                    CredentialKind::Jwt => ActorKind::Jwt,
                    CredentialKind::ServiceAccount => ActorKind::ServiceAccount,
                    CredentialKind::Pat => ActorKind::Pat,
                },
                subject: self.subject().to_owned(),
                issuer: self.issuer().to_owned(),
                token_id: self.pat_id,
                client_addr: self.client_addr.clone(),
            },
            reason,
        }
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
pub async fn authenticate(engine: &Engine, header: Option<&str>) -> Result<Caller, ApiError> {
    let token = bearer_token(header, engine.max_token_bytes())?;
    // The engine classifies the credential once: an opaque, local-JWT or
    // Keycloak-exchanged PAT comes back as kind `pat` with its token id
    // (registration, owner, expiry and revocation already checked).
    let identity = engine.authenticate(token).await?;
    let pat_id = match identity.kind {
        CredentialKind::Pat => Some(
            identity
                .token_id
                .as_deref()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::internal("PAT identity without a token id"))?,
        ),
        _ => None,
    };
    Ok(Caller {
        identity,
        pat_id,
        bearer: token.to_owned(),
        client_addr: None,
    })
}
