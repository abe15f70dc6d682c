//! Revocation propagation: how a token revoked anywhere stops working here.
//!
//! Two mechanisms, layered:
//! - the bus (`revocation.kind`): `local` evicts this replica's cache at
//!   once; every revoke path goes through [`Revoker`].
//! - the resync loop: every `revocation.resync_interval` each replica asks
//!   the store for tokens with `revoked_at > watermark` and marks them
//!   revoked in its cache. This bounds staleness even when a revocation
//!   happened in another process (the CLI, another replica) and every bus
//!   message was lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pat::PatValidator;
use crate::store::{StoreError, TokenRecord};

/// `revocation:` config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// `local` (in-process only) or `redis` (publish/subscribe across replicas).
    pub kind: RevocationKind,
    /// Redis URL when `kind: redis`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// How often the store is polled for revocations (bounded staleness). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            kind: RevocationKind::Local,
            redis_url: None,
            resync_interval: Duration::from_secs(5),
        }
    }
}

/// Revocation bus kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    Local,
    Redis,
}

impl RevocationConfig {
    /// Names the key that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind == RevocationKind::Redis && self.redis_url.as_deref().unwrap_or("").is_empty()
        {
            return Err("revocation.redis_url: required when revocation.kind is redis".into());
        }
        if self.resync_interval < Duration::from_millis(50) {
            return Err("revocation.resync_interval: must be at least 50ms".into());
        }
        Ok(())
    }
}

/// The one way tokens are revoked: store first, then this replica's cache.
#[derive(Debug, Clone)]
pub struct Revoker {
    pats: Arc<PatValidator>,
}

impl Revoker {
    pub fn new(pats: Arc<PatValidator>) -> Self {
        Revoker { pats }
    }

    /// Marks the given (already revoked in the store) tokens as revoked here.
    pub async fn announce(&self, records: &[TokenRecord]) {
        for r in records {
            self.pats.mark_revoked(&r.token_hash).await;
        }
    }

    /// Revokes one token: store, then cache.
    pub async fn revoke(&self, id: uuid::Uuid) -> Result<Option<TokenRecord>, StoreError> {
        let rec = self.pats.store().revoke(id, Utc::now()).await?;
        if let Some(r) = &rec {
            self.announce(std::slice::from_ref(r)).await;
        }
        Ok(rec)
    }

    /// Revokes every active token of a user.
    pub async fn revoke_all(&self, user_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let recs = self
            .pats
            .store()
            .revoke_all_for_user(user_id, Utc::now())
            .await?;
        self.announce(&recs).await;
        Ok(recs)
    }
}

/// Polls the store for revocations newer than the watermark, forever.
pub async fn run_resync(pats: Arc<PatValidator>, interval: Duration, shutdown: CancellationToken) {
    // Start a little in the past: a revocation committed just before start
    // must not be missed, and re-marking a revoked token is harmless.
    let mut watermark: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(60);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pats.store().revoked_since(watermark).await {
            Ok(rows) => {
                for (hash, at) in rows {
                    pats.mark_revoked(&hash).await;
                    if at > watermark {
                        watermark = at;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "revocation resync: store unavailable"),
        }
    }
}
