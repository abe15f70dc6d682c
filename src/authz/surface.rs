//! The configurable edges of a Check: where credentials are read from
//! (`credentials`) and what an allow tells the upstream (`identity_headers`).
//! Built once per configuration, swapped with the engine on reload.

use super::headers::IdentityHeaders;
use super::sources::CredentialSources;
use crate::config::Config;

/// Credential sources and identity output of one configuration.
#[derive(Debug, Default)]
pub struct Surface {
    /// `credentials`: Basic, extra headers, the query parameter.
    pub sources: CredentialSources,
    /// `identity_headers`: names, prefix, mapped claims.
    pub headers: IdentityHeaders,
}

impl Surface {
    /// From a validated config.
    pub fn from_config(cfg: &Config) -> Surface {
        Surface {
            sources: CredentialSources::compile(&cfg.credentials),
            headers: IdentityHeaders::compile(&cfg.identity_headers),
        }
    }
}
