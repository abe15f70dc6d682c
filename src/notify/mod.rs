//! Token events to the outside: webhooks and expiry notices.
//!
//! Every token event is written by the store in the same transaction as
//! the change it describes (`store::events`, the outbox). This module only
//! reads that outbox:
//!
//! - [`deliver`]: the webhook dispatcher. Each replica fans new events out
//!   to one delivery per interested webhook, for the webhooks it knows and
//!   from each webhook's own cursor (so replicas with different webhook
//!   lists never lose each other's events), leases due deliveries in the
//!   store (`SELECT … FOR UPDATE SKIP LOCKED` on Postgres, an IMMEDIATE
//!   transaction on SQLite), POSTs them signed ([`sign`]), and records the
//!   outcome: delivered on a 2xx, else retried with exponential backoff
//!   and jitter until `notify.delivery.max_age`, then dead-lettered. An
//!   event written while the receiver is down, or while portcullis is
//!   restarting or killed, stays in the store until it is delivered; with
//!   several replicas each delivery is leased to one of them.
//! - [`expiry`]: writes `token.expiring` (per `notify.expiring` threshold,
//!   once per token) and `token.expired` notices into the outbox.
//!
//! [`config`] holds the `notify:` section.

pub mod config;
pub mod deliver;
pub mod expiry;
pub mod sign;

pub use config::{DeliveryConfig, NotifyConfig, WebhookConfig, resolve_secrets};
pub use deliver::{Dispatcher, DispatcherError, Pass};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Starts the expiry notices and, when webhooks are configured, the
/// dispatcher. `secrets` come from [`resolve_secrets`].
pub fn start(
    cfg: &NotifyConfig,
    secrets: Vec<Vec<u8>>,
    store: &Store,
    shutdown: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, DispatcherError> {
    let mut tasks = vec![tokio::spawn(
        expiry::ExpiryNotices::new(store.clone(), cfg).run(shutdown.clone()),
    )];
    if !cfg.webhooks.is_empty() {
        let d = Dispatcher::new(store.clone(), cfg, secrets)?;
        tracing::info!(
            owner = d.owner(),
            webhooks = cfg.webhooks.len(),
            "webhook delivery started"
        );
        tasks.push(tokio::spawn(d.run(shutdown.clone())));
    }
    Ok(tasks)
}
