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
//! past `max_staleness` every pass logs an error.
//!
//! One replica at a time syncs an issuer: a pass starts by taking or
//! renewing the store lease `owner_sync:<issuer>` (`sync_leases`, for
//! `pat.owner_sync.lease`, renewed again every `interval` within a long
//! pass). The other replicas stand by (nothing read from Keycloak) and learn
//! the results through the resync loop and bus hints; when the holder dies
//! its lease runs out and the next replica to try takes over. A holder
//! shutting down gives the lease up, and so does a holder whose pass fails
//! (it may be the one replica cut off from Keycloak). Writes stay idempotent, so a pass that
//! outlives its lease only repeats work.

pub mod keycloak;

use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::jwt::ScopeSourceConfig;
use crate::pat::{OwnerSyncConfig, PatValidator};
use crate::revocation::Revoker;
use crate::store::{OwnerRecord, OwnerState, Store, StoreError};
use keycloak::{Admin, AdminError, UserRead};

/// Why a pass stopped early (states are kept).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("keycloak: {0}")]
    Keycloak(#[from] AdminError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// This replica holds the lease and read every owner; how many changed.
    Synced(usize),
    /// Another replica holds the lease: nothing was read from Keycloak.
    Standby,
}

/// The owner sync of one replica.
pub struct OwnerSync {
    /// This replica's name on the lease (host, pid, random).
    holder: String,
    cfg: OwnerSyncConfig,
    scopes: ScopeSourceConfig,
    /// Client ids whose roles count (`client_roles:<id>` sources).
    clients: Vec<String>,
    admin: Admin,
    pats: Arc<PatValidator>,
    revoker: Revoker,
    /// Last pass that read every owner (or the start).
    last_success: Instant,
    /// This replica held the lease at its last pass.
    held: bool,
    /// Its last pass of its own failed (and gave the lease up): standing by
    /// then does not reset its staleness, so in an outage that every
    /// replica sees, the lease passing from one failing replica to the next
    /// still lets the staleness grow to `max_staleness`.
    failing: bool,
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
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "portcullis".into());
        let holder = format!(
            "{host}:{}:{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        Ok(OwnerSync {
            holder,
            admin: Admin::new(&cfg)?,
            cfg,
            scopes,
            clients,
            pats,
            revoker,
            last_success: Instant::now(),
            held: false,
            failing: false,
        })
    }

    /// This replica's name on the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One pass over the owners of active PATs, if this replica holds (or
    /// can take) the lease.
    ///
    /// A pass that fails gives the lease up: this replica may be the only
    /// one cut off from Keycloak (or its store calls may be failing), and
    /// holding the lease would keep every other replica on standby, so an
    /// owner disabled or deleted in Keycloak would keep their PATs working
    /// everywhere for as long as this replica stays cut off. Free, the lease
    /// goes to whichever replica's pass comes next.
    pub async fn once(&mut self) -> Result<Pass, SyncError> {
        let store = self.pats.store().clone();
        if !self.renew(&store).await? {
            return Ok(Pass::Standby);
        }
        let result = self.pass(&store).await;
        if result.is_err() {
            self.release().await;
        }
        result
    }

    /// The pass itself, under the lease.
    async fn pass(&mut self, store: &Store) -> Result<Pass, SyncError> {
        let issuer = self.cfg.issuer.clone();
        let mut renewed = Instant::now();
        let owners = store.active_owners(&issuer, Utc::now()).await?;
        let mut changed = 0;
        for user in owners {
            // A long pass keeps its lease, so no second replica starts one.
            if renewed.elapsed() >= self.cfg.interval {
                if !self.renew(store).await? {
                    tracing::warn!("PAT owner sync lease lost mid-pass; another replica continues");
                    return Ok(Pass::Standby);
                }
                renewed = Instant::now();
            }
            let read = self.admin.read_user(&user, &self.clients).await?;
            let rec = self.record(&issuer, user, read);
            if store.put_owner(&rec).await? {
                changed += 1;
                self.apply_change(rec).await?;
            }
        }
        self.last_success = Instant::now();
        Ok(Pass::Synced(changed))
    }

    /// Takes or renews the lease for `pat.owner_sync.lease`; false while
    /// another replica holds it.
    async fn renew(&self, store: &Store) -> Result<bool, StoreError> {
        let now = Utc::now();
        let lease = TimeDelta::from_std(self.cfg.lease()).unwrap_or(TimeDelta::MAX);
        let until = now.checked_add_signed(lease).unwrap_or(now);
        store
            .take_lease(&self.cfg.lease_name(), &self.holder, now, until)
            .await
    }

    /// Gives the lease up (shutdown), so another replica need not wait for
    /// it to run out.
    pub async fn release(&self) {
        let store = self.pats.store();
        if let Err(e) = store
            .release_lease(&self.cfg.lease_name(), &self.holder)
            .await
        {
            tracing::warn!(error = %e, "could not give up the PAT owner sync lease; it runs out by itself");
        }
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
                _ = shutdown.cancelled() => {
                    self.release().await;
                    return;
                }
                _ = tick.tick() => {}
            }
            let result = self.once().await;
            self.report(result);
        }
    }

    fn report(&mut self, result: Result<Pass, SyncError>) {
        let m = crate::metrics::global();
        if let Ok(Pass::Standby) = result {
            // Not this replica's job: the leaseholder reports its staleness
            // (counted from now should this replica take over).
            if !self.failing {
                self.last_success = Instant::now();
            }
            m.owner_sync_standby(std::mem::take(&mut self.held));
            return;
        }
        self.held = true;
        self.failing = result.is_err();
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
