//! Prometheus metrics (`GET /metrics` on the HTTP port), with the
//! `prometheus-client` crate. One process-wide registry: call sites across
//! modules record without plumbing, and label values are `'static` strings
//! or shared `Arc<str>`s, so recording never allocates per request.
//!
//! The Check path records without a lock or a hash: a route's decision
//! counters are resolved once per (result, method) and kept on its
//! [`Label`], and the latency histogram is atomic ([`AtomicHistogram`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A shared label value (route names, issuers), cheap to clone. A route's
/// label also holds its `decisions` counters, resolved on first use, so
/// recording a decision needs no family lookup.
#[derive(Clone)]
pub struct Label(Arc<LabelInner>);

struct LabelInner {
    name: Arc<str>,
    /// `decisions{result, method, route=name}`, by
    /// `result index * METHODS.len() + method index`.
    decisions: [OnceLock<Counter>; RESULTS.len() * METHODS.len()],
}

impl Label {
    pub fn new(name: &str) -> Label {
        Label(Arc::new(LabelInner {
            name: Arc::from(name),
            decisions: std::array::from_fn(|_| OnceLock::new()),
        }))
    }

    /// The label value.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Counts one decision on this route: `result` is one of [`RESULTS`],
    /// `method` the request's (folded by [`method_label`]).
    pub fn count_decision(&self, result: &'static str, method: &str) {
        let r = RESULTS.iter().position(|x| *x == result).unwrap_or(0);
        let m = method_index(method);
        self.0.decisions[r * METHODS.len() + m]
            .get_or_init(|| {
                global().decisions.get_or_create_owned(&DecisionLabels {
                    result: RESULTS[r],
                    method: METHODS[m],
                    route: self.clone(),
                })
            })
            .inc();
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Label").field(&self.name()).finish()
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.name(), encoder)
    }
}

/// Values of the `result` label of `decisions`.
pub const RESULTS: [&str; 4] = ["allow", "unauthenticated", "forbidden", "unavailable"];

/// Values of the `method` label: request methods folded into a fixed set.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

fn method_index(m: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|k| k.eq_ignore_ascii_case(m))
        .unwrap_or(METHODS.len() - 1)
}

