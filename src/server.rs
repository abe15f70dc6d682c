//! Wiring: config → engine → gRPC and HTTP servers, background tasks, and
//! graceful shutdown.
//!
//! [`start`] binds both listeners first (so tests can use port 0 and read the
//! real addresses), then serves until [`Running::shutdown`] or a signal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::grpc::{GrpcTokens, TokenServiceServer};
use crate::api::limits::HttpLimits;
use crate::api::{HttpState, router};
use crate::authz::{CheckService, Engine};
use crate::config::{Config, IssuerConfig};
use crate::dev::{self, DevIssuer};
use crate::jwt::{IssuerKeys, Verifier};
use crate::pat::PatValidator;
use crate::policy::Policy;
use crate::reload::{KeyTasks, Loader, Reloader};
use crate::revocation::{Bus, JwtDenyList, Resync, Revoker};
use crate::store::Store;
use crate::tokens::TokenService;

/// Encoded descriptors of our own protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));

/// How the server is started.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: Config,
    /// Serve the built-in dev issuer and trust it.
    pub dev: bool,
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub engine: Arc<ArcSwap<Engine>>,
    /// The one revocation path (store, then caches, then the bus).
    pub revoker: Revoker,
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// Periodic `last_used_at` flusher; stopped before the final flush.
    flusher: JoinHandle<()>,
    /// Swaps in a new engine on config change or SIGHUP.
    pub reloader: Arc<Reloader>,
}

/// Builds the engine for a config. `dev` is the built-in issuer, if any;
/// `pats` is shared across reloads (its cache and store outlive a config).
/// The JWT deny set is fresh and unloaded, so JWTs are checked against the
/// store (tools such as `portcullis check`); the server shares one through
/// [`build_engine_reusing`].
pub fn build_engine(
    cfg: &Config,
    dev: Option<&DevIssuer>,
    pats: Arc<PatValidator>,
) -> anyhow::Result<Engine> {
    let denylist = Arc::new(JwtDenyList::new(cfg.revocation.jwt_denylist_capacity));
    build_engine_reusing(cfg, dev, pats, denylist, |_| None)
}

