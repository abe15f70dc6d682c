//! `dpop:`: how DPoP proofs are checked (`issuers[].dpop` says which
//! issuers' tokens may or must be DPoP-bound).

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, Problems};
use crate::jwt::config::ASYMMETRIC;

pub use crate::jwt::config::DpopMode;

/// `dpop`: proof checks shared by every issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpopConfig {
    /// Accepted proof `alg` values (asymmetric only). Default ES256, ES384,
    /// RS256, PS256, EdDSA. Named in `WWW-Authenticate: DPoP algs="…"`.
    pub algorithms: Vec<Algorithm>,
    /// A proof's `iat` may be at most this old. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Clock skew allowed on `iat` in either direction. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How many proof `jti`s are remembered (for `max_age + 2 × leeway`) to
    /// refuse a replay. Default 100000.
    pub replay_cache_capacity: u64,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            algorithms: vec![
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::EdDSA,
            ],
            max_age: Duration::from_secs(60),
            leeway: Duration::from_secs(5),
            replay_cache_capacity: 100_000,
        }
    }
}

impl DpopConfig {
    /// Checks the values; each problem names its key.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        p.check(!self.algorithms.is_empty(), "dpop.algorithms", || {
            "must not be empty; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA".into()
        });
        for (j, alg) in self.algorithms.iter().enumerate() {
            p.check(
                ASYMMETRIC.contains(alg),
                &format!("dpop.algorithms[{j}]"),
                || format!("{alg:?} is a shared-secret algorithm; a DPoP proof is signed with the client's private key; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
            );
        }
        p.check(
            (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.max_age),
            "dpop.max_age",
            || "accepted: 1s to 10m".into(),
        );
        p.check(
            self.leeway <= Duration::from_secs(60),
            "dpop.leeway",
            || "accepted: 0s to 60s".into(),
        );
        p.check(
            self.replay_cache_capacity > 0,
            "dpop.replay_cache_capacity",
            || "must be at least 1".into(),
        );
        p.into_vec()
    }

    /// The `algs` auth-param: accepted algorithms, space-separated.
    pub fn algs_param(&self) -> String {
        let names: Vec<String> = self.algorithms.iter().map(|a| format!("{a:?}")).collect();
        names.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        assert!(DpopConfig::default().validate().is_empty());
        assert_eq!(
            DpopConfig::default().algs_param(),
            "ES256 ES384 RS256 PS256 EdDSA"
        );
        let bad = DpopConfig {
            algorithms: vec![Algorithm::HS256],
            max_age: Duration::ZERO,
            leeway: Duration::from_secs(61),
            replay_cache_capacity: 0,
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "dpop.algorithms[0]",
                "dpop.max_age",
                "dpop.leeway",
                "dpop.replay_cache_capacity"
            ]
        );
        let m: DpopMode = serde_json::from_str("\"required\"").unwrap();
        assert_eq!(m, DpopMode::Required);
        assert!(serde_json::from_str::<DpopMode>("\"sometimes\"").is_err());
    }
}
