//! Building an [`Engine`] from a config: at start, for `portcullis check`,
//! and on every reload (which keeps the parts that must outlive a config).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::assertion::AssertionConfig;
use super::engine::Engine;
use super::headers::IdentityHeadersConfig;
use super::sources::CredentialsConfig;
use super::surface::Surface;
use crate::dev::{self, DevIssuer};
use crate::dpop::{DpopConfig, ReplayCache};
use crate::jwt::{IssuerConfig, IssuerKeys, JwtConfig, Verifier};
use crate::pat::{PatConfig, PatValidator};
use crate::policy::{Policy, PolicyConfig};
use crate::revocation::JwtDenyList;

/// The config sections an engine is built from (`config::Config` gathers
/// them; taking the sections keeps `authz` free of the top-level config).
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig<'a> {
    pub issuers: &'a [IssuerConfig],
    pub jwt: &'a JwtConfig,
    pub pat: &'a PatConfig,
    pub policy: &'a PolicyConfig,
    /// `revocation.jwt_denylist_capacity`, for a fresh deny set.
    pub jwt_denylist_capacity: usize,
    pub credentials: &'a CredentialsConfig,
    pub identity_headers: &'a IdentityHeadersConfig,
    pub assertion: &'a AssertionConfig,
    /// Where a generated assertion key is kept.
    pub data_dir: &'a Path,
    /// `dpop:` (for a fresh [`DpopState`]; a reload keeps the running one).
    pub dpop: &'a DpopConfig,
    /// `audit:`: which proxies' `X-Forwarded-For` the token API believes
    /// (held here so a reload applies a changed proxy list).
    pub audit: &'a crate::audit::AuditConfig,
}

/// The parts of an engine that outlive a config: a reload hands them to
/// the next engine, so caches, usage counts and the deny set survive it.
#[derive(Debug, Clone)]
pub struct SharedParts {
    /// PAT lookups: its cache and store.
    pub pats: Arc<PatValidator>,
    /// Deny-listed JWT `jti`/`sid` values.
    pub denylist: Arc<JwtDenyList>,
    /// DPoP proof settings and the seen-proof cache (a reload must not
    /// forget which proofs were used).
    pub dpop: Arc<DpopState>,
}

/// `dpop:` as Check uses it: the settings and the replay cache.
#[derive(Debug)]
pub struct DpopState {
    pub config: DpopConfig,
    pub replay: ReplayCache,
}

impl DpopState {
    pub fn new(config: DpopConfig) -> DpopState {
        // A proof passes the `iat` check for at most max_age + leeway in
        // the past and leeway in the future.
        let window = config.max_age + config.leeway * 2;
        DpopState {
            replay: ReplayCache::new(config.replay_cache_capacity, window),
            config,
        }
    }
}

// === impl Engine ===

impl Engine {
    /// An engine with a fresh, unloaded JWT deny set: JWTs are then checked
    /// against the store (tools such as `portcullis check`). `dev` is the
    /// built-in issuer, if any.
    pub fn build(
        cfg: EngineConfig<'_>,
        dev: Option<&DevIssuer>,
        pats: Arc<PatValidator>,
    ) -> anyhow::Result<Engine> {
        let shared = SharedParts {
            pats,
            denylist: Arc::new(JwtDenyList::new(cfg.jwt_denylist_capacity)),
            dpop: Arc::new(DpopState::new(cfg.dpop.clone())),
        };
        Engine::build_reusing(cfg, dev, shared, |_| None)
    }

    /// Like [`Engine::build`], with `shared` parts, and keeping the key
    /// managers `reuse` returns (a reload must not throw away loaded keys
    /// or the refetch rate limit).
    pub fn build_reusing(
        cfg: EngineConfig<'_>,
        dev: Option<&DevIssuer>,
        shared: SharedParts,
        reuse: impl Fn(&IssuerConfig) -> Option<Arc<IssuerKeys>>,
    ) -> anyhow::Result<Engine> {
        let http = reqwest::Client::builder()
            .timeout(
                cfg.issuers
                    .iter()
                    .map(|i| i.fetch_timeout)
                    .max()
                    .unwrap_or(Duration::from_secs(2)),
            )
            .build()
            .context("building the HTTP client")?;
        let mut issuers = cfg.issuers.to_vec();
        let mut dev_keys = match dev {
            Some(d) => {
                issuers.push(dev_issuer_config(d));
                Some(d.key_set()?)
            }
            None => None,
        };
        let dev_iss = dev.map(|d| d.issuer().to_owned());
        let verifier = Verifier::new(&issuers, cfg.jwt, |ic| {
            if let Some(km) = reuse(ic) {
                return km;
            }
            if Some(&ic.issuer) == dev_iss.as_ref()
                && let Some(keys) = dev_keys.take()
            {
                return IssuerKeys::fixed(ic, keys);
            }
            IssuerKeys::remote(ic, http.clone())
        })
        .with_marker_claim(&cfg.pat.jwt_marker.claim);
        let surface = Surface::from_config(&cfg)?;
        let verifier = verifier.with_captured_claims(surface.headers.claim_names());
        let policy = Policy::compile(cfg.policy).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Engine {
            verifier: Arc::new(verifier),
            max_token_bytes: cfg.jwt.max_token_bytes,
            pats: shared.pats,
            pat_prefix: cfg.pat.prefix.clone(),
            denylist: shared.denylist,
            pat_marker_value: cfg.pat.jwt_marker.value.clone(),
            pat_exchange_audience: cfg.pat.exchange.audience.clone(),
            policy: Arc::new(policy),
            surface: Arc::new(surface),
            dpop: shared.dpop,
            client_addrs: Arc::new(crate::audit::ClientAddrs::from_config(cfg.audit)),
            owner_issuers: cfg.pat.owner_issuers.clone().into(),
        })
    }

    /// The parts a reload hands to the next engine.
    pub fn shared_parts(&self) -> SharedParts {
        SharedParts {
            pats: self.pats.clone(),
            denylist: self.denylist.clone(),
            dpop: self.dpop.clone(),
        }
    }
}

/// The built-in dev issuer as a configured issuer.
pub(crate) fn dev_issuer_config(d: &DevIssuer) -> IssuerConfig {
    IssuerConfig::new(d.issuer(), dev::AUDIENCE)
}
