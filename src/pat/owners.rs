//! PATs follow their owner: `pat.owner_sync` (the config) and the
//! in-memory owner states Check reads.
//!
//! The sync itself (Keycloak's admin REST API, the top-level `owners` module)
//! writes each owner's state to the store (`pat_owners`) and hints the bus.
//! Every replica holds the states in [`OwnerStates`], loaded and refreshed
//! by the resync loop (and at once on a bus hint, which only names an owner:
//! the state is always read from the store, so a forged message cannot
//! re-enable anyone). Check looks an owner up without I/O: a disabled owner's
//! PATs are refused, and a PAT's scopes are cut to its owner's current ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::config_error::Problems;
use crate::store::{OwnerRecord, OwnerState};

/// `pat.owner_sync`: read PAT owners from Keycloak with a service account
/// (realm-management `view-users`). `Debug` redacts `client_secret`.
#[derive(Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerSyncConfig {
    /// The issuer whose users' PATs follow them (an `issuers[].issuer`,
    /// `{base}/realms/{realm}`).
    pub issuer: String,
    /// How often owners are read. Default `60s`.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The service-account client.
    pub client_id: String,
    /// Its secret; prefer `PORTCULLIS__PAT__OWNER_SYNC__CLIENT_SECRET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Past this without a successful sync, every pass logs an error.
    /// Default `10m`.
    #[serde(default = "default_max_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Keycloak's base URL for the token endpoint and the admin API, when it
    /// differs from the issuer's (e.g. an internal name). Default: `issuer`
    /// up to `/realms/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak_url: Option<String>,
    /// How long the replica that syncs holds the store lease
    /// (`sync_leases`, `owner_sync:<issuer>`): one replica syncs at a time,
    /// renewing every pass; the others wait and learn the results through
    /// the resync loop. A replica that dies is replaced once its lease runs
    /// out. Must exceed `interval`, at most 7d. Default: 3 × `interval`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<Duration>,
}

/// The longest `pat.owner_sync.lease`. Past it a dead holder stops sync
/// for longer than anyone would wait, and a far larger one would overflow
/// the lease's end timestamp (which used to shorten the lease to nothing).
const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_max_staleness() -> Duration {
    Duration::from_secs(600)
}

impl std::fmt::Debug for OwnerSyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerSyncConfig")
            .field("issuer", &self.issuer)
            .field("interval", &self.interval)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("max_staleness", &self.max_staleness)
            .field("keycloak_url", &self.keycloak_url)
            .field("lease", &self.lease)
            .finish()
    }
}

impl OwnerSyncConfig {
    /// `(base URL, realm)` from `keycloak_url` / `issuer`.
    pub fn keycloak(&self) -> Option<(String, String)> {
        let (base, realm) = self.issuer.split_once("/realms/")?;
        let realm = realm.trim_end_matches('/');
        if realm.is_empty() || realm.contains('/') {
            return None;
        }
        let base = self.keycloak_url.as_deref().unwrap_or(base);
        Some((base.trim_end_matches('/').to_owned(), realm.to_owned()))
    }

    /// `lease`, or its default (3 × `interval`).
    pub fn lease(&self) -> Duration {
        self.lease.unwrap_or(self.interval.saturating_mul(3))
    }

    /// The store lease's name: one sync per issuer at a time.
    pub fn lease_name(&self) -> String {
        format!("owner_sync:{}", self.issuer)
    }

    /// Range and shape checks of `pat.owner_sync.*`.
    pub fn validate(&self, p: &mut Problems) {
        p.check(
            self.keycloak().is_some() && self.issuer.starts_with("http"),
            "pat.owner_sync.issuer",
            || {
                format!(
                    "{:?} is not a Keycloak issuer URL; accepted: https://<host>/realms/<realm>",
                    self.issuer
                )
            },
        );
        p.check(
            self.interval >= Duration::from_secs(1),
            "pat.owner_sync.interval",
            || "must be at least 1s".into(),
        );
        p.check(
            !self.client_id.is_empty(),
            "pat.owner_sync.client_id",
            || "required: the service-account client (with realm-management view-users)".into(),
        );
        p.check(
            self.client_secret.as_deref().is_some_and(|s| !s.is_empty()),
            "pat.owner_sync.client_secret",
            || "required; set PORTCULLIS__PAT__OWNER_SYNC__CLIENT_SECRET".into(),
        );
        p.check(
            self.max_staleness >= self.interval,
            "pat.owner_sync.max_staleness",
            || "must be at least pat.owner_sync.interval".into(),
        );
        p.check(self.lease() > self.interval, "pat.owner_sync.lease", || {
            "must be longer than pat.owner_sync.interval (the holder renews it every pass); \
                 default 3 x interval"
                .into()
        });
        p.check(self.lease() <= MAX_LEASE, "pat.owner_sync.lease", || {
            format!(
                "{} is over the maximum of 7d (a replica that dies holding the lease stops \
                 owner sync that long); accepted: longer than interval, at most 7d{}",
                humantime::format_duration(self.lease()),
                if self.lease.is_none() {
                    " (the default is 3 x interval: set lease, or a shorter interval)"
                } else {
                    ""
                }
            )
        });
        if let Some(u) = &self.keycloak_url {
            p.check(
                u.starts_with("http://") || u.starts_with("https://"),
                "pat.owner_sync.keycloak_url",
                || format!("{u:?} is not an http(s) URL"),
            );
        }
    }
}