/// Like [`build_engine`], but keeps the key managers `reuse` returns (a
/// reload must not throw away loaded keys or the refetch rate limit).
pub fn build_engine_reusing(
    cfg: &Config,
    dev: Option<&DevIssuer>,
    pats: Arc<PatValidator>,
    denylist: Arc<JwtDenyList>,
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
    let mut issuers = cfg.issuers.clone();
    let dev_keys = match dev {
        Some(d) => {
            issuers.push(dev_issuer_config(d));
            Some(d.key_set()?)
        }
        None => None,
    };
    let mut dev_keys = dev_keys;
    let dev_iss = dev.map(|d| d.issuer().to_owned());
    let verifier = Verifier::new(&issuers, &cfg.jwt, |ic| {
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
    let surface = crate::authz::Surface::from_config(cfg)?;
    let verifier = verifier.with_captured_claims(surface.headers.claim_names());
    Ok(Engine {
        verifier: Arc::new(verifier),
        max_token_bytes: cfg.jwt.max_token_bytes,
        pats,
        pat_prefix: cfg.pat.prefix.clone(),
        denylist,
        pat_marker_value: cfg.pat.jwt_marker.value.clone(),
        pat_exchange_audience: cfg.pat.exchange.audience.clone(),
        policy: Arc::new(Policy::compile(&cfg.policy).map_err(|e| anyhow::anyhow!("{e}"))?),
        surface: Arc::new(surface),
    })
}

pub(crate) fn dev_issuer_config(d: &DevIssuer) -> IssuerConfig {
    IssuerConfig::new(d.issuer(), dev::AUDIENCE)
}

/// Binds, builds and starts serving.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    let cfg = opts.config;
    if let Err(errs) = cfg.validate() {
        let text: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        anyhow::bail!("invalid configuration:\n{}", text.join("\n"));
    }
    if let Err(e) = cfg.validate_mode(opts.dev) {
        anyhow::bail!("invalid configuration:\n  {e}");
    }
    let grpc_listener = TcpListener::bind(cfg.listen.grpc)
        .await
        .with_context(|| format!("binding gRPC listener on {} (listen.grpc)", cfg.listen.grpc))?;
    let http_listener = TcpListener::bind(cfg.listen.http)
        .await
        .with_context(|| format!("binding HTTP listener on {} (listen.http)", cfg.listen.http))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let dev = if opts.dev {
        let issuer = format!("http://{http_addr}{}", dev::REALM_PATH);
        let d = DevIssuer::load_or_create(&cfg.data_dir, issuer)?;
        d.remember_issuer(&cfg.data_dir)?;
        tracing::warn!(
            issuer = d.issuer(),
            "DEV MODE: built-in issuer with a local signing key; never use in production"
        );
        Some(Arc::new(d))
    } else {
        None
    };

    let store = Store::connect(&cfg.store, &cfg.data_dir)
        .await
        .with_context(|| format!("opening the {:?} token store (store.kind)", cfg.store.kind))?;
    let shutdown = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Rows older than migration 4 have no owner issuer; with exactly one
    // issuer configured they can only be its users' (see Store::claim_unowned).
    let mut issuer_names: Vec<String> = cfg.issuers.iter().map(|i| i.issuer.clone()).collect();
    if let Some(d) = &dev {
        issuer_names.push(d.issuer().to_owned());
    }
    let sole_issuer = match issuer_names.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    migrate_or_retry(&store, sole_issuer, &shutdown, &mut tasks).await;
    if cfg.pat.hash_key.is_none() {
        // Kept working for existing deployments; see README (pat.hash_key).
        tracing::warn!(
            "pat.hash_key is not set: personal access tokens are stored as plain SHA-256, so \
             database write access alone can plant a usable token; set PORTCULLIS__PAT__HASH_KEY"
        );
    } else if let Ok(legacy) = store.legacy_opaque_hashes().await
        && !legacy.is_empty()
    {
        // Refused by Check: they cannot be told apart from planted rows.
        tracing::warn!(
            count = legacy.len(),
            "personal access tokens stored as plain SHA-256 are refused while pat.hash_key is \
             set; run `portcullis token rekey` once to move them"
        );
    }
    let pats = Arc::new(PatValidator::new(store.clone(), &cfg.pat));
    let flusher = pats.usage().start_flusher();
    let denylist = Arc::new(JwtDenyList::new(cfg.revocation.jwt_denylist_capacity));
    let bus = Bus::from_config(&cfg.revocation)?;
    let revoker = Revoker::with_parts(pats.clone(), denylist.clone(), bus.clone());
    let (reuse_tx, reuse_rx) = tokio::sync::mpsc::channel(crate::tokens::reuse::QUEUE);
    pats.set_reuse_sink(reuse_tx);
    tasks.push(tokio::spawn(crate::tokens::reuse::run(
        reuse_rx,
        store.clone(),
        revoker.clone(),
        shutdown.clone(),
    )));

    let engine = Arc::new(ArcSwap::from_pointee(build_engine_reusing(
        &cfg,
        dev.as_deref(),
        pats.clone(),
        denylist.clone(),
        |_| None,
    )?));

    // Load the deny-list now (bounded by store.timeout); if the store is
    // down, JWT Checks ask the store (503 while it is down) until it loads.
    let mut resync = Resync::new(pats.clone(), denylist.clone());
    resync.once().await;
    let kick = Arc::new(tokio::sync::Notify::new());
    tasks.push(tokio::spawn(resync.run(
        cfg.revocation.resync_interval,
        kick.clone(),
        shutdown.clone(),
    )));
    if let Some(sub) = bus.subscriber(pats, denylist, kick, shutdown.clone()) {
        tasks.push(tokio::spawn(sub));
    }
    let keys = Arc::new(Mutex::new(KeyTasks::default()));
    keys.lock()
        .unwrap_or_else(|p| p.into_inner())
        .sync(&engine.load(), &shutdown);
    let reloader = Arc::new(Reloader {
        engine: engine.clone(),
        dev: dev.clone(),
        keys,
        shutdown: shutdown.clone(),
        current: Mutex::new(cfg.clone()),
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AuthorizationServer<CheckService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let tokens = TokenService::new(
        engine.clone(),
        revoker.clone(),
        cfg.pat.clone(),
        cfg.api.clone(),
        opts.dev,
    )?;
    health_reporter
        .set_serving::<TokenServiceServer<GrpcTokens>>()
        .await;
    let check = CheckService::new(engine.clone());
    let grpc_tokens = tokens.clone();
    let grpc_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AuthorizationServer::new(check))
            .add_service(GrpcTokens::new(grpc_tokens).into_server())
            .serve_with_incoming_shutdown(
                grpc_incoming(grpc_listener),
                grpc_shutdown.cancelled_owned(),
            )
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));

    let mut app = router(HttpState {
        engine: engine.clone(),
        draining: draining.clone(),
        dev: dev.clone(),
        revoker: revoker.clone(),
    })
    .merge(crate::api::rest::routes(
        tokens.clone(),
        cfg.api.max_body_bytes,
    ));
    if tokens.ui_enabled() {
        app = app.merge(crate::api::ui::routes(
            dev.clone(),
            http_addr,
            cfg.api.max_body_bytes,
        ));
    }
    tasks.push(tokio::spawn(crate::api::limits::serve(
        http_listener,
        app,
        HttpLimits::from(&cfg.api),
        shutdown.clone(),
    )));

    tracing::info!(grpc = %grpc_addr, http = %http_addr, "portcullis serving");
    Ok(Running {
        grpc_addr,
        http_addr,
        engine,
        revoker,
        shutdown,
        draining,
        tasks,
        flusher,
        reloader,
    })
}

