//! `store:` configuration (split from `store/mod.rs` to keep it short).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config_error::{ConfigError, Problems};

/// Which database backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A local SQLite file (single replica).
    #[default]
    Sqlite,
    /// A shared Postgres database (several replicas).
    Postgres,
}

/// `store:` configuration. `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Backend: `sqlite` or `postgres`.
    pub kind: StoreKind,
    /// SQLite file; defaults to `<data_dir>/portcullis.db`.
    pub path: Option<PathBuf>,
    /// Postgres URL, e.g. `postgres://postgres@127.0.0.1:5432/portcullis`.
    pub url: Option<String>,
    /// Maximum number of pooled Postgres connections.
    pub pool_size: usize,
    /// Upper bound for every store call; a timeout is an error, never an allow.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("url", &url)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`. Also
/// for Redis (`redis://:secret@host`). Query values are hidden too, since
/// `?password=` is accepted by libpq-style URLs: `?sslmode=***&password=***`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &base[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &base[..s + 3], &creds[..c], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(pair.split_once('=').map_or(pair, |(k, _)| k));
            out.push_str("=***");
        }
    }
    out
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            path: None,
            url: None,
            pool_size: 16,
            timeout: Duration::from_millis(100),
        }
    }
}

impl StoreConfig {
    /// Checks the values; each problem names its key.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        p.check(self.pool_size > 0, "store.pool_size", || {
            "must be >= 1".into()
        });
        p.check(!self.timeout.is_zero(), "store.timeout", || {
            "must be > 0".into()
        });
        if self.kind == StoreKind::Postgres {
            match self.url.as_deref().filter(|u| !u.trim().is_empty()) {
                None => p.push("store.url", "required when store.kind is postgres"),
                // Never echo the URL: it may carry a password.
                Some(url) => p.check(
                    url.parse::<tokio_postgres::Config>().is_ok(),
                    "store.url",
                    || "not a valid postgres connection URL".into(),
                ),
            }
        }
        p.into_vec()
    }

    /// The SQLite file used for this config and data directory.
    pub fn sqlite_path(&self, data_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| data_dir.join("portcullis.db"))
    }
}
