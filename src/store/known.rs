//! [`Store`] calls feeding the in-memory set of active PAT hashes
//! (`pat::known`), which keeps forged-token floods away from the store.

use chrono::{DateTime, Utc};

use super::{Result, Store, TokenHash};

impl Store {
    /// Hashes of every token neither revoked nor expired at `now`.
    pub async fn active_hashes(&self, now: DateTime<Utc>) -> Result<Vec<TokenHash>> {
        self.call(self.backend.active_hashes(now)).await
    }

    /// Tokens created after `watermark`, still active at `now`, as
    /// `(hash, created_at)` ordered by `created_at`.
    pub async fn created_since(
        &self,
        watermark: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(TokenHash, DateTime<Utc>)>> {
        self.call(self.backend.created_since(watermark, now)).await
    }
}