/// The gRPC listener as tonic's stream of connections, with `TCP_NODELAY`
/// on every accepted socket (also used by the bench's no-op server, so both
/// run the same stack). Without it, Nagle holds back a response written in
/// more than one segment until Envoy's delayed ACK (up to 40 ms).
pub fn grpc_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Applies migrations now; if the store is down, keeps retrying in the
/// background (Checks answer 503 for uncached PATs meanwhile, `/readyz`
/// reports the store) instead of refusing to start.
async fn migrate_or_retry(
    store: &Store,
    sole_issuer: Option<String>,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) {
    match store.migrate().await {
        Ok(applied) => {
            if !applied.is_empty() {
                tracing::info!(?applied, "applied migrations");
            }
            claim_unowned(store, sole_issuer.as_deref()).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "token store migrations failed; retrying in the background");
            let store = store.clone();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let mut wait = Duration::from_millis(500);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    match store.migrate().await {
                        Ok(_) => {
                            tracing::info!("token store reachable; migrations applied");
                            claim_unowned(&store, sole_issuer.as_deref()).await;
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "token store migrations still failing")
                        }
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }));
        }
    }
}

/// Gives tokens without an owner issuer to the one configured issuer. With
/// several (`None`), they stay unowned: nobody can manage them through the
/// API and JWT-PATs among them are refused, until an operator revokes them
/// by id. A failure only leaves them unowned (fail closed) and is retried at
/// the next start.
async fn claim_unowned(store: &Store, sole_issuer: Option<&str>) {
    let Some(issuer) = sole_issuer else {
        return;
    };
    match store.claim_unowned(issuer).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(tokens = n, %issuer, "tokens without an owner issuer given to the one configured issuer")
        }
        Err(e) => {
            tracing::warn!(error = %e, "claiming tokens without an owner issuer failed; they stay unowned")
        }
    }
}

// === impl Running ===

impl Running {
    /// Graceful stop: readiness fails first, in-flight calls finish, then
    /// background work is flushed. Bounded by `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        self.draining.store(true, Ordering::Release);
        self.shutdown.cancel();
        let engine = self.engine.load_full();
        self.flusher.abort();
        let wait = async {
            for t in self.tasks {
                let _ = t.await;
            }
            engine.flush().await;
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!("shutdown deadline passed; exiting anyway");
        }
    }

    /// Turns on hot reload: SIGHUP, and changes to `file` if given.
    pub fn enable_reload(&self, loader: Loader, file: Option<std::path::PathBuf>) {
        self.reloader.spawn_watchers(loader, file);
    }

    /// Marks the server as draining (`/readyz` fails) without stopping it.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
