//! `portcullis-bench`: an open-loop Check load generator with a no-op
//! baseline, a saturation search, and markdown / JSON / SVG reports.
//!
//! A workspace member of its own (it was `portcullis bench`), so the
//! product binary carries neither it nor `plotters` and `hdrhistogram`.
//!
//! Nothing here is on the Check path: the harness drives the server over
//! real gRPC (in-process on its own runtime, or `--target`), and calls the
//! handler directly only for the separate handler-latency phase.
//!
//! - [`workload`]: the mix, and the tokens / PATs made before a run;
//! - [`load`]: the pacer and the histograms;
//! - [`search`]: the run plan (warm-up, handler, find-max, measurement);
//! - [`report`], [`plot`]: tables, JSON, targets, SVG;
//! - [`noop`]: the no-op Check server (`--baseline noop`, `portcullis-bench noop`);
//! - [`noop_http`]: the same for Envoy's HTTP ext_authz mode (`noop --http`);
//! - [`wire`]: the generator's Check client (requests encoded once, answers
//!   read to their status code);
//! - [`calls`]: a fixed number of Checks with hooks (`portcullis-bench calls`),
//!   for instruction counts and cache fills.

#![forbid(unsafe_code)]

pub mod calls;
pub mod cpu;
pub mod load;
pub mod noop;
pub mod noop_http;
pub mod plot;
pub mod report;
pub mod search;
pub mod wire;
pub mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use portcullis::config::{Config, ProcessEnv};
use portcullis::dev::DevIssuer;
use portcullis::server::{Running, ServeOptions};
use portcullis::store::{Store, StoreConfig, StoreKind};
use workload::{Kind, Mix, Sources};

/// `portcullis-bench` (the load run).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Arrival rate, requests per second (the first step with --find-max).
    #[arg(long, default_value = "2000")]
    pub rate: f64,
    /// Length of the measured phase, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unrecorded load before measuring (cold kinds replaced by warm ones).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// HTTP/2 connections to the server; requests go round-robin.
    #[arg(long, default_value = "4")]
    pub connections: usize,
    /// Most requests in flight; later arrivals queue (and that wait counts).
    #[arg(long, default_value = "64")]
    pub concurrency: usize,
    /// Workload: kinds with weights. Kinds: jwt-warm, jwt-cold, pat-warm,
    /// pat-cold, deny (no credential, 401).
    #[arg(long, default_value = "jwt-warm=100")]
    pub mix: Mix,
    /// Per-request deadline (from the actual send); a miss is an error.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Distinct tokens / PATs in each warm pool.
    #[arg(long, default_value = "100")]
    pub tokens: usize,
    /// A running portcullis (`http://127.0.0.1:9191`) instead of one started
    /// in-process. Tokens are minted with its dev key (--data-dir); PATs go
    /// into its store (--store-url, --config, or SQLite in --data-dir).
    #[arg(long)]
    pub target: Option<String>,
    /// Data directory: the in-process server's (default: a fresh temporary
    /// one), or the --target's dev key and SQLite store (default .portcullis).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Config file for the in-process server (policy, store, caches); the
    /// built-in dev issuer is always added.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Postgres URL for the token store (in-process server and PAT creation).
    /// Use a scratch database: the harness leaves its PATs there.
    #[arg(long)]
    pub store_url: Option<String>,
    /// Run the same load against baseline servers and print ratios:
    /// `noop` (OK with one header), `noop-shaped` (OK shaped like
    /// portcullis' JWT allow). Repeat or separate with commas for both.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub baseline: Vec<Baseline>,
    /// The baseline at this URL (e.g. `portcullis-bench noop` in another
    /// process) instead of in-process; one per --baseline, in order.
    #[arg(long, value_delimiter = ',')]
    pub baseline_target: Vec<String>,
    /// Search the saturation rate (per server), then measure at 50 % of it.
    #[arg(long)]
    pub find_max: bool,
    /// Length of each --find-max step.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub step_duration: Duration,
    /// A --find-max step is sustained if ≥ 97 % of the offered rate is
    /// answered, ≤ 0.1 % errors, and p99 stays under this.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// The --find-max search stops when the highest sustained and the
    /// lowest saturated rate are this close (a fraction of the latter).
    /// Each figure is then up to this much below the true limit, so a
    /// ratio of two can be off by about twice it: use 0.02 to compare
    /// servers a few per cent apart.
    #[arg(long, default_value = "0.05", value_parser = parse_precision)]
    pub search_precision: f64,
    /// Run the whole --find-max search this many times, the servers taking
    /// turns in each round, and keep each server's best. A step passes only
    /// if the server really kept up, so another process's stall can fail a
    /// step but never pass one: the best of rounds is the figure least
    /// lowered by the machine's noise. Every round's figure is reported.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub find_max_rounds: u32,
    /// Direct handler calls for the handler-latency phase (in-process only; 0 skips).
    #[arg(long, default_value = "100000")]
    pub handler_calls: u64,
    /// Worker threads of the in-process servers' runtime.
    #[arg(long, default_value = "2")]
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value = "1")]
    pub client_threads: usize,
    /// Write the whole report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG latency-by-percentile plot.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `--baseline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// A Check server on the same tonic stack that answers OK at once,
    /// with one header.
    Noop,
    /// The same, answering with portcullis' response shape for a JWT
    /// allow (identity headers, a header to remove, dynamic metadata).
    NoopShaped,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Noop => "noop",
            Baseline::NoopShaped => "noop-shaped",
        }
    }

    pub fn shape(self) -> noop::Shape {
        match self {
            Baseline::Noop => noop::Shape::Single,
            Baseline::NoopShaped => noop::Shape::Identity,
        }
    }
}

