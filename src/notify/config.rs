//! `notify:` configuration: the webhooks, how they are delivered, and the
//! expiry notices.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, Problems};
use crate::store::{EventKind, HookFilter};

/// Shortest accepted webhook secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// `notify:`. Webhooks are off while `webhooks` is empty; the expiry
/// notices are written (to the audit trail) either way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Receivers of token events (HTTP POST of JSON, signed).
    pub webhooks: Vec<WebhookConfig>,
    /// Retries, leases and timeouts of the deliveries.
    pub delivery: DeliveryConfig,
    /// Before expiry, one `token.expiring` per threshold and token
    /// (default `[7d, 1d]`; a token whose whole lifetime is shorter than a
    /// threshold gets no notice for it).
    #[serde(with = "humantime_list")]
    pub expiring: Vec<Duration>,
    /// How often tokens are checked for due expiry notices. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub expiry_scan_interval: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhooks: Vec::new(),
            delivery: DeliveryConfig::default(),
            expiring: vec![Duration::from_secs(7 * 86_400), Duration::from_secs(86_400)],
            expiry_scan_interval: Duration::from_secs(60),
        }
    }
}

/// One webhook receiver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http` or `https`; redirects are not followed).
    pub url: String,
    /// The NAME of the environment variable holding the HMAC key (at
    /// least 16 bytes), never the key itself.
    pub secret: String,
    /// Event names (`token.created`, …), `prefix.*` (`token.*`) or `*`.
    /// Default: every event.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// The key deliveries are recorded under (shown by the admin API and
    /// in metrics). Default: `url-` and 12 hex digits of SHA-256(url), so
    /// a URL with a secret in it is never shown. Changing it (or the URL
    /// without a name) orphans pending deliveries, which are dead-lettered
    /// after `delivery.max_age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key itself, read from the environment variable `secret` names
    /// when the configuration is loaded ([`NotifyConfig::read_secrets`]);
    /// never in a file, never shown.
    #[serde(skip)]
    pub secret_value: Option<SecretValue>,
}

/// A webhook's HMAC key; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

impl WebhookConfig {
    /// The stable key of this webhook.
    pub fn key(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => {
                use sha2::Digest;
                let h = sha2::Sha256::digest(self.url.as_bytes());
                format!("url-{}", &hex::encode(h)[..12])
            }
        }
    }

    /// What the fan-out needs.
    pub fn filter(&self) -> HookFilter {
        HookFilter {
            key: self.key(),
            events: self.events.clone(),
        }
    }
}

/// `notify.delivery`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// An event not delivered this long after it happened is dead-lettered
    /// (kept, visible, no longer retried). Default `24h`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// First retry delay; doubled per attempt, with jitter. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest retry delay. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// One HTTP attempt, connection included. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a claimed delivery stays leased to this replica; must
    /// exceed `timeout`, so a slow attempt is never re-sent by another
    /// replica while it is still running. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the store is polled for events written by other replicas
    /// and for retries that became due. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Deliveries attempted at once by this replica. Default `8`.
    pub concurrency: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_age: Duration::from_secs(24 * 3600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            concurrency: 8,
        }
    }
}

/// `Vec<Duration>` as a list of humantime strings.
mod humantime_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn event_pattern_ok(e: &str) -> bool {
    if e == "*" {
        return true;
    }
    if let Some(prefix) = e.strip_suffix(".*") {
        return EventKind::ALL
            .iter()
            .any(|k| k.as_str().split('.').next() == Some(prefix));
    }
    EventKind::parse(e).is_some()
}

