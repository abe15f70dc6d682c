//! Layered loading: defaults, then the YAML file, then environment variables.
//!
//! The environment is read through [`EnvSource`] so tests hand in a map
//! instead of mutating the process environment.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Yaml};
use figment::value::Value;

use super::{Config, ConfigError};

/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "PORTCULLIS__";

/// Where environment overrides come from.
pub trait EnvSource {
    /// All `(name, value)` pairs; non-`PORTCULLIS__` names are ignored.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// A fixed map, for tests.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl EnvSource for MapEnv {
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

// === impl Config ===

impl Config {
    /// Loads defaults ← `yaml` file (if any) ← environment. Does not validate.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            reject_duplicate_keys(&text, &path.display().to_string())?;
            fig = fig.merge(Yaml::file_exact(path));
        }
        Self::extract(overlay_env(fig, env)).map(|c| c.with_env_secrets(env))
    }

    /// Like [`Config::load`] but from YAML text (tests, `config check -`).
    pub fn from_yaml_str(yaml: &str, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        reject_duplicate_keys(yaml, "<config>")?;
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Yaml::string(yaml));
        Self::extract(overlay_env(fig, env)).map(|c| c.with_env_secrets(env))
    }

    /// Secrets the config names by environment variable (webhook keys),
    /// read from the same environment as the overrides.
    fn with_env_secrets(mut self, env: &dyn EnvSource) -> Config {
        let vars = env.vars();
        self.notify
            .read_secrets(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        self
    }

    fn extract(fig: Figment) -> Result<Config, ConfigError> {
        fig.extract::<Config>().map_err(|e| {
            // figment errors know the key path; keep the first one precise.
            let first = e.into_iter().next();
            match first {
                Some(err) => {
                    let key = if err.path.is_empty() {
                        "<root>".to_owned()
                    } else {
                        err.path.join(".")
                    };
                    ConfigError::new(key, err.kind.to_string())
                }
                None => ConfigError::new("<root>", "invalid configuration"),
            }
        })
    }
}

/// Refuses a YAML text that repeats a key within one mapping.
///
/// figment (like most YAML loaders) keeps the last of repeated keys, so a
/// second `policy:` or a route's repeated `public:` would silently replace
/// the first: in an authorization config that is a policy bypass waiting
/// for a careless merge. `serde_norway`'s `Mapping` refuses duplicates and
/// names the key. Other syntax errors are left to figment, whose
/// messages carry the key path.
fn reject_duplicate_keys(yaml: &str, source: &str) -> Result<(), ConfigError> {
    match serde_norway::from_str::<serde_norway::Value>(yaml) {
        Err(e) if e.to_string().contains("duplicate entry with key") => Err(ConfigError::new(
            "--config",
            format!("{source}: {e}; each key may appear only once in a mapping"),
        )),
        _ => Ok(()),
    }
}

/// Deepest `[`/`{` nesting parsed in an environment value; no config key
/// needs more than a few levels.
const MAX_ENV_NESTING: usize = 16;

