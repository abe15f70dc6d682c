//! The run plan: set up, warm up, handler phase, optional saturation
//! search, the measured phase (and the baseline's), then the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{self, Clients, LoadSpec, PhaseOutcome};
use crate::report::{self, RunReport, Summary, TargetResult};
use crate::workload::{Kind, Mix, Pools, Sources};
use crate::{BenchArgs, Subject, plot};

/// One server to load: where, with which requests.
struct Server {
    name: &'static str,
    clients: Clients,
    /// Cold kinds are real only for portcullis; the no-op server gets the
    /// warm counterparts (same sizes on the wire, no minting).
    mix: Mix,
    check_outcome: bool,
    /// Runs on our server runtime, so its CPU time can be measured.
    in_process: bool,
}

pub async fn execute(args: BenchArgs, srv: tokio::runtime::Handle) -> anyhow::Result<i32> {
    let subject = match &args.target {
        Some(url) => crate::attach_target(&args, url).await?,
        None => crate::start_in_process(&args, &srv).await?,
    };
    let res = plan(&args, &srv, &subject).await;
    subject.finish(&srv).await;
    res
}

async fn plan(
    args: &BenchArgs,
    srv: &tokio::runtime::Handle,
    subject: &Subject,
) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Handle::current();
    let ours = Server {
        name: "portcullis",
        clients: Clients::connect(&subject.url, args.connections).await?,
        mix: args.mix.clone(),
        check_outcome: true,
        in_process: subject.running.is_some(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let mut baselines: Vec<Server> = Vec::new();
    for (i, b) in args.baseline.iter().enumerate() {
        let url = match args.baseline_target.get(i) {
            Some(url) => url.clone(),
            None => {
                let addr = srv
                    .spawn(crate::noop::start(
                        "127.0.0.1:0".parse()?,
                        crate::noop::NoopCheck::new(b.shape()),
                        stop.clone(),
                    ))
                    .await??;
                format!("http://{addr}")
            }
        };
        baselines.push(Server {
            name: b.name(),
            clients: Clients::connect(&url, args.connections).await?,
            mix: args.mix.warm(),
            check_outcome: false,
            in_process: args.baseline_target.is_empty(),
        });
    }

    eprintln!(
        "preparing {} warm tokens per kind ({})",
        args.tokens, args.mix
    );
    let warm = Arc::new(subject.sources.warm_pools(&args.mix, args.tokens).await?);
    verify_warm(&ours.clients, &warm).await?;

    let mut phases: Vec<Summary> = Vec::new();
    let mut saturation: BTreeMap<String, f64> = BTreeMap::new();

    // Handler latency, without gRPC (in-process only).
    let handler = match (&subject.running, args.handler_calls) {
        (Some(r), n) if n > 0 => {
            let svc = portcullis::authz::CheckService::new(r.engine.clone());
            let (mix, pools, n) = (args.mix.clone(), warm.clone(), n);
            eprintln!("handler phase: {n} direct calls");
            let rec = srv
                .spawn(async move { load::handler_phase(&svc, &mix, &pools, n).await })
                .await?;
            let s = Summary::from_recorded("portcullis", "handler (direct call, no gRPC)", &rec);
            phases.push(s.clone());
            Some(s)
        }
        _ => None,
    };

    let warm_spec = |rate: f64| LoadSpec {
        rate,
        duration: args.warmup,
        concurrency: args.concurrency,
        timeout: args.timeout,
    };
    for s in std::iter::once(&ours).chain(&baselines) {
        if !args.warmup.is_zero() {
            eprintln!(
                "warm-up {}: {:.0} rps for {:?}",
                s.name, args.rate, args.warmup
            );
            load::run_phase(
                &rt,
                &s.clients,
                &args.mix.warm(),
                warm.clone(),
                &warm_spec(args.rate),
                s.check_outcome,
            )
            .await;
        }
    }

    let mut rate = args.rate;
    // Each server's figure from every round, in round order.
    let mut rounds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if args.find_max {
        for round in 1..=args.find_max_rounds {
            if args.find_max_rounds > 1 {
                eprintln!("find-max round {round} of {}", args.find_max_rounds);
            }
            for s in std::iter::once(&ours).chain(&baselines) {
                let max = find_max(args, &rt, s, &subject.sources, &warm).await?;
                rounds.entry(s.name.to_owned()).or_default().push(max);
            }
        }
        for (name, figures) in &rounds {
            let best = figures.iter().copied().fold(0.0, f64::max);
            saturation.insert(name.clone(), best);
        }
        rate = saturation["portcullis"] * 0.5;
        eprintln!("measuring at 50 % of portcullis' saturation: {rate:.0} rps");
    }

    let spec = LoadSpec {
        rate,
        duration: args.duration,
        concurrency: args.concurrency,
        timeout: args.timeout,
    };
    let label = if args.find_max {
        "50 % of saturation"
    } else {
        "fixed rate"
    };
    let main = measure(&rt, &ours, &subject.sources, &warm, &spec).await?;
    let main = summary(&ours, label, &main);
    phases.push(main.clone());
    let mut bases = Vec::new();
    for n in &baselines {
        let o = measure(&rt, n, &subject.sources, &warm, &spec).await?;
        let s = summary(n, label, &o);
        phases.push(s.clone());
        bases.push(s);
    }

    // Report.
    println!("# portcullis bench\n");
    println!(
        "mix `{}`, {} connections, concurrency {}, store {}, server {}, load generator {} thread(s), server runtime {} thread(s)\n",
        args.mix,
        args.connections,
        args.concurrency,
        subject.store_desc,
        args.target.as_deref().unwrap_or("in-process"),
        args.client_threads,
        args.server_threads
    );
    if !saturation.is_empty() {
        println!("## Saturation (highest sustained rate)\n");
        if args.find_max_rounds > 1 {
            println!(
                "Best of {} rounds of the search, the servers taking turns in each.\n",
                args.find_max_rounds
            );
            println!("| server | rps (best) | each round |\n| --- | ---: | --- |");
        } else {
            println!("| server | rps |\n| --- | ---: |");
        }
        for (k, v) in &saturation {
            match rounds.get(k) {
                Some(each) if args.find_max_rounds > 1 => {
                    let each: Vec<String> = each.iter().map(|r| format!("{r:.0}")).collect();
                    println!("| {k} | {v:.0} | {} |", each.join(", "));
                }
                _ => println!("| {k} | {v:.0} |"),
            }
        }
        if args.find_max_rounds > 1
            && let Some(ours) = rounds.get("portcullis")
        {
            // The same ratio per round: how far apart the rounds are says
            // how much the machine moved the figure.
            println!();
            for b in &baselines {
                if let Some(theirs) = rounds.get(b.name) {
                    let each: Vec<String> = ours
                        .iter()
                        .zip(theirs)
                        .map(|(a, b)| format!("{:.3}", a / b))
                        .collect();
                    println!("portcullis / {} per round: {}", b.name, each.join(", "));
                }
            }
        }
        if let Some(a) = saturation.get("portcullis") {
            println!();
            for b in &baselines {
                if let Some(v) = saturation.get(b.name) {
                    println!("portcullis / {} saturation: {:.3}", b.name, a / v);
                }
            }
        }
        println!();
    }
    println!("## Latency (from intended start)\n");
    for p in &phases {
        println!("{}", p.markdown());
    }
    for b in &bases {
        println!(
            "## portcullis vs no-op ({}), same load\n\n{}",
            b.server,
            report::ratio_table(&main, b)
        );
    }
    let targets = targets(args, handler.as_ref(), &main, &saturation);
    println!("## Targets\n\n{}", report::targets_table(&targets));

    if let Some(path) = &args.plot {
        let mut lines = vec![plot::Line {
            label: format!("portcullis ({:.0} rps)", main.offered_rps),
            points: &main.curve,
        }];
        for b in &bases {
            lines.push(plot::Line {
                label: format!(
                    "no-op Check server, {} ({:.0} rps)",
                    b.server, b.offered_rps
                ),
                points: &b.curve,
            });
        }
        if let Some(h) = &handler {
            lines.push(plot::Line {
                label: "handler only (direct call)".into(),
                points: &h.curve,
            });
        }
        let title = format!("Check latency, mix {}", args.mix);
        plot::write_svg(path, &title, &lines)?;
        eprintln!("plot written to {}", path.display());
    }
    if let Some(path) = &args.json {
        let rep = RunReport {
            settings: settings_json(args, &subject.store_desc),
            phases,
            saturation_rps: saturation,
            targets,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&rep)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON written to {}", path.display());
    }
    Ok(0)
}

fn summary(s: &Server, label: &str, o: &PhaseOutcome) -> Summary {
    let mut sum = Summary::from_phase(s.name, label, o);
    if !s.in_process {
        sum.server_cpu_us_per_req = None;
    }
    sum
}

/// Calls Check once with every warm request and insists on the expected
/// answer: a harness that benchmarks 401s by mistake is worse than none.
async fn verify_warm(clients: &Clients, pools: &Pools) -> anyhow::Result<()> {
    let mut c = clients.first();
    for (kind, req) in pools.warm_requests() {
        let req = req.request().context("decoding a prepared request")?;
        let resp = c
            .check(req)
            .await
            .with_context(|| format!("warming {kind}"))?
            .into_inner();
        let code = resp.status.as_ref().map_or(-1, |s| s.code);
        if code != kind.expected_code() {
            bail!(
                "warming {kind}: the server answered status {code}, expected {} ({resp:?}); \
                 does the target trust this dev key and read this store?",
                kind.expected_code()
            );
        }
    }
    Ok(())
}

/// Pools with fresh unique requests for the cold kinds of `mix`.
async fn pools_for(
    mix: &Mix,
    sources: &Sources,
    warm: &Pools,
    n: u64,
) -> anyhow::Result<Arc<Pools>> {
    let mut p = warm.without_cold();
    for kind in [Kind::JwtCold, Kind::PatCold] {
        if mix.has(kind) {
            let count = mix.count_in(kind, n) + 16;
            eprintln!("  preparing {count} unique {kind} requests");
            p.set_cold(kind, sources.cold_requests(kind, count).await?);
        }
    }
    Ok(Arc::new(p))
}

async fn measure(
    rt: &tokio::runtime::Handle,
    s: &Server,
    sources: &Sources,
    warm: &Pools,
    spec: &LoadSpec,
) -> anyhow::Result<PhaseOutcome> {
    let n = (spec.rate * spec.duration.as_secs_f64()).round() as u64;
    let pools = pools_for(&s.mix, sources, warm, n).await?;
    eprintln!("{}: {:.0} rps for {:?}", s.name, spec.rate, spec.duration);
    let o = load::run_phase(rt, &s.clients, &s.mix, pools, spec, s.check_outcome).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(o)
}

/// Doubles the rate while steps are sustained, then bisects; returns the
/// highest sustained rate.
async fn find_max(
    args: &BenchArgs,
    rt: &tokio::runtime::Handle,
    s: &Server,
    sources: &Sources,
    warm: &Pools,
) -> anyhow::Result<f64> {
    let (mut lo, mut hi): (f64, Option<f64>) = (0.0, None);
    let mut rate = args.rate;
    for _ in 0..20 {
        let spec = LoadSpec {
            rate,
            duration: args.step_duration,
            concurrency: args.concurrency,
            timeout: args.timeout,
        };
        // A step that keeps up but misses the p99 bound is run once more:
        // on a shared machine one stall of another process can do that.
        let mut ok = false;
        for attempt in 0..2 {
            let o = measure(rt, s, sources, warm, &spec).await?;
            let p99 = o.rec.all.value_at_quantile(0.99);
            let errs = o.rec.error_count();
            let keeps_up =
                errs as f64 <= 0.001 * o.scheduled as f64 && o.achieved_rps() >= 0.97 * rate;
            ok = keeps_up && p99 <= args.max_p99.as_nanos() as u64;
            eprintln!(
                "  find-max {}: offered {rate:.0} achieved {:.0} rps, p99 {:.0} µs, {errs} errors → {}",
                s.name,
                o.achieved_rps(),
                p99 as f64 / 1000.0,
                if ok { "sustained" } else { "saturated" }
            );
            if ok || !keeps_up || attempt == 1 {
                break;
            }
            eprintln!("  (kept up but p99 over --max-p99: once more)");
        }
        if ok {
            lo = rate;
        } else {
            hi = Some(rate);
        }
        rate = match hi {
            None => rate * 2.0,
            Some(h) => (lo + h) / 2.0,
        };
        if let Some(h) = hi
            && (h - lo) <= args.search_precision * h
        {
            break;
        }
    }
    if lo == 0.0 {
        bail!(
            "{}: not even {rate:.0} rps was sustained; lower --rate",
            s.name
        );
    }
    Ok(lo)
}

fn targets(
    args: &BenchArgs,
    handler: Option<&Summary>,
    main: &Summary,
    sat: &BTreeMap<String, f64>,
) -> Vec<TargetResult> {
    let warm_only = args.mix.0.iter().all(|(k, _)| *k == Kind::JwtWarm);
    let rps = match (sat.get("portcullis"), sat.get("noop")) {
        (Some(a), Some(b)) if warm_only => TargetResult::check(
            "Check rps with warm JWTs ≥ 0.90 × no-op (one header)",
            Some(a / b),
            "×",
            |r| r >= 0.90,
        ),
        _ => TargetResult::unmeasured(
            "Check rps with warm JWTs ≥ 0.90 × no-op (one header)",
            "needs --mix jwt-warm=100 --find-max --baseline noop",
        ),
    };
    let handler_t = match handler {
        Some(h) => TargetResult::check(
            "Handler p99 ≤ 50 µs warm",
            Some(h.all().p99_us),
            " µs",
            |v| v <= 50.0,
        ),
        None => TargetResult::unmeasured(
            "Handler p99 ≤ 50 µs warm",
            "needs the in-process server and --handler-calls > 0",
        ),
    };
    let grpc = if args.find_max {
        TargetResult::check(
            "gRPC p99 < 1 ms at 50 % of saturation",
            Some(main.all().p99_us),
            " µs",
            |v| v < 1000.0,
        )
    } else {
        TargetResult::unmeasured("gRPC p99 < 1 ms at 50 % of saturation", "needs --find-max")
    };
    let pat = match main.kind(Kind::PatCold.as_str()) {
        Some(s) => TargetResult::check("Uncached PAT p99 < 2 ms", Some(s.p99_us), " µs", |v| {
            v < 2000.0
        }),
        None => TargetResult::unmeasured("Uncached PAT p99 < 2 ms", "needs pat-cold in --mix"),
    };
    let envoy = TargetResult::unmeasured(
        "Envoy + portcullis ≥ 0.9 × Envoy + no-op rps, added p50 ≤ 50 µs",
        "scripts/bench-envoy",
    );
    vec![rps, handler_t, grpc, pat, envoy]
}

fn settings_json(a: &BenchArgs, store: &str) -> serde_json::Value {
    serde_json::json!({
        "rate": a.rate,
        "duration_s": a.duration.as_secs_f64(),
        "warmup_s": a.warmup.as_secs_f64(),
        "connections": a.connections,
        "concurrency": a.concurrency,
        "mix": a.mix.to_string(),
        "timeout_s": a.timeout.as_secs_f64(),
        "tokens": a.tokens,
        "target": a.target,
        "store": store,
        "baseline": a.baseline.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "find_max": a.find_max,
        "find_max_rounds": a.find_max_rounds,
        "search_precision": a.search_precision,
        "step_duration_s": a.step_duration.as_secs_f64(),
        "max_p99_ms": a.max_p99.as_secs_f64() * 1000.0,
        "handler_calls": a.handler_calls,
        "server_threads": a.server_threads,
        "client_threads": a.client_threads,
        "nproc": std::thread::available_parallelism().map_or(0, |p| p.get()),
    })
}
