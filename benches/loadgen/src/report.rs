//! Turning histograms into tables, JSON, ratios and met/missed targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{PhaseOutcome, Recorded};

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Stats {
    pub fn of(h: &Histogram<u64>) -> Stats {
        if h.is_empty() {
            return Stats::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Stats {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Percentile → latency points for the plot: (percentile, µs).
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut nines = 0.0f64;
    while nines <= 5.0 {
        let q = 1.0 - 10f64.powf(-nines);
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
        nines += 0.05;
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

/// One measured phase, ready to print or serialise.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What ran, e.g. `portcullis` or `noop`.
    pub server: String,
    /// `load`, `handler`, `find-max step`.
    pub phase: String,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub scheduled: u64,
    pub ok: u64,
    pub elapsed_s: f64,
    pub errors: BTreeMap<String, u64>,
    /// From the intended start; `all` first, then each kind in the mix.
    pub latency: Vec<(String, Stats)>,
    /// Intended start → actual send (generator delay).
    pub send_lag: Stats,
    /// Actual send → response.
    pub service: Stats,
    /// CPU µs per answered request of the in-process server runtime
    /// (`None` for `--target`, a `--baseline-target`, or off Linux).
    pub server_cpu_us_per_req: Option<f64>,
    /// The same for the load generator's runtime.
    pub client_cpu_us_per_req: Option<f64>,
    /// (percentile, µs) points of `all`, as plotted.
    pub curve: Vec<(f64, f64)>,
}

impl Summary {
    pub fn from_phase(server: &str, phase: &str, o: &PhaseOutcome) -> Summary {
        let mut s = Self::from_recorded(server, phase, &o.rec);
        s.offered_rps = o.spec.rate;
        s.achieved_rps = o.achieved_rps();
        s.scheduled = o.scheduled;
        s.elapsed_s = o.elapsed.as_secs_f64();
        let per = |c: Option<f64>| c.map(|c| c * 1e6 / (o.rec.ok.max(1) as f64));
        s.server_cpu_us_per_req = per(o.server_cpu_s);
        s.client_cpu_us_per_req = per(o.client_cpu_s);
        s
    }

    pub fn from_recorded(server: &str, phase: &str, r: &Recorded) -> Summary {
        let mut latency = vec![("all".to_owned(), Stats::of(&r.all))];
        for (k, h) in &r.per_kind {
            if !h.is_empty() {
                latency.push((k.to_string(), Stats::of(h)));
            }
        }
        Summary {
            server: server.to_owned(),
            phase: phase.to_owned(),
            offered_rps: 0.0,
            achieved_rps: 0.0,
            scheduled: r.ok + r.error_count(),
            ok: r.ok,
            elapsed_s: 0.0,
            errors: r.errors.clone(),
            latency,
            send_lag: Stats::of(&r.lag),
            service: Stats::of(&r.service),
            server_cpu_us_per_req: None,
            client_cpu_us_per_req: None,
            curve: curve(&r.all),
        }
    }

    pub fn all(&self) -> Stats {
        self.latency.first().map(|(_, s)| *s).unwrap_or_default()
    }

    pub fn kind(&self, name: &str) -> Option<Stats> {
        self.latency
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, s)| *s)
    }

    /// Markdown: a heading line and a percentile table.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let errs = self.errors.values().sum::<u64>();
        let _ = writeln!(out, "### {} — {}\n", self.server, self.phase);
        if self.offered_rps > 0.0 {
            let _ = writeln!(
                out,
                "offered {:.0} rps, achieved {:.0} rps ({} ok of {} scheduled, {:.2} s); errors: {}",
                self.offered_rps, self.achieved_rps, self.ok, self.scheduled, self.elapsed_s, errs
            );
        } else {
            let _ = writeln!(out, "{} calls, errors: {}", self.ok, errs);
        }
        if let (Some(sv), Some(cl)) = (self.server_cpu_us_per_req, self.client_cpu_us_per_req) {
            let _ = writeln!(
                out,
                "CPU per request: server runtime {sv:.1} µs, load generator {cl:.1} µs"
            );
        }
        for (e, n) in &self.errors {
            let _ = writeln!(out, "- {n} × {e}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| requests | count | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut rows: Vec<(String, Stats)> = self.latency.clone();
        if self.offered_rps > 0.0 {
            rows.push(("(send lag)".into(), self.send_lag));
            rows.push(("(service time)".into(), self.service));
        }
        for (k, s) in rows {
            let _ = writeln!(
                out,
                "| {k} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                s.count, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us
            );
        }
        out
    }
}

/// Ours against the baseline, same load.
pub fn ratio_table(ours: &Summary, base: &Summary) -> String {
    let (a, b) = (ours.all(), base.all());
    let r = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| metric | portcullis | {} | ratio | difference |",
        base.server
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        out,
        "| achieved rps | {:.0} | {:.0} | {:.3} | {:+.0} |",
        ours.achieved_rps,
        base.achieved_rps,
        r(ours.achieved_rps, base.achieved_rps),
        ours.achieved_rps - base.achieved_rps
    );
    if let (Some(x), Some(y)) = (ours.server_cpu_us_per_req, base.server_cpu_us_per_req) {
        let _ = writeln!(
            out,
            "| server CPU µs / request | {x:.1} | {y:.1} | {:.2} | {:+.1} |",
            r(x, y),
            x - y
        );
    }
    for (name, x, y) in [
        ("p50 µs", a.p50_us, b.p50_us),
        ("p90 µs", a.p90_us, b.p90_us),
        ("p99 µs", a.p99_us, b.p99_us),
        ("p99.9 µs", a.p999_us, b.p999_us),
        ("max µs", a.max_us, b.max_us),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {x:.1} | {y:.1} | {:.2} | {:+.1} |",
            r(x, y),
            x - y
        );
    }
    out
}

/// One target from the issue.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured in this run.
    pub met: Option<bool>,
    pub value: String,
}

impl TargetResult {
    pub fn check(target: &str, value: Option<f64>, unit: &str, ok: impl Fn(f64) -> bool) -> Self {
        TargetResult {
            target: target.to_owned(),
            met: value.map(&ok),
            value: value.map_or_else(String::new, |v| format!("{v:.3}{unit}")),
        }
    }

    pub fn unmeasured(target: &str, why: &str) -> Self {
        TargetResult {
            target: target.to_owned(),
            met: None,
            value: why.to_owned(),
        }
    }
}

pub fn targets_table(ts: &[TargetResult]) -> String {
    let mut out = String::from("| target | result | measured |\n| --- | --- | --- |\n");
    for t in ts {
        let r = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {r} | {} |", t.target, t.value);
    }
    out
}

/// The whole run, for `--json`.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub settings: serde_json::Value,
    pub phases: Vec<Summary>,
    pub saturation_rps: BTreeMap<String, f64>,
    pub targets: Vec<TargetResult>,
}
