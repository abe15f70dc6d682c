//! `portcullis-bench calls`: a fixed number of Checks against a running
//! server, closed loop, with hooks around the counted part.
//!
//! Rates and latencies move with whatever else runs on a shared machine;
//! the work a server does per Check does not. This mode exists to count it:
//! `scripts/bench-instructions` runs the server under
//! `valgrind --tool=callgrind`, and the hooks zero the counters after the
//! warm-up (`callgrind_control -z`) and dump them after the counted calls
//! (`callgrind_control -d`), so the dump holds exactly `--calls` Checks. It
//! is also how `scripts/bench-memory` fills a server's caches (every call
//! with its own token) before reading its RSS.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use clap::Args;

use crate::load::Clients;
use crate::wire::Wire;
use crate::workload::{Kind, Mix, Sources, check_request};

/// `portcullis-bench calls`.
#[derive(Debug, Clone, Args)]
pub struct CallsArgs {
    /// The server: portcullis (`serve --dev`) or a no-op.
    #[arg(long)]
    pub target: String,
    /// The dev key that mints the tokens (a `serve --dev --data-dir`).
    /// Also the SQLite store PATs go into, unless --store-url.
    #[arg(long, default_value = ".portcullis")]
    pub data_dir: PathBuf,
    /// Postgres URL of the target's token store (PAT kinds).
    #[arg(long)]
    pub store_url: Option<String>,
    /// Kinds with weights: jwt-warm, pat-warm, deny.
    #[arg(long, default_value = "jwt-warm=100")]
    pub mix: Mix,
    /// Distinct tokens per kind. Requests cycle through them, so with
    /// `--tokens` equal to the calls each call brings a token of its own.
    #[arg(long, default_value = "100")]
    pub tokens: usize,
    /// Calls before `--before` runs (every token once at least, so the
    /// counted calls find them cached).
    #[arg(long, default_value = "1000")]
    pub warmup_calls: u64,
    /// Counted calls.
    #[arg(long, default_value = "10000")]
    pub calls: u64,
    /// HTTP/2 connections.
    #[arg(long, default_value = "1")]
    pub connections: usize,
    /// Calls in flight at once.
    #[arg(long, default_value = "8")]
    pub concurrency: usize,
    /// Shell command run after the warm-up, before the counted calls.
    #[arg(long)]
    pub before: Option<String>,
    /// Shell command run after the counted calls.
    #[arg(long)]
    pub after: Option<String>,
    /// Accept any answer (no-op servers allow what portcullis denies).
    #[arg(long)]
    pub any_outcome: bool,
}

/// Runs the calls; fails if any call errs or (unless `--any-outcome`)
/// answers other than expected.
pub async fn run(args: CallsArgs) -> anyhow::Result<i32> {
    portcullis::telemetry::init(portcullis::config::LogFormat::Human, "warn");
    if args.tokens == 0 || args.concurrency == 0 || args.connections == 0 {
        bail!("--tokens, --concurrency and --connections must be positive");
    }
    if args
        .mix
        .0
        .iter()
        .any(|(k, _)| matches!(k, Kind::JwtCold | Kind::PatCold))
    {
        bail!("calls takes warm kinds and deny only; for unique tokens raise --tokens");
    }
    let sources = sources(&args).await?;
    let reqs = requests(&args, &sources).await?;
    let clients = Clients::connect(&args.target, args.connections).await?;
    let warm = args.warmup_calls.max(if args.any_outcome {
        0
    } else {
        reqs.len() as u64
    });
    let started = std::time::Instant::now();
    send(&clients, &reqs, 0, warm, &args).await?;
    eprintln!("warm-up: {warm} calls in {:?}", started.elapsed());
    hook(args.before.as_deref())?;
    let started = std::time::Instant::now();
    send(&clients, &reqs, warm, args.calls, &args).await?;
    let took = started.elapsed();
    hook(args.after.as_deref())?;
    println!(
        "{} calls in {:.3} s ({:.0} calls/s, closed loop, concurrency {})",
        args.calls,
        took.as_secs_f64(),
        args.calls as f64 / took.as_secs_f64().max(1e-9),
        args.concurrency
    );
    Ok(0)
}

