//! Wiring: config → engine → gRPC and HTTP servers, background tasks, and
//! graceful shutdown.
//!
//! [`start`] binds both listeners first (so tests can use port 0 and read the
//! real addresses), then serves until [`Running::shutdown`] or a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::grpc::{GrpcTokens, TokenServiceServer};
use crate::api::limits::HttpLimits;
use crate::api::logout::LogoutState;
use crate::api::{HttpState, router};
use crate::authz::{CheckServer, CheckService, DpopState, Engine, SharedParts};
use crate::config::Config;
use crate::dev::{self, DevIssuer};
use crate::listen::{GrpcListen, UnixSocket};
use crate::pat::PatValidator;
use crate::reload::{Loader, Reloader};
use crate::revocation::{Bus, JwtDenyList, Resync, Revoker};
use crate::store::Store;
use crate::tokens::TokenService;

/// Encoded descriptors of our own protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));

/// Encoded descriptors of Envoy's `envoy.service.auth.v3` protos and their
/// imports (`proto/vendor`), for reflection: `envoy-types` exports none.
pub const ENVOY_AUTH_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_auth_descriptor.bin"));

/// gRPC reflection, `grpc.reflection.v1` and `v1alpha` (still the only one
/// many clients speak), over every service the gRPC port serves.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ENVOY_AUTH_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

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
    /// The gRPC TCP address; with `listen.grpc: unix:…`, `0.0.0.0:0` (see
    /// `grpc_socket`).
    pub grpc_addr: SocketAddr,
    /// The gRPC Unix socket, with `listen.grpc: unix:…`.
    pub grpc_socket: Option<std::path::PathBuf>,
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

/// Binds, builds and starts serving.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    let cfg = opts.config;
    check_config(&cfg, opts.dev)?;
    // Read when the config was loaded; refused before anything starts.
    let secrets = crate::notify::resolve_secrets(&cfg.notify).map_err(|errs| {
        let text: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("invalid configuration:\n{}", text.join("\n"))
    })?;
    let grpc_listener = GrpcListener::bind(&cfg.listen.grpc)
        .await
        .with_context(|| format!("binding gRPC listener on {} (listen.grpc)", cfg.listen.grpc))?;
    let http_listener = TcpListener::bind(cfg.listen.http)
        .await
        .with_context(|| format!("binding HTTP listener on {} (listen.http)", cfg.listen.http))?;
    let (grpc_addr, grpc_socket) = grpc_listener.local()?;
    let http_addr = http_listener.local_addr()?;
    let dev = dev_issuer(opts.dev, &cfg, http_addr)?;
    let mut bg = Background {
        shutdown: CancellationToken::new(),
        tasks: Vec::new(),
    };
    let store = open_store(&cfg, dev.as_deref(), &mut bg).await?;
    let pats = Arc::new(PatValidator::new(store.clone(), &cfg.pat));
    let flusher = pats.usage().start_flusher();
    let shared = SharedParts {
        pats: pats.clone(),
        denylist: Arc::new(JwtDenyList::new(cfg.revocation.jwt_denylist_capacity)),
        dpop: Arc::new(DpopState::new(cfg.dpop.clone())),
    };
    let revoker = start_revocation(&cfg, &store, &shared, &mut bg).await?;
    let engine = Arc::new(ArcSwap::from_pointee(Engine::build_reusing(
        cfg.engine(),
        dev.as_deref(),
        shared,
        |_| None,
    )?));
    bg.tasks.push(tokio::spawn(purge_expired_entries(
        engine.clone(),
        bg.shutdown.clone(),
    )));
    let reloader = Arc::new(Reloader::new(
        engine.clone(),
        dev.clone(),
        cfg.clone(),
        bg.shutdown.clone(),
    ));
    let tokens = TokenService::new(
        engine.clone(),
        revoker.clone(),
        cfg.pat.clone(),
        cfg.api.clone(),
        opts.dev,
    )?;
    start_lifecycle(&cfg, secrets, &store, &mut bg)?;
    serve_grpc(
        grpc_listener,
        engine.clone(),
        cfg.api.resource_metadata.url(),
        cfg.dpop.algs_param(),
        tokens.clone(),
        &mut bg,
    )
    .await?;
    let draining = Arc::new(AtomicBool::new(false));
    let state = HttpState {
        engine: engine.clone(),
        draining: draining.clone(),
        dev: dev.clone(),
        revoker: revoker.clone(),
    };
    serve_http(http_listener, http_addr, &cfg, state, tokens, &mut bg);
    tracing::info!(grpc = %grpc_addr, http = %http_addr, "portcullis serving");
    Ok(Running {
        grpc_addr,
        grpc_socket,
        http_addr,
        engine,
        revoker,
        shutdown: bg.shutdown,
        draining,
        tasks: bg.tasks,
        flusher,
        reloader,
    })
}

