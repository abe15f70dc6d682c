//! [`Store`] calls feeding the in-memory set of active PAT hashes
//! (`pat::known`), which keeps forged-token floods away from the store, and
//! upgrading legacy hashes (`pat::hasher`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Result, Store, TokenHash, TokenRecord};

impl Store {
    /// Re-hashes a legacy (SHA-256, version 1) row to HMAC (version 2);
    /// returns the row as it now is, `None` if it no longer matches.
    pub async fn upgrade_hash(
        &self,
        id: Uuid,
        old: &TokenHash,
        new: &TokenHash,
    ) -> Result<Option<TokenRecord>> {
        self.call(self.backend.upgrade_hash(id, old, new)).await
    }

    /// `(id, token_hash)` of every opaque row still hashed as version 1.
    pub async fn legacy_opaque_hashes(&self) -> Result<Vec<(Uuid, TokenHash)>> {
        self.call(self.backend.legacy_opaque_hashes()).await
    }

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