impl NotifyConfig {
    /// Checks the values; each problem names its key.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        let mut keys: Vec<String> = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("notify.webhooks[{i}]");
            validate_url(&mut p, &format!("{at}.url"), &w.url);
            p.check(is_env_name(&w.secret), &format!("{at}.secret"), || {
                "must be the NAME of an environment variable holding the key (letters, digits, \
                 `_`), e.g. PORTCULLIS_WEBHOOK_SECRET; never the key itself"
                    .into()
            });
            p.check(!w.events.is_empty(), &format!("{at}.events"), || {
                "must not be empty; accepted: event names, `prefix.*` or `*`".into()
            });
            for (j, e) in w.events.iter().enumerate() {
                p.check(event_pattern_ok(e), &format!("{at}.events[{j}]"), || {
                    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    format!(
                        "unknown event {e:?}; accepted: *, token.*, owner.*, jwt.*, {}",
                        names.join(", ")
                    )
                });
            }
            if let Some(n) = &w.name {
                p.check(
                    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()),
                    &format!("{at}.name"),
                    || "must be 1-64 visible ASCII characters".into(),
                );
            }
            let key = w.key();
            p.check(!keys.contains(&key), &format!("{at}.name"), || {
                format!("{key:?} is used by an earlier webhook; give each a distinct name")
            });
            keys.push(key);
        }
        self.validate_delivery(&mut p);
        for (i, d) in self.expiring.iter().enumerate() {
            p.check(
                *d >= Duration::from_secs(60) && *d <= Duration::from_secs(365 * 86_400),
                &format!("notify.expiring[{i}]"),
                || "must be between 1m and 365d".into(),
            );
        }
        p.check(
            self.expiry_scan_interval >= Duration::from_millis(100)
                && self.expiry_scan_interval <= Duration::from_secs(86_400),
            "notify.expiry_scan_interval",
            || "must be between 100ms and 24h".into(),
        );
        p.into_vec()
    }

    fn validate_delivery(&self, p: &mut Problems) {
        let d = &self.delivery;
        p.check(
            d.max_age >= Duration::from_secs(60),
            "notify.delivery.max_age",
            || "must be at least 1m".into(),
        );
        p.check(
            !d.initial_backoff.is_zero() && d.initial_backoff <= d.max_backoff,
            "notify.delivery.initial_backoff",
            || "must be > 0 and <= notify.delivery.max_backoff".into(),
        );
        p.check(
            d.timeout >= Duration::from_millis(100) && d.timeout <= Duration::from_secs(300),
            "notify.delivery.timeout",
            || "must be between 100ms and 5m".into(),
        );
        // Twice the timeout: an attempt runs at most `timeout` (connect and
        // response both bounded by it) and its outcome is recorded right
        // after; the margin absorbs a slow store write and clock skew
        // between replicas before another replica may take the lease over.
        p.check(
            d.lease >= d.timeout.saturating_mul(2),
            "notify.delivery.lease",
            || {
                format!(
                    "must be at least twice notify.delivery.timeout ({}), or a slow attempt \
                     could be sent again by another replica while it runs",
                    humantime::format_duration(d.timeout)
                )
            },
        );
        p.check(
            d.poll_interval >= Duration::from_millis(10)
                && d.poll_interval <= Duration::from_secs(60),
            "notify.delivery.poll_interval",
            || "must be between 10ms and 60s".into(),
        );
        p.check(
            (1..=256).contains(&d.concurrency),
            "notify.delivery.concurrency",
            || "must be between 1 and 256".into(),
        );
    }

    /// Reads each webhook's key from the environment variable its
    /// `secret` names (`lookup`: the loader's environment).
    pub fn read_secrets(&mut self, lookup: &dyn Fn(&str) -> Option<String>) {
        for w in &mut self.webhooks {
            w.secret_value = lookup(&w.secret).map(|v| SecretValue(v.into_bytes()));
        }
    }

    /// Valid settings that are probably mistakes.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            if let Ok(u) = url::Url::parse(&w.url)
                && u.scheme() == "http"
                && !matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
            {
                out.push(ConfigError::new(
                    format!("notify.webhooks[{i}].url"),
                    "plain http: events (token names, owners, client addresses) travel \
                     unencrypted; the signature only proves they came from portcullis",
                ));
            }
        }
        out
    }
}

fn validate_url(p: &mut Problems, key: &str, raw: &str) {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        // Never echo the URL: it may carry a secret (chat webhooks do).
        _ => p.push(
            key,
            "must be an absolute http:// or https:// URL with a host",
        ),
    }
}

/// Each webhook's key, as read when the configuration was loaded, naming
/// the key of any that is missing or short. `serve` refuses to start and
/// `config check` fails on these.
pub fn resolve_secrets(cfg: &NotifyConfig) -> Result<Vec<Vec<u8>>, Vec<ConfigError>> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (i, w) in cfg.webhooks.iter().enumerate() {
        match &w.secret_value {
            Some(v) if v.0.len() >= MIN_SECRET_BYTES => out.push(v.0.clone()),
            Some(v) => errs.push(ConfigError::new(
                format!("notify.webhooks[{i}].secret"),
                format!(
                    "environment variable {} holds {} bytes; at least {MIN_SECRET_BYTES} required",
                    w.secret,
                    v.0.len()
                ),
            )),
            None => errs.push(ConfigError::new(
                format!("notify.webhooks[{i}].secret"),
                format!(
                    "environment variable {} is not set; it must hold the webhook's HMAC key \
                     (at least {MIN_SECRET_BYTES} bytes)",
                    w.secret
                ),
            )),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, secret: &str, events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            name: None,
            secret_value: None,
        }
    }

    #[test]
    fn each_problem_names_its_key() {
        let mut c = NotifyConfig::default();
        assert!(c.validate().is_empty());
        c.webhooks = vec![
            hook("ftp://x", "not a name!", &["token.nope"]),
            hook("https://a.example/h", "OK_NAME", &["token.*", "*"]),
            hook("https://a.example/h", "OK_NAME", &["owner.suspended"]),
        ];
        c.delivery.lease = c.delivery.timeout * 2 - Duration::from_millis(1);
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "notify.webhooks[0].url",
                "notify.webhooks[0].secret",
                "notify.webhooks[0].events[0]",
                "notify.webhooks[2].name",
                "notify.delivery.lease",
            ]
        );
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let mut c = NotifyConfig {
            webhooks: vec![
                hook("https://a.example/h", "S1", &["*"]),
                hook("https://b.example", "S2", &["*"]),
            ],
            ..NotifyConfig::default()
        };
        let env = |k: &str| match k {
            "S1" => Some("0123456789abcdef".to_owned()),
            "S2" => Some("short".to_owned()),
            _ => None,
        };
        c.read_secrets(&env);
        let errs = resolve_secrets(&c).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key, "notify.webhooks[1].secret");
        assert!(!errs[0].message.contains("short"), "{errs:?}");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        c.webhooks.pop();
        assert_eq!(resolve_secrets(&c), Ok(vec![b"0123456789abcdef".to_vec()]));
    }

    #[test]
    fn a_url_key_never_shows_the_url() {
        let w = hook("https://hooks.slack.example/services/SECRET", "S", &["*"]);
        assert!(w.key().starts_with("url-") && !w.key().contains("SECRET"));
    }
}