/// Bracket nesting depth of `raw` (quotes not considered: an over-estimate).
fn nesting(raw: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in raw.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn overlay_env(mut fig: Figment, env: &dyn EnvSource) -> Figment {
    let mut vars = env.vars();
    vars.sort();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        if key.is_empty() {
            continue;
        }
        // Secrets and URLs must stay strings even when they look like numbers.
        // figment 0.10's value parser slices by char index when unescaping a
        // quoted string, so a `\` after a non-ASCII character panics or
        // drops characters; and it recurses once per `[`/`{`, so deep
        // nesting overflows the stack. Take such values literally.
        let value: Value = if key.ends_with("secret")
            || key.ends_with("url")
            || (!raw.is_ascii() && raw.contains('\\'))
            || nesting(&raw) > MAX_ENV_NESTING
        {
            Value::from(raw)
        } else {
            let Ok(v) = raw.parse::<Value>();
            v
        };
        fig = fig.merge(Serialized::global(&key, value));
    }
    fig
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn repeated_keys_are_refused_not_last_wins() {
        // Before: the second `default` silently won and the file was valid.
        for yaml in [
            "policy:\n  default: deny\npolicy:\n  default: authenticated\n",
            "policy:\n  default: deny\n  default: authenticated\n",
            "policy:\n  routes:\n    - name: a\n      auth: required\n      auth: none\n",
        ] {
            let err = Config::from_yaml_str(yaml, &env(&[])).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("duplicate entry with key"), "{yaml}: {msg}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dup.yaml");
        std::fs::write(&path, "log:\n  level: info\n  level: debug\n").unwrap();
        let err = Config::load(Some(&path), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("dup.yaml"), "{err}");
        // The same key in different mappings is fine.
        Config::from_yaml_str("jwt:\n  cache_capacity: 5\ndpop:\n  {}\n", &env(&[])).unwrap();
    }

    #[test]
    fn defaults_without_file() {
        let cfg = Config::load(None, &env(&[])).unwrap();
        assert_eq!(cfg.listen.grpc.to_string(), "127.0.0.1:9191");
        assert_eq!(cfg.listen.http.to_string(), "127.0.0.1:9192");
        assert_eq!(cfg.jwt.max_token_bytes, 8192);
    }

    #[test]
    fn env_overrides_yaml() {
        let yaml = "listen:\n  grpc: 127.0.0.1:7000\njwt:\n  cache_capacity: 5\n";
        let cfg = Config::from_yaml_str(
            yaml,
            &env(&[
                ("PORTCULLIS__LISTEN__GRPC", "127.0.0.1:7001"),
                ("OTHER__LISTEN__GRPC", "127.0.0.1:9"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.listen.grpc.to_string(), "127.0.0.1:7001");
        assert_eq!(cfg.jwt.cache_capacity, 5);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml_str("jwt:\n  cache_capacty: 5\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("cache_capacty"), "{err}");
    }

    #[test]
    fn issuer_durations_and_defaults() {
        let yaml = r#"
issuers:
  - issuer: https://kc.example.org/realms/main
    audiences: [api]
    refresh_interval: 10m
    unknown_kid_wait: 50ms
"#;
        let cfg = Config::from_yaml_str(yaml, &env(&[])).unwrap();
        let iss = &cfg.issuers[0];
        assert_eq!(iss.refresh_interval.as_secs(), 600);
        assert_eq!(iss.unknown_kid_wait.as_millis(), 50);
        assert_eq!(iss.leeway_seconds, 30);
        assert_eq!(iss.algorithms, vec![jsonwebtoken::Algorithm::RS256]);
        assert_eq!(iss.token_types, vec!["Bearer".to_string()]);
        cfg.validate().unwrap();
    }

    #[test]
    fn bad_duration_names_key() {
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    refresh_interval: soon\n";
        let err = Config::from_yaml_str(yaml, &env(&[])).unwrap_err();
        assert!(err.key.contains("refresh_interval"), "{err}");
    }

    #[test]
    fn validate_rejects_symmetric_algorithms_and_missing_audience() {
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    algorithms: [RS256, HS256]\n";
        let cfg = Config::from_yaml_str(yaml, &env(&[])).unwrap();
        let errs = cfg.validate().unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("issuers[0].algorithms[1]: HS256"))
        );
        assert!(text.iter().any(|t| t.starts_with("issuers[0].audiences")));
    }

    #[test]
    fn unknown_algorithm_lists_accepted() {
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    algorithms: [none]\n";
        let err = Config::from_yaml_str(yaml, &env(&[])).unwrap_err();
        assert!(err.key.contains("algorithms"), "{err}");
        assert!(err.message.contains("RS256"), "{err}");
    }

    #[test]
    fn bad_scope_source_is_named() {
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    scopes:\n      from: [roles]\n";
        let cfg = Config::from_yaml_str(yaml, &env(&[])).unwrap();
        let errs = cfg.validate().unwrap_err();
        assert!(errs[0].to_string().starts_with("issuers[0].scopes.from[0]"));
        assert!(errs[0].message.contains("realm_roles"));
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn debug_of_config_hides_secrets() {
        let env = MapEnv(
            [
                ("PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET", "topsecret1"),
                ("PORTCULLIS__PAT__LOCAL_JWT_KEY", "topsecret2"),
                (
                    "PORTCULLIS__STORE__URL",
                    "postgres://app:topsecret3@db/portcullis",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let cfg = Config::load(None, &env).unwrap();
        assert_eq!(
            cfg.pat.exchange.client_secret.as_deref(),
            Some("topsecret1")
        );
        let text = format!("{cfg:?}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("postgres://app:***@db/portcullis"), "{text}");
    }

    /// Item 13: every config field that can hold a secret, set at once; the
    /// whole `Config`'s `{:?}` shows none of them (and still shows where
    /// each URL points, for debugging).
    #[test]
    fn item13_debug_of_whole_config_hides_every_secret() {
        let env = MapEnv(
            [
                ("PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET", "sekrit-a"),
                ("PORTCULLIS__PAT__LOCAL_JWT_KEY", "sekrit-b"),
                (
                    "PORTCULLIS__STORE__URL",
                    "postgres://app:sekrit-c@db:5432/portcullis?sslmode=require&password=sekrit-d",
                ),
                ("PORTCULLIS__REVOCATION__KIND", "redis"),
                (
                    "PORTCULLIS__REVOCATION__REDIS_URL",
                    "redis://default:sekrit-e@cache.internal:6379/0",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let cfg = Config::load(None, &env).unwrap();
        assert_eq!(
            cfg.revocation.redis_url.as_deref(),
            Some("redis://default:sekrit-e@cache.internal:6379/0")
        );
        let text = format!("{cfg:?} {cfg:#?}");
        assert!(!text.contains("sekrit"), "{text}");
        assert!(
            text.contains("redis://default:***@cache.internal:6379/0"),
            "{text}"
        );
        assert!(
            text.contains("postgres://app:***@db:5432/portcullis?"),
            "{text}"
        );
        // Each section on its own, as code may print one alone.
        let parts = [
            format!("{:?}", cfg.revocation),
            format!("{:?}", cfg.store),
            format!("{:?}", cfg.pat),
            format!("{:?}", cfg.pat.exchange),
        ];
        for p in parts {
            assert!(!p.contains("sekrit"), "{p}");
        }
        // A password-only Redis URL (`:password@`) is hidden too.
        let mut r = cfg.revocation.clone();
        r.redis_url = Some("rediss://:sekrit-f@cache:6380".into());
        let p = format!("{r:?}");
        assert!(
            !p.contains("sekrit") && p.contains("rediss://:***@cache:6380"),
            "{p}"
        );
    }

    #[test]
    fn backchannel_logout_defaults_and_problems_are_named() {
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    backchannel_logout: { audiences: [cli] }\n";
        let cfg = Config::from_yaml_str(yaml, &MapEnv::default()).unwrap();
        let bcl = cfg.issuers[0].backchannel_logout.as_ref().unwrap();
        assert_eq!(
            (bcl.audiences.as_slice(), bcl.include_pats),
            (&["cli".to_owned()][..], false)
        );
        assert_eq!(cfg.issuers[0].max_token_lifetime.as_secs(), 3600);
        cfg.validate().unwrap();
        assert!(cfg.warnings().is_empty());

        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    backchannel_logout: { audiences: [] }\n    max_token_lifetime: 0s\n";
        let errs = Config::from_yaml_str(yaml, &MapEnv::default())
            .unwrap()
            .validate()
            .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("issuers[0].backchannel_logout.audiences: must list")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with(
                "issuers[0].max_token_lifetime: 0s is out of range; accepted: 1s to 30d"
            )),
            "{text:?}"
        );
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    backchannel_logout: { audience: [cli] }\n";
        let err = Config::from_yaml_str(yaml, &MapEnv::default()).unwrap_err();
        assert!(err.to_string().contains("audience"), "{err}");
    }

    #[test]
    fn short_max_token_lifetime_warns() {
        let yaml = "issuers:\n  - issuer: https://x/realms/a\n    audiences: [a]\n    max_token_lifetime: 1m\n";
        let cfg = Config::from_yaml_str(yaml, &MapEnv::default()).unwrap();
        cfg.validate().unwrap();
        let w = cfg.warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, "issuers[0].max_token_lifetime");
        assert!(w[0].message.contains("access token lifespan"), "{}", w[0]);
    }

    #[test]
    fn owner_sync_needs_a_configured_issuer_and_a_secret() {
        let yaml = "issuers:\n  - issuer: https://kc/realms/a\n    audiences: [a]\npat:\n  owner_sync: { issuer: https://kc/realms/b, client_id: sync }\n";
        let cfg = Config::from_yaml_str(yaml, &MapEnv::default()).unwrap();
        let o = cfg.pat.owner_sync.as_ref().unwrap();
        assert_eq!((o.interval.as_secs(), o.max_staleness.as_secs()), (60, 600));
        let errs = cfg.validate().unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|t| t.starts_with("pat.owner_sync.issuer: \"https://kc/realms/b\" is not a configured issuer; accepted: one of issuers[].issuer (https://kc/realms/a)")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("pat.owner_sync.client_secret: required")),
            "{text:?}"
        );
        let env = MapEnv(
            [(
                "PORTCULLIS__PAT__OWNER_SYNC__CLIENT_SECRET".to_string(),
                "s3cret".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        let yaml = yaml.replace("realms/b", "realms/a");
        let cfg = Config::from_yaml_str(&yaml, &env).unwrap();
        cfg.validate().unwrap();
        assert!(
            !format!("{:?}", cfg.pat).contains("s3cret"),
            "secret redacted"
        );
    }
}
