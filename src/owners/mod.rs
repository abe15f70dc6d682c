//! PATs follow their owner (`pat.owner_sync`): every `interval`, read from
//! Keycloak's admin REST API the owners who hold active PATs of the synced
//! issuer ([`keycloak`]), and record what changed.
//!
//! Per owner: enabled, disabled (their PATs are refused, 401 `owner
//! disabled`, until re-enabled) or deleted (their PATs are revoked), and
//! their current scopes: their effective realm and client roles through the
//! issuer's scope mapping (`issuers[].scopes`; roles only, the `scope` claim
//! is not the user's). A change is written to the store (`pat_owners`),
//! applied here and hinted on the bus; other replicas read it from the store
//! (bus hint or resync). Check reads only memory (`pat::OwnerStates`).
//!
//! Keycloak unreachable (or refusing the service account): the pass stops,
//! every owner keeps their last known state (nobody is suspended because
//! Keycloak is down), `portcullis_owner_sync_staleness_seconds` grows, and
//! past `max_staleness` every pass logs an error. Every replica runs the
//! sync (one pass per replica per interval); writes are idempotent.

pub mod keycloak;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::jwt::ScopeSourceConfig;
use crate::pat::{OwnerSyncConfig, PatValidator};
use crate::revocation::Revoker;
use crate::store::{OwnerRecord, OwnerState, StoreError};
use keycloak::{Admin, AdminError, UserRead};

/// Why a pass stopped early (states are kept).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("keycloak: {0}")]
    Keycloak(#[from] AdminError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The owner sync of one replica.
pub struct OwnerSync {
    cfg: OwnerSyncConfig,
    scopes: ScopeSourceConfig,
    /// Client ids whose roles count (`client_roles:<id>` sources).
    clients: Vec<String>,
    admin: Admin,
    pats: Arc<PatValidator>,
    revoker: Revoker,
    /// Last pass that read every owner (or the start).
    last_success: Instant,
}

impl OwnerSync {
    /// `scopes` is the synced issuer's `issuers[].scopes`.
    pub fn new(
        cfg: OwnerSyncConfig,
        scopes: ScopeSourceConfig,
        pats: Arc<PatValidator>,
        revoker: Revoker,
    ) -> Result<OwnerSync, AdminError> {
        let clients = scopes
            .from
            .iter()
            .filter_map(|s| s.strip_prefix("client_roles:"))
            .map(str::to_owned)
            .collect();
        Ok(OwnerSync {
            admin: Admin::new(&cfg)?,
            cfg,
            scopes,
            clients,
            pats,
            revoker,
            last_success: Instant::now(),
        })
    }

    /// One pass over the owners of active PATs; returns how many changed.
    pub async fn once(&mut self) -> Result<usize, SyncError> {
        let issuer = self.cfg.issuer.clone();
        let store = self.pats.store().clone();
        let owners = store.active_owners(&issuer, Utc::now()).await?;
        let mut changed = 0;
        for user in owners {
            let read = self.admin.read_user(&user, &self.clients).await?;
            let rec = self.record(&issuer, user, read);
            if store.put_owner(&rec).await? {
                changed += 1;
                self.apply_change(rec).await?;
            }
        }
        self.last_success = Instant::now();
        Ok(changed)
    }

    fn record(&self, issuer: &str, user_id: String, read: UserRead) -> OwnerRecord {
        let (state, scopes) = match read {
            UserRead::Deleted => (OwnerState::Deleted, None),
            UserRead::Found {
                enabled,
                realm_roles,
                client_roles,
            } => (
                if enabled {
                    OwnerState::Enabled
                } else {
                    OwnerState::Disabled
                },
                crate::jwt::scopes_from_roles(&self.scopes, realm_roles, client_roles),
            ),
        };
        let now = Utc::now();
        OwnerRecord {
            issuer: issuer.to_owned(),
            user_id,
            state,
            scopes,
            synced_at: now,
            changed_at: now,
        }
    }

    /// A changed owner: this replica at once, the others through the bus;
    /// a deleted owner's PATs are revoked.
    async fn apply_change(&self, rec: OwnerRecord) -> Result<(), StoreError> {
        tracing::info!(
            issuer = %rec.issuer,
            user = %rec.user_id,
            state = rec.state.as_str(),
            scopes = ?rec.scopes,
            "PAT owner changed in Keycloak"
        );
        crate::metrics::global().owner_sync_changes.inc();
        self.revoker.owner_changed(&rec).await;
        if rec.state == OwnerState::Deleted {
            let cause = crate::store::Cause::system("owner_deleted");
            let gone = self
                .revoker
                .revoke_all_by(&rec.issuer, &rec.user_id, &cause)
                .await?;
            tracing::info!(user = %rec.user_id, tokens = gone.len(), "PATs of a deleted owner revoked");
        }
        Ok(())
    }

    /// Seconds since the last complete pass.
    pub fn staleness(&self) -> std::time::Duration {
        self.last_success.elapsed()
    }

    /// Runs a pass every `interval` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = self.once().await;
            self.report(result);
        }
    }

    fn report(&self, result: Result<usize, SyncError>) {
        let m = crate::metrics::global();
        let stale = self.staleness();
        m.owner_sync(result.is_ok(), stale);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "PAT owner sync failed; owners keep their last known state");
        }
        if stale > self.cfg.max_staleness {
            tracing::error!(
                stale_seconds = stale.as_secs(),
                max_staleness = ?self.cfg.max_staleness,
                "PAT owner sync is stale (pat.owner_sync.max_staleness): disabled, deleted or \
                 demoted Keycloak users keep their PATs until Keycloak can be read again"
            );
        }
    }
}
