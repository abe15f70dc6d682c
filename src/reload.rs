//! Hot reload: a changed config file or SIGHUP swaps the policy and
//! issuers atomically. An invalid new config is logged and ignored; the old
//! one keeps serving.
//!
//! What reloads: `issuers`, `jwt`, `policy`, and the client-address
//! settings of `audit` (`trusted_proxies`, the hop counts). What needs a
//! restart (logged as a warning when it changes): `listen`, `data_dir`,
//! `store`, `pat`, `revocation`, `api`, `notify`, the rest of `audit`, `log`. Key managers of unchanged issuers are kept, so a
//! reload never drops loaded keys or resets the refetch rate limit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::authz::Engine;
use crate::config::{Config, ConfigError, IssuerConfig};
use crate::dev::DevIssuer;
use crate::jwt::IssuerKeys;

/// How often the config file is looked at for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Loads the configuration again (file + environment + CLI overrides).
pub type Loader = Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// Background refreshers of the key managers in use, by issuer.
#[derive(Debug, Default)]
pub struct KeyTasks {
    running: HashMap<String, (Arc<IssuerKeys>, CancellationToken)>,
}

impl KeyTasks {
    /// Starts refreshers for managers not yet running and stops those of
    /// managers the engine no longer uses.
    pub fn sync(&mut self, engine: &Engine, parent: &CancellationToken) {
        let current: HashMap<String, Arc<IssuerKeys>> = engine
            .verifier()
            .key_managers()
            .map(|km| (km.issuer().to_owned(), km.clone()))
            .collect();
        self.running.retain(|iss, (km, token)| {
            let keep = current.get(iss).is_some_and(|c| Arc::ptr_eq(c, km));
            if !keep {
                token.cancel();
            }
            keep
        });
        for (iss, km) in current {
            if self.running.contains_key(&iss) {
                continue;
            }
            let token = parent.child_token();
            tokio::spawn(km.clone().run_refresher(token.clone()));
            self.running.insert(iss, (km, token));
        }
    }

    /// The running manager for `cfg`, if its fetch settings are unchanged.
    fn reusable(&self, cfg: &IssuerConfig, old: &Config) -> Option<Arc<IssuerKeys>> {
        let (km, _) = self.running.get(&cfg.issuer)?;
        let same = match old.issuers.iter().find(|o| o.issuer == cfg.issuer) {
            Some(o) => {
                o.jwks_uri == cfg.jwks_uri
                    && o.refresh_interval == cfg.refresh_interval
                    && o.refetch_min_interval == cfg.refetch_min_interval
                    && o.fetch_timeout == cfg.fetch_timeout
                    && o.unknown_kid_wait == cfg.unknown_kid_wait
            }
            // Not in the old file: the built-in dev issuer, whose keys are fixed.
            None => true,
        };
        same.then(|| km.clone())
    }
}

/// Why a reload was refused; the running config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or environment could not be read or parsed.
    #[error("loading the configuration: {0:#}")]
    Load(anyhow::Error),
    /// The new config breaks a rule; every problem is listed.
    #[error("invalid configuration: {}", list(.0))]
    Invalid(Vec<ConfigError>),
    /// A valid config from which no engine could be built.
    #[error("building the new engine: {0:#}")]
    Build(anyhow::Error),
}

fn list(errs: &[ConfigError]) -> String {
    let text: Vec<String> = errs.iter().map(ConfigError::to_string).collect();
    text.join("; ")
}

/// Everything a reload needs.
pub struct Reloader {
    /// The engine Checks use; a reload swaps it.
    engine: Arc<ArcSwap<Engine>>,
    /// The built-in issuer (`--dev`): kept across reloads with its keys.
    dev: Option<Arc<DevIssuer>>,
    keys: Mutex<KeyTasks>,
    shutdown: CancellationToken,
    /// The config the running engine was built from.
    current: Mutex<Config>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Starts the key refreshers of `engine`'s issuers (stopped with
    /// `shutdown`); `current` is the config `engine` was built from.
    pub fn new(
        engine: Arc<ArcSwap<Engine>>,
        dev: Option<Arc<DevIssuer>>,
        current: Config,
        shutdown: CancellationToken,
    ) -> Self {
        let mut keys = KeyTasks::default();
        keys.sync(&engine.load(), &shutdown);
        Reloader {
            engine,
            dev,
            keys: Mutex::new(keys),
            shutdown,
            current: Mutex::new(current),
        }
    }

