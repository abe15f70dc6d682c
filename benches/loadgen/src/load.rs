//! The open-loop load generator.
//!
//! A pacer thread (not a tokio task: tokio's timer has a 1 ms grain) walks
//! the schedule `start + i / rate` and spawns request `i` onto the client
//! runtime when its time comes, whether or not earlier requests finished.
//! Latency is measured from that *intended* start, so a stall in the server
//! shows up in every request scheduled during it (no coordinated omission).
//! `--concurrency` bounds the requests in flight: past it, requests queue
//! (still timed from their intended start); `--connections` HTTP/2
//! connections carry them round-robin.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::cpu;
use crate::wire::WireClient;
use crate::workload::{ALL_KINDS, Kind, Mix, Pools};

/// One phase's load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Arrivals per second.
    pub rate: f64,
    pub duration: Duration,
    /// Maximum requests in flight.
    pub concurrency: usize,
    /// Per-request deadline, counted from the actual send.
    pub timeout: Duration,
}

/// Check clients, one HTTP/2 connection each.
#[derive(Clone)]
pub struct Clients(Vec<Channel>);

impl Clients {
    pub async fn connect(url: &str, connections: usize) -> anyhow::Result<Clients> {
        let mut v = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let ch = Endpoint::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
            v.push(ch);
        }
        Ok(Clients(v))
    }

    /// The generated client on the first connection (for checks done once,
    /// which show the whole answer).
    pub fn first(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::new(self.0[0].clone())
    }

    /// The generator's own client on the `i`-th connection, round-robin.
    pub fn wire(&self, i: usize) -> WireClient {
        WireClient::new(self.0[i % self.0.len()].clone())
    }
}

/// Latency histograms (nanoseconds) and error counts of one phase.
pub struct Recorded {
    pub per_kind: BTreeMap<Kind, Histogram<u64>>,
    /// Every request, from its intended start.
    pub all: Histogram<u64>,
    /// Intended start → actual send: the generator's own delay (pacer
    /// wake-up, queueing behind `--concurrency`).
    pub lag: Histogram<u64>,
    /// Actual send → response: what a closed-loop tool would report.
    pub service: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub ok: u64,
}

pub fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

