//! Reuse detection (GitLab's behaviour): presenting a token that was already
//! rotated away means two parties hold the chain, so the whole chain is
//! revoked. The PAT validator reports each presented revoked token's hash
//! here (at most once per `pat.cache_ttl`, without blocking the Check); the
//! store is only consulted for those, never for valid tokens.

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pat::{TokenHash, format};
use crate::revocation::Revoker;
use crate::store::{Store, StoreError};

/// Queue depth between the validator and the detector.
pub const QUEUE: usize = 1024;

/// Handles reports until shutdown.
pub async fn run(
    mut rx: mpsc::Receiver<TokenHash>,
    store: Store,
    revoker: Revoker,
    shutdown: CancellationToken,
) {
    loop {
        let hash = tokio::select! {
            _ = shutdown.cancelled() => return,
            h = rx.recv() => match h {
                Some(h) => h,
                None => return,
            },
        };
        if let Err(e) = check(&store, &revoker, &hash).await {
            tracing::warn!(
                error = %e,
                hash = %format::hash_prefix(&hash),
                "reuse detection failed for a presented revoked token"
            );
        }
    }
}

/// If the token behind `hash` was rotated (some token names it in
/// `rotated_from`), revokes its whole chain. Returns how many tokens the
/// chain holds (0: not rotated, nothing done).
pub async fn check(
    store: &Store,
    revoker: &Revoker,
    hash: &TokenHash,
) -> Result<usize, StoreError> {
    let Some(rec) = store.find_by_hash(hash).await? else {
        return Ok(0);
    };
    let rotated = store
        .list_for_user(&rec.user_issuer, &rec.user_id)
        .await?
        .iter()
        .any(|r| r.rotated_from == Some(rec.id));
    if !rotated {
        return Ok(0);
    }
    let cause = crate::store::Cause::system("reuse_detected");
    let chain = store.revoke_chain_by(rec.id, Utc::now(), &cause).await?;
    revoker.announce(&chain).await;
    tracing::warn!(
        token_id = %rec.id,
        user = %rec.user_id,
        chain = chain.len(),
        "a rotated-away token was presented; its whole rotation chain is revoked (reuse detection)"
    );
    Ok(chain.len())
}