/// A histogram that records with three relaxed atomic adds (the bucket,
/// the count, the sum in nanoseconds): no lock on the Check path.
/// prometheus-client's `Histogram` takes a mutex per observation. A scrape
/// reads the atomics one by one, so it may see an observation in the
/// count but not yet in its bucket; the next scrape agrees.
/// Clones share the series.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds, ascending; the last bucket (+Inf) is implicit.
    bounds: Box<[f64]>,
    /// One more than `bounds`: the last counts observations above them all.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> AtomicHistogram {
        let bounds: Box<[f64]> = bounds.collect();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram(Arc::new(HistogramCells {
            bounds,
            buckets,
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }))
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let h = &*self.0;
        let secs = d.as_secs_f64();
        let i = h
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(h.bounds.len());
        h.buckets[i].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &*self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(h.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow, unauthenticated, forbidden, unavailable.
    pub result: &'static str,
    /// Request method, folded into a fixed set.
    pub method: &'static str,
    /// Route name, `(default)` or `(none)`.
    pub route: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CacheLabels {
    /// `jwt` or `pat`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: Label,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ComponentLabels {
    /// `store` or `redis`.
    pub component: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LogoutLabels {
    /// `accepted` or `refused`.
    pub outcome: &'static str,
    /// Why refused (`signature`, `audience`, `claims`, `replayed`, …); `ok` when accepted.
    pub reason: &'static str,
}

/// Every metric portcullis exports.
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub check_seconds: AtomicHistogram,
    pub cache: Family<CacheLabels, Counter>,
    pub jwks_fetches: Family<IssuerLabels, Counter>,
    pub backend_errors: Family<ComponentLabels, Counter>,
    pub revocation_lag_seconds: Histogram,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub logout_tokens: Family<LogoutLabels, Counter>,
    pub owner_sync_runs: Family<OutcomeLabels, Counter>,
    pub owner_sync_changes: Counter,
    pub owner_sync_staleness: Gauge,
    /// Pre-resolved `cache_lookups` children: jwt hit/miss, pat hit/miss.
    cache_fast: [Counter; 4],
    /// Webhook deliveries and the token-event backlog (`notify`).
    pub webhooks: WebhookMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let decisions = reg(
            &mut registry,
            "decisions",
            "Check decisions by result, method and route",
            Family::<DecisionLabels, Counter>::default(),
        );
        // 5 µs … ~1.3 s: warm checks sit at the bottom, IdP refetches at the top.
        let check_seconds = reg(
            &mut registry,
            "check_duration_seconds",
            "Time to decide one Check",
            AtomicHistogram::new(exponential_buckets(5e-6, 2.0, 18)),
        );
        let cache = reg(
            &mut registry,
            "cache_lookups",
            "Verified-JWT and PAT cache lookups by outcome",
            Family::<CacheLabels, Counter>::default(),
        );
        let jwks_fetches = reg(
            &mut registry,
            "jwks_fetches",
            "JWKS and discovery fetches per issuer",
            Family::<IssuerLabels, Counter>::default(),
        );
        let backend_errors = reg(
            &mut registry,
            "backend_errors",
            "Store and Redis errors",
            Family::<ComponentLabels, Counter>::default(),
        );
        let revocation_lag_seconds = reg(
            &mut registry,
            "revocation_propagation_seconds",
            "Delay between a revocation and this replica applying it",
            Histogram::new(exponential_buckets(1e-4, 2.0, 18)),
        );
        let config_reloads = reg(
            &mut registry,
            "config_reloads",
            "Configuration reloads by outcome",
            Family::<OutcomeLabels, Counter>::default(),
        );
        let (logout_tokens, owner_sync_runs, owner_sync_changes, owner_sync_staleness) =
            register_logout_and_owner_sync(&mut registry);
        let child = |c: &'static str, o: &'static str| {
            cache.get_or_create_owned(&CacheLabels {
                cache: c,
                outcome: o,
            })
        };
        let webhooks = WebhookMetrics::register(&mut registry);
        let cache_fast = [
            child("jwt", "hit"),
            child("jwt", "miss"),
            child("pat", "hit"),
            child("pat", "miss"),
        ];
        Metrics {
            registry,
            decisions,
            check_seconds,
            cache,
            jwks_fetches,
            backend_errors,
            revocation_lag_seconds,
            config_reloads,
            logout_tokens,
            owner_sync_runs,
            owner_sync_changes,
            owner_sync_staleness,
            cache_fast,
            webhooks,
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Records a cache lookup; `cache` is `jwt` or `pat`.
    pub fn cache(&self, cache: &'static str, hit: bool) {
        let i = usize::from(cache == "pat") * 2 + usize::from(!hit);
        self.cache_fast[i].inc();
    }

    pub fn backend_error(&self, component: &'static str) {
        self.backend_errors
            .get_or_create(&ComponentLabels { component })
            .inc();
    }

    /// Records a back-channel logout token: accepted, or refused for `reason`.
    pub fn logout_token(&self, refused: Option<&'static str>) {
        let (outcome, reason) = match refused {
            None => ("accepted", "ok"),
            Some(r) => ("refused", r),
        };
        self.logout_tokens
            .get_or_create(&LogoutLabels { outcome, reason })
            .inc();
    }

    /// Records an owner-sync pass and the staleness after it.
    pub fn owner_sync(&self, ok: bool, stale: std::time::Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.owner_sync_runs
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        let secs = i64::try_from(stale.as_secs()).unwrap_or(i64::MAX);
        self.owner_sync_staleness.set(secs);
    }

    /// An owner-sync pass stood by: another replica holds the lease. A
    /// replica that `lost` it stops reporting its old staleness.
    pub fn owner_sync_standby(&self, lost: bool) {
        self.owner_sync_runs
            .get_or_create(&OutcomeLabels { outcome: "standby" })
            .inc();
        if lost {
            self.owner_sync_staleness.set(0);
        }
    }

    /// A webhook attempt ended (`retry`) or deliveries were given up (`dead`).
    pub fn webhook_outcome(&self, outcome: &'static str, n: u64) {
        self.webhooks
            .deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    /// A webhook delivery succeeded, `lag` after its event happened.
    pub fn webhook_delivered(&self, lag: std::time::Duration) {
        self.webhook_outcome("delivered", 1);
        self.webhooks.latency_seconds.observe(lag.as_secs_f64());
    }

    /// Pending and dead deliveries in the store.
    pub fn webhook_backlog(&self, pending: u64, dead: u64) {
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.webhooks.pending.set(g(pending));
        self.webhooks.dead.set(g(dead));
    }

    pub fn reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "rejected" },
            })
            .inc();
    }
}

