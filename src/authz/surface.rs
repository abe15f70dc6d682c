//! The configurable edges of a Check: where credentials are read from
//! (`credentials`) and what an allow tells the upstream (`identity_headers`).
//! Built once per configuration, swapped with the engine on reload.

use std::sync::Arc;

use super::assertion::Assertions;
use super::build::EngineConfig;
use super::headers::IdentityHeaders;
use super::sources::CredentialSources;

/// Credential sources and identity output of one configuration.
#[derive(Debug, Default)]
pub struct Surface {
    /// `credentials`: Basic, extra headers, the query parameter.
    pub sources: CredentialSources,
    /// `identity_headers`: names, prefix, mapped claims.
    pub headers: IdentityHeaders,
    /// The assertion signer, when a route asks for assertions or
    /// `assertion.key_file` is set.
    pub assertions: Option<Arc<Assertions>>,
}

impl Surface {
    /// From a validated config. Loads (or creates in `data_dir`) the
    /// assertion key when assertions are used.
    pub fn from_config(cfg: &EngineConfig<'_>) -> anyhow::Result<Surface> {
        let used = cfg.policy.routes.iter().any(|r| r.assertion.is_some());
        let assertions = match used || cfg.assertion.key_file.is_some() {
            true => Some(Arc::new(Assertions::load(cfg.assertion, cfg.data_dir)?)),
            false => None,
        };
        Ok(Surface {
            sources: CredentialSources::compile(cfg.credentials),
            headers: IdentityHeaders::compile(cfg.identity_headers),
            assertions,
        })
    }
}