    /// Validates `new` and, if it is good, swaps in a new engine.
    pub fn apply(&self, new: Config) -> Result<(), ReloadError> {
        new.validate().map_err(ReloadError::Invalid)?;
        let old = lock(&self.current).clone();
        warn_restart_only(&old, &new);
        // Restart-only sections keep their running values, so the engine
        // and the long-lived parts (store, PAT cache) stay consistent.
        let mut new = new;
        new.listen = old.listen.clone();
        new.data_dir = old.data_dir.clone();
        new.store = old.store.clone();
        new.pat = old.pat.clone();
        new.revocation = old.revocation.clone();
        new.api = old.api.clone();
        let shared = self.engine.load().shared_parts();
        let engine = {
            let keys = lock(&self.keys);
            Engine::build_reusing(new.engine(), self.dev.as_deref(), shared, |ic| {
                keys.reusable(ic, &old)
            })
            .map_err(ReloadError::Build)?
        };
        lock(&self.keys).sync(&engine, &self.shutdown);
        self.engine.store(Arc::new(engine));
        *lock(&self.current) = new;
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Loads and applies; errors are logged and the old config stays.
    pub fn reload(&self, loader: &Loader) -> bool {
        let result = loader()
            .map_err(ReloadError::Load)
            .and_then(|cfg| self.apply(cfg));
        crate::metrics::global().reload(result.is_ok());
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload rejected; the previous configuration keeps serving");
                false
            }
        }
    }

    /// Reloads on SIGHUP and whenever the file's content changes.
    pub fn spawn_watchers(self: &Arc<Self>, loader: Loader, file: Option<PathBuf>) {
        let this = self.clone();
        let l = loader.clone();
        #[cfg(unix)]
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; reload only by file change");
                return;
            };
            loop {
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    got = hup.recv() => {
                        if got.is_none() { return; }
                        tracing::info!("SIGHUP: reloading configuration");
                        this.reload(&l);
                    }
                }
            }
        });
        let Some(path) = file else { return };
        let this = self.clone();
        tokio::spawn(async move {
            // Content, not mtime: Kubernetes swaps ConfigMap symlinks.
            let digest = |p: &PathBuf| std::fs::read(p).ok().map(Sha256::digest);
            let mut last = digest(&path);
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            loop {
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = digest(&path);
                if now.is_some() && now != last {
                    last = now;
                    tracing::info!(path = %path.display(), "config file changed: reloading");
                    this.reload(&loader);
                }
            }
        });
    }
}

fn warn_restart_only(old: &Config, new: &Config) {
    let changed = |a: serde_json::Result<serde_json::Value>,
                   b: serde_json::Result<serde_json::Value>| { a.ok() != b.ok() };
    let checks = [
        (
            "listen",
            changed(
                serde_json::to_value(&old.listen),
                serde_json::to_value(&new.listen),
            ),
        ),
        ("data_dir", old.data_dir != new.data_dir),
        (
            "store",
            changed(
                serde_json::to_value(&old.store),
                serde_json::to_value(&new.store),
            ),
        ),
        (
            "pat",
            changed(
                serde_json::to_value(&old.pat),
                serde_json::to_value(&new.pat),
            ),
        ),
        (
            "revocation",
            changed(
                serde_json::to_value(&old.revocation),
                serde_json::to_value(&new.revocation),
            ),
        ),
        ("api", old.api != new.api),
        ("notify", old.notify != new.notify),
        // The proxy list and hop counts reload with the engine.
        (
            "audit",
            old.audit.retention != new.audit.retention
                || old.audit.purge_interval != new.audit.purge_interval,
        ),
    ];
    for (key, did) in checks {
        if did {
            tracing::warn!(
                key,
                "this setting changed but only takes effect after a restart"
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