/// What Check needs to know of one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub state: OwnerState,
    /// Current scopes; `None`: not restricted.
    pub scopes: Option<Vec<String>>,
}

/// Owner states of the synced issuer, by (issuer, `sub`).
#[derive(Debug, Default)]
pub struct OwnerStates {
    by_issuer: RwLock<HashMap<String, HashMap<String, Arc<Owner>>>>,
    /// Owners held, so the common case (no owner sync) takes no lock.
    len: AtomicUsize,
}

impl OwnerStates {
    /// The state of (`issuer`, `sub`), if synced.
    pub fn get(&self, issuer: &str, sub: &str) -> Option<Arc<Owner>> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let map = self.by_issuer.read().unwrap_or_else(|p| p.into_inner());
        map.get(issuer)?.get(sub).cloned()
    }

    /// Applies store rows (newer rows replace older ones).
    pub fn apply(&self, rows: &[OwnerRecord]) {
        if rows.is_empty() {
            return;
        }
        let mut map = self.by_issuer.write().unwrap_or_else(|p| p.into_inner());
        for r in rows {
            let owner = Arc::new(Owner {
                state: r.state,
                scopes: r.scopes.clone(),
            });
            map.entry(r.issuer.clone())
                .or_default()
                .insert(r.user_id.clone(), owner);
        }
        let n = map.values().map(HashMap::len).sum();
        self.len.store(n, Ordering::Release);
    }

    /// Number of owners held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// No owner held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(user: &str, state: OwnerState) -> OwnerRecord {
        OwnerRecord {
            issuer: "https://kc/realms/a".into(),
            user_id: user.into(),
            state,
            scopes: Some(vec!["x:y".into()]),
            synced_at: Utc::now(),
            changed_at: Utc::now(),
        }
    }

    #[test]
    fn later_rows_replace_earlier_ones() {
        let s = OwnerStates::default();
        assert!(s.get("https://kc/realms/a", "u").is_none());
        s.apply(&[
            row("u", OwnerState::Disabled),
            row("v", OwnerState::Enabled),
        ]);
        assert_eq!(
            s.get("https://kc/realms/a", "u").unwrap().state,
            OwnerState::Disabled
        );
        s.apply(&[row("u", OwnerState::Enabled)]);
        assert_eq!(
            s.get("https://kc/realms/a", "u").unwrap().state,
            OwnerState::Enabled
        );
        assert_eq!(s.len(), 2);
        assert!(s.get("https://other", "u").is_none());
    }

    #[test]
    fn keycloak_base_and_realm_come_from_the_issuer() {
        let mut c = OwnerSyncConfig {
            issuer: "https://kc.example.org/realms/main".into(),
            interval: default_interval(),
            client_id: "sync".into(),
            client_secret: Some("s".into()),
            max_staleness: default_max_staleness(),
            keycloak_url: None,
            lease: None,
        };
        assert_eq!(c.lease(), default_interval() * 3);
        assert_eq!(
            c.keycloak(),
            Some(("https://kc.example.org".into(), "main".into()))
        );
        c.keycloak_url = Some("http://keycloak:8080/".into());
        assert_eq!(
            c.keycloak(),
            Some(("http://keycloak:8080".into(), "main".into()))
        );
        let mut p = Problems::default();
        c.issuer = "https://kc.example.org/x".into();
        c.client_secret = None;
        c.lease = Some(c.interval);
        c.validate(&mut p);
        let keys: Vec<String> = p.into_vec().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "pat.owner_sync.issuer",
                "pat.owner_sync.client_secret",
                "pat.owner_sync.lease"
            ]
        );
    }

    fn valid() -> OwnerSyncConfig {
        OwnerSyncConfig {
            issuer: "https://kc.example.org/realms/main".into(),
            interval: default_interval(),
            client_id: "sync".into(),
            client_secret: Some("s".into()),
            max_staleness: default_max_staleness(),
            keycloak_url: None,
            lease: None,
        }
    }

    fn lease_problems(c: &OwnerSyncConfig) -> Vec<String> {
        let mut p = Problems::default();
        c.validate(&mut p);
        p.into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect()
    }

    /// A lease too long to hold as a timestamp used to become a lease of
    /// no length; any lease over 7d is now a config error naming the key.
    #[test]
    fn a_lease_over_seven_days_is_refused() {
        let mut c = valid();
        c.lease = Some(MAX_LEASE);
        assert_eq!(lease_problems(&c), Vec::<String>::new());
        for lease in ["7d 1s", "100000years"] {
            c.lease = Some(humantime::parse_duration(lease).unwrap());
            let p = lease_problems(&c);
            assert_eq!(p.len(), 1, "{lease}: {p:?}");
            assert!(
                p[0].starts_with("pat.owner_sync.lease: ") && p[0].contains("at most 7d"),
                "{p:?}"
            );
        }
        // The default (3 x interval) is held to the same bound, and says so.
        c.lease = None;
        c.interval = Duration::from_secs(3 * 24 * 3600);
        c.max_staleness = c.interval;
        let p = lease_problems(&c);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("the default is 3 x interval"), "{p:?}");
    }
}