/// `portcullis-bench noop`: serve only the no-op Check server.
#[derive(Debug, Clone, Args)]
pub struct NoopArgs {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:9300")]
    pub addr: SocketAddr,
    /// What every Check gets: `single` (OK with one header) or
    /// `identity` (portcullis' JWT allow: seven identity headers, a header
    /// to remove, dynamic metadata).
    #[arg(long, value_enum, default_value = "single")]
    pub shape: noop::Shape,
    /// The same as `--shape identity` (kept for older scripts).
    #[arg(long, hide = true)]
    pub identity_headers: bool,
    /// Print each CheckRequest's HTTP attributes and header names (never
    /// values) on stderr: what an Envoy config sends.
    #[arg(long)]
    pub show_requests: bool,
    /// Also answer Envoy's HTTP ext_authz mode (`http_service`) here:
    /// 200 with the shape's headers to any request (HTTP/1.1).
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

/// Runs the load; the exit code is 0 unless the harness itself failed
/// (missed targets are reported, never fatal).
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    portcullis::telemetry::init(portcullis::config::LogFormat::Human, "warn");
    validate(&args)?;
    let server_rt = runtime("bench-server", args.server_threads)?;
    let client_rt = runtime("bench-client", args.client_threads)?;
    let srv = server_rt.handle().clone();
    let result = client_rt
        .spawn(async move { search::execute(args, srv).await })
        .await;
    client_rt.shutdown_background();
    server_rt.shutdown_background();
    result.context("the harness panicked")?
}

/// Runs `noop` until SIGINT/SIGTERM.
pub async fn run_noop(args: NoopArgs) -> anyhow::Result<i32> {
    portcullis::telemetry::init(portcullis::config::LogFormat::Human, "info");
    let stop = CancellationToken::new();
    let shape = match args.identity_headers {
        true => noop::Shape::Identity,
        false => args.shape,
    };
    let mut check = noop::NoopCheck::new(shape);
    if args.show_requests {
        check = check.showing_requests();
    }
    if let Some(http) = args.http {
        let headers = noop_http::headers_of(&check)?;
        let addr = noop_http::start(http, headers, stop.clone()).await?;
        eprintln!("no-op HTTP ext_authz server on {addr}");
    }
    let addr = noop::start(args.addr, check, stop.clone()).await?;
    eprintln!("no-op Check server on {addr}");
    portcullis::server::wait_for_signal().await;
    stop.cancel();
    Ok(0)
}

fn validate(a: &BenchArgs) -> anyhow::Result<()> {
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate must be a positive number");
    }
    if a.duration.is_zero() || a.concurrency == 0 || a.connections == 0 || a.tokens == 0 {
        bail!("--duration, --concurrency, --connections and --tokens must be positive");
    }
    if a.server_threads == 0 || a.client_threads == 0 {
        bail!("--server-threads and --client-threads must be at least 1");
    }
    if !a.baseline_target.is_empty() && a.baseline_target.len() != a.baseline.len() {
        bail!("--baseline-target takes one URL per --baseline, in the same order");
    }
    if a.target.is_some() && a.config.is_some() && a.store_url.is_some() {
        bail!("with --target, give the store as --config or --store-url, not both");
    }
    Ok(())
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

