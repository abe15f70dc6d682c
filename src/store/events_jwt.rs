//! The `jwt.*` events: IdP-signed JWTs refused by an operator
//! (`revoke-jwt`) or by the issuer (back-channel logout). They record claim
//! values (`jti`, `sid`, `sub`), never a token.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::super::{DenylistKind, LogoutMark};
use super::{Cause, EventKind, NewEvent};

/// `jwt.revoked`: IdP-signed JWTs deny-listed by `jti` or `sid`
/// (`portcullis revoke-jwt`). Records the claim value, never a token. The
/// owner is unknown (a `jti` or `sid` names no user): empty.
pub fn jwt_revoked_event(
    kind: DenylistKind,
    value: &str,
    until: DateTime<Utc>,
    cause: &Cause,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        kind: EventKind::JwtRevoked,
        at,
        token_id: None,
        owner_issuer: String::new(),
        owner_id: String::new(),
        actor: cause.actor.clone(),
        data: json!({
            "denied": { "kind": kind.as_str(), "value": value },
            "until": until,
            "reason": cause.reason,
        }),
    }
}

/// What a back-channel logout token said, for its `jwt.logged_out` event
/// (claim values only, never the token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The logout token's `sub`, when it had one (the event's owner).
    pub sub: Option<String>,
    /// Its `sid`, when it had one.
    pub sid: Option<String>,
    /// Its own `jti` (the logout token's, not a refused token's).
    pub jti: Option<String>,
}

/// `jwt.logged_out`: a back-channel logout recorded `mark`. The owner is
/// (`iss`, `sub`) when the logout token named a subject.
pub fn logged_out_event(
    mark: &LogoutMark,
    claims: &LogoutClaims,
    cause: &Cause,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        kind: EventKind::JwtLoggedOut,
        at,
        token_id: None,
        owner_issuer: mark.issuer.clone(),
        owner_id: claims.sub.clone().unwrap_or_default(),
        actor: cause.actor.clone(),
        data: json!({
            "issuer": mark.issuer,
            "sid": claims.sid,
            "sub": claims.sub,
            "logout_jti": claims.jti,
            "refused": { "kind": mark.kind.as_str(), "value": mark.value },
            "not_before": mark.not_before,
            "until": mark.expires_at,
            "reason": cause.reason,
        }),
    }
}
