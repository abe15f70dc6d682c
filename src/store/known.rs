//! [`Store`] calls upgrading legacy hashes (`pat::hasher`). The reads
//! feeding the in-memory set of active PAT hashes are in `page`.

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
}
