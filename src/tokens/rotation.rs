//! Rotation bounds: a PAT rotating itself stays within its chain's
//! lifetime (the first token's `created_at` + `pat.max_lifetime_days`), so
//! rotation cannot make a PAT live forever.

use chrono::{DateTime, TimeDelta, Utc};

use super::{ApiError, TokenService};
use crate::store::TokenRecord;

impl TokenService {
    /// Bounds a self-rotation by the chain: the successor expires at the
    /// latest `pat.max_lifetime_days` after the chain's first token was
    /// created. A default expiry is cut to that; an asked-for later one is
    /// a 400; a chain already past it (rotated before this rule) a 409.
    pub(super) async fn within_chain(
        &self,
        old: &TokenRecord,
        at: DateTime<Utc>,
        asked: bool,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ApiError> {
        let max_days = self.pat.max_lifetime_days;
        let origin = self
            .store()
            .chain_origin(old.id)
            .await?
            .unwrap_or(old.created_at);
        let cap = TimeDelta::try_days(i64::from(max_days))
            .and_then(|d| origin.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if cap <= now {
            return Err(ApiError::conflict(format!(
                "this token's rotation chain began {origin} and may not outlive pat.max_lifetime_days ({max_days}); create a new token"
            )));
        }
        match (at <= cap, asked) {
            (true, _) => Ok(at),
            (false, false) => Ok(cap),
            (false, true) => Err(ApiError::invalid_request(format!(
                "expires_at: at most {cap} (pat.max_lifetime_days after the rotation chain began at {origin})"
            ))),
        }
    }
}
