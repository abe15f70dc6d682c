//! Prometheus metrics (`GET /metrics` on the HTTP port), with the
//! `prometheus-client` crate. One process-wide registry: call sites across
//! modules record without plumbing, and label values are `'static` strings
//! or shared `Arc<str>`s, so recording never allocates per request.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A shared label value (route names, issuers), cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
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
    pub check_seconds: Histogram,
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
            Histogram::new(exponential_buckets(5e-6, 2.0, 18)),
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
        "PAT owner sync passes by outcome (ok, error)",
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

/// Folds a request method into a bounded label set.
pub fn method_label(m: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(m))
        .copied()
        .unwrap_or("OTHER")
}