/// Back-channel logout and PAT owner-sync metrics.
fn register_logout_and_owner_sync(
    registry: &mut Registry,
) -> (
    Family<LogoutLabels, Counter>,
    Family<OutcomeLabels, Counter>,
    Counter,
    Gauge,
) {
    let logout_tokens = reg(
        registry,
        "backchannel_logout_tokens",
        "Back-channel logout tokens by outcome and reason",
        Family::<LogoutLabels, Counter>::default(),
    );
    let owner_sync_runs = reg(
        registry,
        "owner_sync_runs",
        "PAT owner sync passes by outcome (ok, error; standby: another replica holds the lease)",
        Family::<OutcomeLabels, Counter>::default(),
    );
    let owner_sync_changes = reg(
        registry,
        "owner_sync_changes",
        "PAT owners whose state or scopes changed in Keycloak",
        Counter::default(),
    );
    let owner_sync_staleness = reg(
        registry,
        "owner_sync_staleness_seconds",
        "Seconds since the PAT owner sync last read every owner",
        Gauge::default(),
    );
    (
        logout_tokens,
        owner_sync_runs,
        owner_sync_changes,
        owner_sync_staleness,
    )
}

/// Webhook delivery metrics (`notify`).
#[derive(Debug)]
pub struct WebhookMetrics {
    /// Attempts and give-ups by outcome: `delivered`, `retry`, `dead`.
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// From an event to its successful delivery.
    pub latency_seconds: Histogram,
    pub pending: Gauge,
    pub dead: Gauge,
}

impl WebhookMetrics {
    fn register(registry: &mut Registry) -> WebhookMetrics {
        WebhookMetrics {
            deliveries: reg(
                registry,
                "webhook_deliveries",
                "Webhook attempts by outcome (delivered, retry, dead)",
                Family::<OutcomeLabels, Counter>::default(),
            ),
            // 1 ms … ~36 h: same-replica deliveries at the bottom, a
            // receiver down for hours at the top.
            latency_seconds: reg(
                registry,
                "webhook_delivery_latency_seconds",
                "Time from a token event to its successful webhook delivery",
                Histogram::new(exponential_buckets(1e-3, 2.0, 28)),
            ),
            pending: reg(
                registry,
                "webhook_pending_deliveries",
                "Webhook deliveries not yet delivered (all replicas)",
                Gauge::default(),
            ),
            dead: reg(
                registry,
                "webhook_dead_deliveries",
                "Webhook deliveries given up after notify.delivery.max_age (all replicas)",
                Gauge::default(),
            ),
        }
    }
}

/// Registers `metric` under `name` and returns it (a handle to the same
/// series).
fn reg<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// Folds a request method into a bounded label set ([`METHODS`]).
pub fn method_label(m: &str) -> &'static str {
    METHODS[method_index(m)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route label's counters are the `decisions` family's series: the
    /// exposition shows each (result, method, route) with its count.
    #[test]
    fn route_counters_feed_the_decisions_family() {
        let l = Label::new("metrics-test-route");
        l.count_decision("allow", "get");
        l.count_decision("allow", "GET");
        l.count_decision("forbidden", "BREW");
        let text = global().encode();
        for line in [
            r#"portcullis_decisions_total{result="allow",method="GET",route="metrics-test-route"} 2"#,
            r#"portcullis_decisions_total{result="forbidden",method="OTHER",route="metrics-test-route"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Another label with the same name counts into the same series.
        Label::new("metrics-test-route").count_decision("allow", "GET");
        assert!(global().encode().contains(
            r#"portcullis_decisions_total{result="allow",method="GET",route="metrics-test-route"} 3"#
        ));
    }

    /// The atomic histogram encodes as a Prometheus histogram: cumulative
    /// buckets, count and sum.
    #[test]
    fn atomic_histogram_encodes_cumulative_buckets_count_and_sum() {
        let mut registry = Registry::default();
        let h = AtomicHistogram::new([0.001, 0.01].into_iter());
        registry.register("t", "test", h.clone());
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        for line in [
            "# TYPE t histogram",
            r#"t_bucket{le="0.001"} 1"#,
            r#"t_bucket{le="0.01"} 3"#,
            r#"t_bucket{le="+Inf"} 4"#,
            "t_count 4",
            "t_sum 2.0105",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }
}
