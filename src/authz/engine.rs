//! Turns a request into a [`Decision`]: credential → identity → policy.

use std::sync::Arc;

use super::decision::{Decision, Denial};
use super::request::{Credential, RequestView};
use crate::identity::Identity;
use crate::jwt::Verifier;

/// Everything a Check needs, swapped as a whole on config reload.
#[derive(Debug)]
pub struct Engine {
    /// JWT verification for the configured issuers.
    pub verifier: Arc<Verifier>,
    /// Bearer tokens longer than this are refused unparsed.
    pub max_token_bytes: usize,
}

// === impl Engine ===

impl Engine {
    /// Decides one request. Never fails: every error is a denial.
    pub async fn check(&self, req: &RequestView<'_>) -> Decision {
        if !req.has_http() {
            return Decision::Deny(Denial::forbidden(
                "invalid_request",
                "no HTTP request attributes in CheckRequest",
            ));
        }
        let token = match req.credential(self.max_token_bytes) {
            Ok(Credential::Bearer(t)) => t,
            Ok(Credential::None) => return Decision::Deny(Denial::no_credential()),
            Err(d) => return Decision::Deny(d),
        };
        match self.authenticate(token).await {
            Ok(id) => Decision::Allow(id),
            Err(d) => Decision::Deny(d),
        }
    }

    /// Verifies a bearer token and returns who it belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Denial> {
        let verified = self.verifier.verify(token).await?;
        Ok(verified.identity.clone())
    }
}

impl Engine {
    /// Readiness of the stores behind the engine (`/readyz`).
    pub async fn store_ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Flushes buffered background writes (graceful shutdown).
    pub async fn flush(&self) {}
}