/// The server under test and where its tokens come from.
pub struct Subject {
    pub url: String,
    pub sources: Sources,
    /// The in-process server, if we started it.
    pub running: Option<Running>,
    /// A temporary data dir to remove at the end.
    pub scratch: Option<PathBuf>,
    pub store_desc: String,
}

/// Starts portcullis in-process on `srv` (dev issuer, SQLite unless
/// `--store-url` or the config say otherwise).
pub async fn start_in_process(
    args: &BenchArgs,
    srv: &tokio::runtime::Handle,
) -> anyhow::Result<Subject> {
    let (data_dir, scratch) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!(
                "portcullis-bench-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            (d.clone(), Some(d))
        }
    };
    let mut cfg = load_config(args.config.as_deref())?;
    cfg.listen.grpc = "127.0.0.1:0".parse()?;
    cfg.listen.http = "127.0.0.1:0".parse()?;
    cfg.data_dir = data_dir.clone();
    cfg.apply_dev_defaults(args.config.is_some());
    if let Some(url) = &args.store_url {
        cfg.store.kind = StoreKind::Postgres;
        cfg.store.url = Some(url.clone());
    }
    let store_desc = describe_store(&cfg.store);
    let pat_prefix = cfg.pat.prefix.clone();
    let running = srv
        .spawn(portcullis::server::start(ServeOptions {
            config: cfg,
            dev: true,
        }))
        .await
        .context("starting the in-process server")??;
    let store = running.engine.load().pats().store().clone();
    let issuer = DevIssuer::load_existing(&data_dir, None)?;
    Ok(Subject {
        url: format!("http://{}", running.grpc_addr),
        sources: Sources {
            issuer: Arc::new(issuer),
            store: Some(store),
            pat_prefix,
        },
        running: Some(running),
        scratch,
        store_desc,
    })
}

/// A server somebody else started: its dev key and (for PATs) its store.
pub async fn attach_target(args: &BenchArgs, url: &str) -> anyhow::Result<Subject> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".portcullis"));
    let issuer = DevIssuer::load_existing(&data_dir, None).with_context(|| {
        format!(
            "--target needs the target's dev signing key to mint tokens: run the target with \
             `serve --dev --data-dir {0}` and pass --data-dir {0}",
            data_dir.display()
        )
    })?;
    let mut cfg = load_config(args.config.as_deref())?;
    let pat_prefix = cfg.pat.prefix.clone();
    if let Some(u) = &args.store_url {
        cfg.store.kind = StoreKind::Postgres;
        cfg.store.url = Some(u.clone());
    } else if args.config.is_none() {
        cfg.store = StoreConfig::default();
    }
    let needs_store = args
        .mix
        .0
        .iter()
        .any(|(k, _)| matches!(k, Kind::PatWarm | Kind::PatCold));
    let store = if needs_store {
        let s = Store::connect(&cfg.store, &data_dir)
            .await
            .context("opening the target's token store to create PATs")?;
        s.migrate().await.context("migrating the token store")?;
        Some(s)
    } else {
        None
    };
    Ok(Subject {
        url: url.to_owned(),
        sources: Sources {
            issuer: Arc::new(issuer),
            store,
            pat_prefix,
        },
        running: None,
        scratch: None,
        store_desc: describe_store(&cfg.store),
    })
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path, &ProcessEnv).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

fn describe_store(s: &StoreConfig) -> String {
    match s.kind {
        StoreKind::Sqlite => "SQLite".into(),
        StoreKind::Postgres => {
            // Never print a password.
            let url = s.url.as_deref().unwrap_or("");
            let host = url.rsplit('@').next().unwrap_or(url);
            format!("Postgres ({host})")
        }
    }
}

impl Subject {
    /// Stops the in-process server and removes a temporary data dir.
    pub async fn finish(self, srv: &tokio::runtime::Handle) {
        if let Some(r) = self.running {
            let _ = srv.spawn(r.shutdown(Duration::from_secs(5))).await;
        }
        if let Some(d) = self.scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `--search-precision`: a fraction in (0, 0.5].
fn parse_precision(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 0.5 => Ok(p),
        _ => Err(format!(
            "{v:?}: a fraction above 0 and at most 0.5, e.g. 0.02"
        )),
    }
}