/// Background work started by [`start`], stopped by [`Running::shutdown`].
struct Background {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// The same checks as `config check`, plus the `--dev`-only settings.
fn check_config(cfg: &Config, dev: bool) -> anyhow::Result<()> {
    if let Err(errs) = cfg.validate() {
        let text: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        anyhow::bail!("invalid configuration:\n{}", text.join("\n"));
    }
    if let Err(e) = cfg.validate_mode(dev) {
        anyhow::bail!("invalid configuration:\n  {e}");
    }
    for w in cfg.warnings() {
        tracing::warn!(key = %w.key, "{}", w.message);
    }
    Ok(())
}

/// The built-in issuer under `--dev`, served on the HTTP port.
fn dev_issuer(
    dev: bool,
    cfg: &Config,
    http_addr: SocketAddr,
) -> anyhow::Result<Option<Arc<DevIssuer>>> {
    if !dev {
        return Ok(None);
    }
    let issuer = format!("http://{http_addr}{}", dev::REALM_PATH);
    let d = DevIssuer::load_or_create(&cfg.data_dir, issuer)?;
    d.remember_issuer(&cfg.data_dir)?;
    tracing::warn!(
        issuer = d.issuer(),
        "DEV MODE: built-in issuer with a local signing key; never use in production"
    );
    Ok(Some(Arc::new(d)))
}

/// Opens the token store and migrates it (in the background while it is
/// down), then warns about hash-key settings an operator must act on.
async fn open_store(
    cfg: &Config,
    dev: Option<&DevIssuer>,
    bg: &mut Background,
) -> anyhow::Result<Store> {
    let store = Store::connect(&cfg.store, &cfg.data_dir)
        .await
        .with_context(|| format!("opening the {:?} token store (store.kind)", cfg.store.kind))?;
    // Rows older than migration 4 have no owner issuer; with exactly one
    // issuer configured they can only be its users' (see Store::claim_unowned).
    let mut issuer_names: Vec<String> = cfg.issuers.iter().map(|i| i.issuer.clone()).collect();
    if let Some(d) = dev {
        issuer_names.push(d.issuer().to_owned());
    }
    let sole_issuer = match issuer_names.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    migrate_or_retry(&store, sole_issuer, &bg.shutdown, &mut bg.tasks).await;
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
    Ok(store)
}

/// The revocation path: reuse detection, the deny-list loaded now (bounded
/// by `store.timeout`; if the store is down, JWT Checks ask the store until
/// it loads), periodic resync and the bus subscriber.
async fn start_revocation(
    cfg: &Config,
    store: &Store,
    shared: &SharedParts,
    bg: &mut Background,
) -> anyhow::Result<Revoker> {
    let SharedParts { pats, denylist, .. } = shared.clone();
    let bus = Bus::from_config(&cfg.revocation)?;
    let revoker = Revoker::with_parts(pats.clone(), denylist.clone(), bus.clone());
    let (reuse_tx, reuse_rx) = tokio::sync::mpsc::channel(crate::tokens::reuse::QUEUE);
    pats.set_reuse_sink(reuse_tx);
    bg.tasks.push(tokio::spawn(crate::tokens::reuse::run(
        reuse_rx,
        store.clone(),
        revoker.clone(),
        bg.shutdown.clone(),
    )));
    let mut resync = Resync::new(pats.clone(), denylist.clone());
    resync.once().await;
    let kick = Arc::new(tokio::sync::Notify::new());
    bg.tasks.push(tokio::spawn(resync.run(
        cfg.revocation.resync_interval,
        kick.clone(),
        bg.shutdown.clone(),
    )));
    if let Some(sub) = bus.subscriber(pats, denylist, kick, bg.shutdown.clone()) {
        bg.tasks.push(tokio::spawn(sub));
    }
    start_owner_sync(cfg, &shared.pats, &revoker, bg)?;
    Ok(revoker)
}

/// How often cached verifications of expired JWTs and stale PAT lookups
/// are dropped.
const CACHE_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The verified-JWT and PAT caches have no timers (see `jwt`,
/// `pat::validator`): without this, tokens that expired (or went stale)
/// unpresented would hold memory until capacity evicts them.
async fn purge_expired_entries(engine: Arc<ArcSwap<Engine>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CACHE_PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let engine = engine.load();
                engine.verifier().purge_expired();
                engine.pats().purge_stale();
            }
        }
    }
}

/// Token lifecycle background work: expiry notices, webhook delivery
/// (when `notify.webhooks` is set) and the audit retention purge.
fn start_lifecycle(
    cfg: &Config,
    secrets: Vec<Vec<u8>>,
    store: &Store,
    bg: &mut Background,
) -> anyhow::Result<()> {
    bg.tasks.extend(crate::notify::start(
        &cfg.notify,
        secrets,
        store,
        &bg.shutdown,
    )?);
    let retention = crate::audit::Retention::new(store.clone(), &cfg.audit);
    bg.tasks
        .push(tokio::spawn(retention.run(bg.shutdown.clone())));
    Ok(())
}

