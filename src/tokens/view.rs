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
    pub revoked_at: Option<DateTime<Utc>>,
    pub rotated_from: Option<Uuid>,
    /// Neither revoked nor expired now.
    pub active: bool,
}

impl TokenView {
    pub fn of(r: &TokenRecord, now: DateTime<Utc>) -> TokenView {
        TokenView {
            id: r.id,
            user_id: r.user_id.clone(),
            username: r.username.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            display_hint: r.display_hint.clone(),
            scopes: r.scopes.clone(),
            kind: r.kind.as_str().to_owned(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            rotated_from: r.rotated_from,
            active: r.is_active(now),
        }
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
pub fn expiry(
    days: Option<u32>,
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match (days, at) {
        (Some(_), Some(_)) => Err(ApiError::invalid_request(
            "expires_in_days, expires_at: give at most one",
        )),
        (Some(0), None) => Err(ApiError::invalid_request(
            "expires_in_days: must be at least 1",
        )),
        (Some(d), None) => Ok(Some(now + TimeDelta::days(i64::from(d)))),
        (None, at) => Ok(at),
    }
}