impl Recorded {
    fn new() -> Recorded {
        Recorded {
            per_kind: ALL_KINDS.iter().map(|k| (*k, histogram())).collect(),
            all: histogram(),
            lag: histogram(),
            service: histogram(),
            errors: BTreeMap::new(),
            ok: 0,
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What a phase measured.
pub struct PhaseOutcome {
    pub spec: LoadSpec,
    pub scheduled: u64,
    /// From the first intended start to the last response.
    pub elapsed: Duration,
    pub rec: Recorded,
    /// CPU seconds of the in-process servers' and the generator's runtimes
    /// during the phase (Linux).
    pub server_cpu_s: Option<f64>,
    pub client_cpu_s: Option<f64>,
}

impl PhaseOutcome {
    /// Successful responses per second.
    pub fn achieved_rps(&self) -> f64 {
        self.rec.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs one phase on `rt`: `spec.rate × spec.duration` requests of `mix`.
/// `check_outcome`: count an unexpected allow/deny as an error (off for the
/// no-op server, which allows everything).
pub async fn run_phase(
    rt: &tokio::runtime::Handle,
    clients: &Clients,
    mix: &Mix,
    pools: Arc<Pools>,
    spec: &LoadSpec,
    check_outcome: bool,
) -> PhaseOutcome {
    let n = (spec.rate * spec.duration.as_secs_f64()).round().max(1.0) as u64;
    let interval_ns = 1e9 / spec.rate.max(1e-3);
    let cycle = Arc::new(mix.cycle());
    let rec = Arc::new(Mutex::new(Recorded::new()));
    let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let done = Arc::new(Mutex::new(Instant::now()));
    let clients: Arc<[WireClient]> = (0..clients.0.len()).map(|i| clients.wire(i)).collect();
    let timeout = spec.timeout;
    let handle = rt.clone();
    let (rec2, done2) = (rec.clone(), done.clone());

    let cpu0 = (
        cpu::threads_cpu_seconds("bench-server"),
        cpu::threads_cpu_seconds("bench-client"),
    );
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(n as usize);
        for i in 0..n {
            let due = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let kind = cycle[(i % cycle.len() as u64) as usize];
            let (sem, rec, done) = (sem.clone(), rec2.clone(), done2.clone());
            let client = clients[(i % clients.len() as u64) as usize].clone();
            let req = pools.get(kind, i as usize);
            tasks.push(handle.spawn(async move {
                let Ok(_permit) = sem.acquire_owned().await else {
                    return;
                };
                let sent = Instant::now();
                let result = match req {
                    None => Err("no unique token left (harness bug)".to_owned()),
                    Some(req) => {
                        let mut client = client;
                        match tokio::time::timeout(timeout, client.check(&req)).await {
                            Err(_) => Err("timeout".to_owned()),
                            Ok(Err(status)) => Err(format!("grpc {:?}", status.code())),
                            Ok(Ok(code)) => {
                                if check_outcome && code != kind.expected_code() {
                                    Err(format!(
                                        "{kind}: status {code}, expected {}",
                                        kind.expected_code()
                                    ))
                                } else {
                                    Ok(())
                                }
                            }
                        }
                    }
                };
                let end = Instant::now();
                let total = end.saturating_duration_since(due).as_nanos() as u64;
                let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(()) => {
                        r.ok += 1;
                        if let Some(h) = r.per_kind.get_mut(&kind) {
                            h.saturating_record(total.max(1));
                        }
                        r.all.saturating_record(total.max(1));
                        r.lag.saturating_record(
                            sent.saturating_duration_since(due).as_nanos().max(1) as u64,
                        );
                        r.service.saturating_record(
                            end.saturating_duration_since(sent).as_nanos().max(1) as u64,
                        );
                    }
                    Err(e) => *r.errors.entry(e).or_default() += 1,
                }
                drop(r);
                let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
                if end > *d {
                    *d = end;
                }
            }));
        }
        tasks
    });
    let tasks = match tokio::task::spawn_blocking(move || pacer.join()).await {
        Ok(Ok(t)) => t,
        _ => Vec::new(),
    };
    for t in tasks {
        let _ = t.await;
    }
    let end = *done.lock().unwrap_or_else(|e| e.into_inner());
    let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let server_cpu_s = delta(cpu0.0, cpu::threads_cpu_seconds("bench-server"));
    let client_cpu_s = delta(cpu0.1, cpu::threads_cpu_seconds("bench-client"));
    let rec = std::mem::replace(
        &mut *rec.lock().unwrap_or_else(|e| e.into_inner()),
        Recorded::new(),
    );
    PhaseOutcome {
        spec: spec.clone(),
        scheduled: n,
        elapsed: end.saturating_duration_since(start),
        rec,
        server_cpu_s,
        client_cpu_s,
    }
}

/// Calls the Check handler directly, one call at a time, `n` times over the
/// warm counterparts of `mix`: the handler's own latency, without gRPC.
pub async fn handler_phase(
    svc: &portcullis::authz::CheckService,
    mix: &Mix,
    pools: &Pools,
    n: u64,
) -> Recorded {
    let cycle = mix.cycle();
    let mut rec = Recorded::new();
    for i in 0..n {
        let kind = cycle[(i % cycle.len() as u64) as usize].warm();
        let Some(req) = pools.get(kind, i as usize) else {
            *rec.errors.entry(format!("{kind}: no request")).or_default() += 1;
            continue;
        };
        // Decoded as the server does, outside the timed part (as the
        // gRPC server's decode is).
        let req = match portcullis::authz::CheckInput::decode(req.bytes().clone()) {
            Ok(r) => r,
            Err(e) => {
                *rec.errors
                    .entry(format!("{kind}: undecodable request: {e}"))
                    .or_default() += 1;
                continue;
            }
        };
        let t = Instant::now();
        let (_, reply) = svc.reply(&req).await;
        let ns = t.elapsed().as_nanos().max(1) as u64;
        let code = reply.code();
        if code != kind.expected_code() {
            *rec.errors
                .entry(format!("{kind}: status {code}"))
                .or_default() += 1;
            continue;
        }
        rec.ok += 1;
        if let Some(h) = rec.per_kind.get_mut(&kind) {
            h.saturating_record(ns);
        }
        rec.all.saturating_record(ns);
        rec.service.saturating_record(ns);
        if i % 1024 == 0 {
            tokio::task::yield_now().await;
        }
    }
    rec
}