/// `pat.owner_sync`: the periodic read of PAT owners from Keycloak.
fn start_owner_sync(
    cfg: &Config,
    pats: &Arc<PatValidator>,
    revoker: &Revoker,
    bg: &mut Background,
) -> anyhow::Result<()> {
    let Some(o) = cfg.pat.owner_sync.clone() else {
        return Ok(());
    };
    // Config::validate checked the issuer is configured.
    let scopes = cfg
        .issuers
        .iter()
        .find(|i| i.issuer == o.issuer)
        .map(|i| i.scopes.clone())
        .unwrap_or_default();
    let sync = crate::owners::OwnerSync::new(o, scopes, pats.clone(), revoker.clone())
        .map_err(|e| anyhow::anyhow!("pat.owner_sync: {e}"))?;
    bg.tasks.push(tokio::spawn(sync.run(bg.shutdown.clone())));
    Ok(())
}

/// The bound gRPC listener: TCP, or a Unix socket (removed when the
/// server stops).
enum GrpcListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener, UnixSocket),
}

impl GrpcListener {
    async fn bind(at: &GrpcListen) -> std::io::Result<GrpcListener> {
        Ok(match at {
            GrpcListen::Tcp(a) => GrpcListener::Tcp(TcpListener::bind(a).await?),
            GrpcListen::Unix(p) => {
                let (l, guard) = UnixSocket::bind(p)?;
                GrpcListener::Unix(l, guard)
            }
        })
    }

    /// The TCP address (unspecified for a socket) and the socket path.
    fn local(&self) -> std::io::Result<(SocketAddr, Option<std::path::PathBuf>)> {
        Ok(match self {
            GrpcListener::Tcp(l) => (l.local_addr()?, None),
            GrpcListener::Unix(_, s) => (
                SocketAddr::from(([0, 0, 0, 0], 0)),
                Some(s.path().to_path_buf()),
            ),
        })
    }
}

/// gRPC: Check, health, reflection and the TokenService.
async fn serve_grpc(
    listener: GrpcListener,
    engine: Arc<ArcSwap<Engine>>,
    resource_metadata_url: Option<String>,
    dpop_algs: String,
    tokens: TokenService,
    bg: &mut Background,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CheckServer>().await;
    health_reporter
        .set_serving::<TokenServiceServer<GrpcTokens>>()
        .await;
    let reflection = reflection_builder()
        .build_v1()
        .context("building gRPC reflection (v1)")?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .context("building gRPC reflection (v1alpha)")?;
    let check = CheckService::new(engine)
        .with_resource_metadata(resource_metadata_url)
        .with_dpop_algs(dpop_algs);
    let shutdown = bg.shutdown.clone();
    bg.tasks.push(tokio::spawn(async move {
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(CheckServer::new(check))
            .add_service(GrpcTokens::new(tokens).into_server());
        let stop = shutdown.cancelled_owned();
        let res = match listener {
            GrpcListener::Tcp(l) => {
                router
                    .serve_with_incoming_shutdown(grpc_incoming(l), stop)
                    .await
            }
            GrpcListener::Unix(l, _socket) => {
                // `_socket` lives until the server stops, then removes the file.
                let incoming = crate::listen::unix_incoming(l);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));
    Ok(())
}

/// HTTP: health, metrics, the REST API, back-channel logout, the `/ui`
/// page and the dev issuer.
fn serve_http(
    listener: TcpListener,
    http_addr: SocketAddr,
    cfg: &Config,
    state: HttpState,
    tokens: TokenService,
    bg: &mut Background,
) {
    let dev = state.dev.clone();
    let engine = state.engine.clone();
    let logout = LogoutState::new(
        state.engine.clone(),
        state.revoker.clone(),
        cfg.api.max_body_bytes,
    );
    let mut app = router(state)
        .merge(crate::api::rest::routes(
            tokens.clone(),
            cfg.api.max_body_bytes,
        ))
        .merge(crate::api::metadata::routes(
            engine.clone(),
            cfg.api.resource_metadata.clone(),
        ))
        .merge(crate::api::logout::routes(logout));
    if tokens.ui_enabled() {
        app = app.merge(crate::api::ui::routes(
            &cfg.api.ui,
            dev,
            http_addr,
            cfg.api.max_body_bytes,
        ));
    }
    bg.tasks.push(tokio::spawn(crate::api::limits::serve(
        listener,
        app,
        HttpLimits::from(&cfg.api),
        bg.shutdown.clone(),
    )));
}

/// The gRPC listener as tonic's stream of connections
/// ([`crate::listen::tcp_incoming`]; also used by the bench's no-op server,
/// so both run the same stack).
pub fn grpc_incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<crate::listen::Coalescing<tokio::net::TcpStream>>>
{
    crate::listen::tcp_incoming(listener)
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
