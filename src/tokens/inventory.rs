//! The admin inventory: `GET /api/v1/admin/tokens` (`api.admin_scope`),
//! every token with filters and cursor pages.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, Caller, TokenService, TokenView};
use crate::audit::Cursor;
use crate::store::{TokenQuery, TokenState};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// `GET /api/v1/admin/tokens` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InventoryParams {
    /// `active`, `revoked` or `expired`.
    pub state: Option<String>,
    /// Active tokens expiring within this duration (`7d`, `12h`).
    pub expiring_within: Option<String>,
    /// The owner's `sub`.
    pub user: Option<String>,
    /// The owner's issuer.
    pub issuer: Option<String>,
    /// Case-insensitive substring of the name (`?name~=ci`).
    #[serde(rename = "name~", alias = "name_contains")]
    pub name_contains: Option<String>,
    /// Last used before this: RFC 3339, a date (`2026-01-31`, midnight
    /// UTC) or a duration ago (`90d`). Never-used tokens do not match.
    pub last_used_before: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A page of the inventory, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryPage {
    pub tokens: Vec<TokenView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn bad(key: &str, what: &str) -> ApiError {
    ApiError::invalid_request(format!("{key}: {what}"))
}

fn duration(key: &str, s: &str) -> Result<TimeDelta, ApiError> {
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .filter(|d| *d <= TimeDelta::days(36_500))
        .ok_or_else(|| {
            bad(
                key,
                "accepted: a duration such as 7d or 12h (at most 36500d)",
            )
        })
}

/// RFC 3339, a date, or a duration before `now`.
fn moment(key: &str, s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    let ago = duration(key, s).map_err(|_| {
        bad(key, "accepted: RFC 3339 (2026-01-31T00:00:00Z), a date (2026-01-31) or a duration ago (90d)")
    })?;
    Ok(now - ago)
}

impl TokenService {
    /// `GET /api/v1/admin/tokens`: every token matching the filters.
    pub async fn inventory(
        &self,
        c: &Caller,
        p: InventoryParams,
    ) -> Result<InventoryPage, ApiError> {
        self.require_admin(c)?;
        let now = Utc::now();
        let state = p
            .state
            .as_deref()
            .map(|s| {
                TokenState::parse(s)
                    .ok_or_else(|| bad("state", "accepted: active, revoked, expired"))
            })
            .transpose()?;
        let expiring_before = p
            .expiring_within
            .as_deref()
            .map(|s| duration("expiring_within", s).map(|d| now + d))
            .transpose()?;
        let last_used_before = p
            .last_used_before
            .as_deref()
            .map(|s| moment("last_used_before", s, now))
            .transpose()?;
        let limit = match p.limit.unwrap_or(DEFAULT_LIMIT) {
            n @ 1..=MAX_LIMIT => n,
            _ => return Err(bad("limit", &format!("must be between 1 and {MAX_LIMIT}"))),
        };
        let after = match p.cursor.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let c = Cursor::decode(s).map_err(|e| ApiError::invalid_request(e.to_string()))?;
                let at = DateTime::from_timestamp_micros(c.seq);
                let id = Uuid::parse_str(&c.key).ok();
                Some(
                    at.zip(id)
                        .ok_or_else(|| bad("cursor", "not a cursor this API returned"))?,
                )
            }
        };
        let q = TokenQuery {
            now,
            state,
            expiring_before,
            user_id: p.user.filter(|u| !u.is_empty()),
            user_issuer: p.issuer.filter(|i| !i.is_empty()),
            name_contains: p.name_contains.filter(|n| !n.is_empty()),
            last_used_before,
            after,
            limit,
        };
        let recs = self.store().tokens(&q).await?;
        let next_cursor = (recs.len() == limit as usize)
            .then(|| recs.last())
            .flatten()
            .map(|r| {
                Cursor {
                    seq: r.created_at.timestamp_micros(),
                    key: r.id.to_string(),
                }
                .encode()
            });
        Ok(InventoryPage {
            tokens: self.views(&recs, now),
            next_cursor,
        })
    }
}