async fn sources(args: &CallsArgs) -> anyhow::Result<Sources> {
    let issuer = portcullis::dev::DevIssuer::load_existing(&args.data_dir, None)
        .with_context(|| format!("loading the dev key from {}", args.data_dir.display()))?;
    let needs_store = args.mix.0.iter().any(|(k, _)| *k == Kind::PatWarm);
    let store = if needs_store {
        let mut cfg = portcullis::store::StoreConfig {
            // Our own inserts, not the server's Checks: a slow insert on a
            // busy machine is no reason to stop.
            timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        if let Some(u) = &args.store_url {
            cfg.kind = portcullis::store::StoreKind::Postgres;
            cfg.url = Some(u.clone());
        }
        let s = portcullis::store::Store::connect(&cfg, &args.data_dir)
            .await
            .context("opening the target's token store to create PATs")?;
        s.migrate().await.context("migrating the token store")?;
        Some(s)
    } else {
        None
    };
    Ok(Sources {
        issuer: Arc::new(issuer),
        store,
        pat_prefix: portcullis::pat::PatConfig::default().prefix,
    })
}

/// The requests in mix order: the `i`-th call sends `reqs[i % len]`.
async fn requests(args: &CallsArgs, sources: &Sources) -> anyhow::Result<Vec<(Kind, Wire)>> {
    let mut by_kind: Vec<(Kind, Vec<Wire>)> = Vec::new();
    for (kind, _) in &args.mix.0 {
        let toks = match kind {
            Kind::JwtWarm => sources.mint_jwts(args.tokens).await?,
            Kind::PatWarm => sources.create_pats(args.tokens, "calls").await?,
            _ => Vec::new(),
        };
        let reqs = if toks.is_empty() {
            vec![Wire::encode(&check_request(None, 0))]
        } else {
            toks.iter()
                .enumerate()
                .map(|(i, t)| Wire::encode(&check_request(Some(t), i)))
                .collect()
        };
        by_kind.push((*kind, reqs));
    }
    let cycle = args.mix.cycle();
    let total = by_kind
        .iter()
        .map(|(k, v)| v.len() * cycle.len() / cycle.iter().filter(|c| *c == k).count())
        .max()
        .unwrap_or(1);
    let mut next = vec![0usize; by_kind.len()];
    let mut out = Vec::with_capacity(total);
    for i in 0..total {
        let kind = cycle[i % cycle.len()];
        let Some(j) = by_kind.iter().position(|(k, _)| *k == kind) else {
            continue;
        };
        let pool = &by_kind[j].1;
        out.push((kind, pool[next[j] % pool.len()].clone()));
        next[j] += 1;
    }
    Ok(out)
}

/// Calls `from..from + n` (request `i % len`), `--concurrency` at a time.
async fn send(
    clients: &Clients,
    reqs: &[(Kind, Wire)],
    from: u64,
    n: u64,
    args: &CallsArgs,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(from));
    let end = from + n;
    let reqs: Arc<[(Kind, Wire)]> = reqs.into();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let mut client = clients.wire(w);
        let (next, reqs, strict) = (next.clone(), reqs.clone(), !args.any_outcome);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), anyhow::Error>(());
                }
                let (kind, req) = &reqs[(i % reqs.len() as u64) as usize];
                let code = client
                    .check(req)
                    .await
                    .with_context(|| format!("call {i} ({kind})"))?;
                if strict && code != kind.expected_code() {
                    bail!(
                        "call {i} ({kind}): status {code}, expected {}",
                        kind.expected_code()
                    );
                }
            }
        }));
    }
    for w in workers {
        w.await.context("a caller panicked")??;
    }
    Ok(())
}

fn hook(cmd: Option<&str>) -> anyhow::Result<()> {
    let Some(cmd) = cmd else { return Ok(()) };
    let status = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
