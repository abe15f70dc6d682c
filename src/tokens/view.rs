//! JSON shapes of the REST API (the gRPC messages mirror them).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiError;
use crate::store::TokenRecord;

/// A token's metadata. The raw token never appears here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: Uuid,
    pub user_id: String,
    /// The owner's issuer; the owner is (`user_issuer`, `user_id`).
    #[serde(default)]
    pub user_issuer: String,
    pub username: String,
    pub name: String,
    pub description: Option<String>,
    pub display_hint: String,
    pub scopes: Vec<String>,
    /// `opaque` or `jwt`.
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The client address of the last use, as Envoy reported it.
    #[serde(default)]
    pub last_used_ip: Option<String>,
    /// The `User-Agent` of the last use.
    #[serde(default)]
    pub last_used_user_agent: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rotated_from: Option<Uuid>,
    /// Neither revoked nor expired now.
    pub active: bool,
    /// The owner's issuer is no longer configured (`issuers`,
    /// `pat.owner_issuers`): Check refuses the token, yet it is listed so an
    /// operator can revoke it. Present only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_issuer_removed: bool,
}

impl TokenView {
    pub fn of(r: &TokenRecord, now: DateTime<Utc>) -> TokenView {
        TokenView {
            id: r.id,
            user_id: r.user_id.clone(),
            user_issuer: r.user_issuer.clone(),
            username: r.username.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            display_hint: r.display_hint.clone(),
            scopes: r.scopes.clone(),
            kind: r.kind.as_str().to_owned(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            last_used_ip: r.last_used_ip.clone(),
            last_used_user_agent: r.last_used_user_agent.clone(),
            revoked_at: r.revoked_at,
            rotated_from: r.rotated_from,
            active: r.is_active(now),
            owner_issuer_removed: false,
        }
    }

    /// Sets [`TokenView::owner_issuer_removed`] from `trusted` (the live
    /// engine's [`crate::authz::Engine::owner_issuer_trusted`]).
    pub fn flag_issuer(mut self, trusted: impl Fn(&str) -> bool) -> TokenView {
        self.owner_issuer_removed = !self.user_issuer.is_empty() && !trusted(&self.user_issuer);
        self
    }
}

/// `201` answer of create and rotate: the only place the raw token appears.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedView {
    pub id: Uuid,
    pub name: String,
    pub token: String,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub display_hint: String,
    /// Set by rotate: the token this one replaces (now revoked).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotated_from: Option<Uuid>,
    /// The full metadata (for gRPC's `CreatedToken.info`); not in the JSON.
    #[serde(skip)]
    pub info: Option<TokenView>,
}

impl std::fmt::Debug for CreatedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedView")
            .field("id", &self.id)
            .field("display_hint", &self.display_hint)
            .finish_non_exhaustive()
    }
}

impl CreatedView {
    pub fn of(raw: String, r: &TokenRecord) -> CreatedView {
        CreatedView {
            id: r.id,
            name: r.name.clone(),
            token: raw,
            scopes: r.scopes.clone(),
            expires_at: r.expires_at,
            created_at: r.created_at,
            display_hint: r.display_hint.clone(),
            rotated_from: r.rotated_from,
            info: Some(TokenView::of(r, r.created_at)),
        }
    }
}

/// `POST /api/v1/tokens` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    #[serde(default)]
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub expires_in_days: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/tokens/{id}/rotate` body (optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    pub expires_in_days: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `expires_in_days` | `expires_at` → `expires_at` (`None`: the default).
///
/// `max_days` is `pat.max_lifetime_days`: a larger `expires_in_days` is
/// refused here, naming the limit, and the addition itself is checked, so no
/// input can overflow the date type (chrono panics on an unchecked `+`).
/// A far-away `expires_at` needs no arithmetic here; the creation rules
/// refuse it against the same limit.
pub fn expiry(
    days: Option<u32>,
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    max_days: u32,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let too_long = || {
        ApiError::invalid_request(format!(
            "expires_in_days: at most {max_days} (pat.max_lifetime_days)"
        ))
    };
    match (days, at) {
        (Some(_), Some(_)) => Err(ApiError::invalid_request(
            "expires_in_days, expires_at: give at most one",
        )),
        (Some(0), None) => Err(ApiError::invalid_request(
            "expires_in_days: must be at least 1",
        )),
        (Some(d), None) if d > max_days => Err(too_long()),
        (Some(d), None) => TimeDelta::try_days(i64::from(d))
            .and_then(|life| now.checked_add_signed(life))
            .map(Some)
            .ok_or_else(too_long),
        (None, at) => Ok(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item9_expiry_never_overflows() {
        let now = Utc::now();
        for d in [366, 4_294_967_295] {
            let e = expiry(Some(d), None, now, 365).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.description.contains("at most 365"), "{e:?}");
        }
        // Even a limit beyond the date range cannot make the addition panic.
        let e = expiry(Some(u32::MAX), None, now, u32::MAX).unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
        assert_eq!(
            expiry(Some(2), None, now, 365).unwrap(),
            Some(now + TimeDelta::days(2))
        );
    }
}
