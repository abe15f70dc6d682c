//! Rules a new personal access token must satisfy. Pure: no I/O.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::PatConfig;
use crate::scope::{self, ScopeRole};

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest token description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// A request to create (or rotate into) a personal access token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    /// Owner's `sub`.
    pub user_id: String,
    /// Owner's issuer (`iss`): the owner is (`user_issuer`, `user_id`).
    pub user_issuer: String,
    pub username: String,
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    /// `None`: now + `pat.default_lifetime_days`.
    pub expires_at: Option<DateTime<Utc>>,
    /// Rotate this token (revoked in the same transaction as the insert).
    pub rotated_from: Option<Uuid>,
}

/// One violated creation rule; each message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("name: required (non-empty)")]
    NameMissing,
    #[error("name: at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("description: at most {MAX_DESCRIPTION_CHARS} characters")]
    DescriptionTooLong,
    #[error("expires_at: must be in the future")]
    ExpiryInPast,
    #[error("pat.max_lifetime_days: expires_at is more than {0} days away")]
    LifetimeTooLong(u32),
    #[error("pat.max_active_per_user: user already has {count} active tokens (the limit)")]
    TooManyActive { count: u64 },
    #[error("scopes: at least one scope is required")]
    NoScopes,
    #[error("scopes: {0}")]
    InvalidScope(String),
    #[error("scopes: {0:?} is never grantable to a personal access token")]
    NeverGrantable(String),
    #[error("pat.grantable_scopes: {0:?} is not within the grantable scopes")]
    NotGrantable(String),
}

/// Checks a creation request. Returns the trimmed name, the de-duplicated
/// scopes (request order kept) and the effective `expires_at`.
pub fn check_new(
    cfg: &PatConfig,
    req: &CreateRequest,
    active_count: u64,
    now: DateTime<Utc>,
) -> Result<(String, Vec<String>, DateTime<Utc>), RuleError> {
    let name = req.name.trim();
    if name.is_empty() {
        return Err(RuleError::NameMissing);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(RuleError::NameTooLong);
    }
    if req
        .description
        .as_deref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(RuleError::DescriptionTooLong);
    }

    // Checked arithmetic: a `+` past chrono's range panics. A limit beyond
    // the representable dates bounds nothing further.
    let days_from_now =
        |d: u32| TimeDelta::try_days(i64::from(d)).and_then(|t| now.checked_add_signed(t));
    let expires_at = match req.expires_at {
        Some(at) => at,
        None => days_from_now(cfg.default_lifetime_days)
            .ok_or(RuleError::LifetimeTooLong(cfg.max_lifetime_days))?,
    };
    if expires_at <= now {
        return Err(RuleError::ExpiryInPast);
    }
    if days_from_now(cfg.max_lifetime_days).is_some_and(|max| expires_at > max) {
        return Err(RuleError::LifetimeTooLong(cfg.max_lifetime_days));
    }

    if active_count >= u64::from(cfg.max_active_per_user) {
        return Err(RuleError::TooManyActive {
            count: active_count,
        });
    }

    if req.scopes.is_empty() {
        return Err(RuleError::NoScopes);
    }
    let mut scopes: Vec<String> = Vec::with_capacity(req.scopes.len());
    for s in &req.scopes {
        scope::validate(s, ScopeRole::Granted)
            .map_err(|e| RuleError::InvalidScope(e.to_string()))?;
        if scope::never_grantable(s) {
            return Err(RuleError::NeverGrantable(s.clone()));
        }
        if !scope::any_satisfies(cfg.grantable_scopes.iter().map(String::as_str), s) {
            return Err(RuleError::NotGrantable(s.clone()));
        }
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    Ok((name.to_owned(), scopes, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreateRequest {
        CreateRequest {
            user_id: "u1".into(),
            user_issuer: "https://idp.example".into(),
            username: "alice".into(),
            name: "  ci token ".into(),
            description: None,
            scopes: vec![
                "uploads:*".into(),
                "downloads:read".into(),
                "uploads:*".into(),
            ],
            expires_at: None,
            rotated_from: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn accepts_and_defaults() {
        let cfg = PatConfig::default();
        let (name, scopes, exp) = check_new(&cfg, &req(), 0, now()).unwrap();
        assert_eq!(name, "ci token");
        assert_eq!(scopes, vec!["uploads:*", "downloads:read"]);
        assert_eq!(exp, now() + TimeDelta::days(30));
        // Exactly max lifetime is fine.
        let r = CreateRequest {
            expires_at: Some(now() + TimeDelta::days(365)),
            ..req()
        };
        assert!(check_new(&cfg, &r, 99, now()).is_ok());
    }

    #[test]
    fn each_rule() {
        let cfg = PatConfig::default();
        let cases: Vec<(CreateRequest, u64, RuleError)> = vec![
            (
                CreateRequest {
                    name: "   ".into(),
                    ..req()
                },
                0,
                RuleError::NameMissing,
            ),
            (
                CreateRequest {
                    name: "x".repeat(101),
                    ..req()
                },
                0,
                RuleError::NameTooLong,
            ),
            (
                CreateRequest {
                    description: Some("d".repeat(1001)),
                    ..req()
                },
                0,
                RuleError::DescriptionTooLong,
            ),
            (
                CreateRequest {
                    expires_at: Some(now()),
                    ..req()
                },
                0,
                RuleError::ExpiryInPast,
            ),
            (
                CreateRequest {
                    expires_at: Some(now() + TimeDelta::days(366)),
                    ..req()
                },
                0,
                RuleError::LifetimeTooLong(365),
            ),
            (req(), 100, RuleError::TooManyActive { count: 100 }),
            (
                CreateRequest {
                    scopes: vec![],
                    ..req()
                },
                0,
                RuleError::NoScopes,
            ),
            (
                CreateRequest {
                    scopes: vec!["tokens:manage".into()],
                    ..req()
                },
                0,
                RuleError::NeverGrantable("tokens:manage".into()),
            ),
            (
                CreateRequest {
                    scopes: vec!["tokens:*".into()],
                    ..req()
                },
                0,
                RuleError::NeverGrantable("tokens:*".into()),
            ),
        ];
        for (r, active, want) in cases {
            assert_eq!(check_new(&cfg, &r, active, now()), Err(want));
        }
        let bad = CreateRequest {
            scopes: vec!["uploads".into()],
            ..req()
        };
        assert!(matches!(
            check_new(&cfg, &bad, 0, now()),
            Err(RuleError::InvalidScope(_))
        ));
        assert_eq!(
            RuleError::TooManyActive { count: 100 }.to_string(),
            "pat.max_active_per_user: user already has 100 active tokens (the limit)"
        );
    }

    #[test]
    fn grantable_scopes_bound_requests() {
        let cfg = PatConfig {
            grantable_scopes: vec!["uploads:*".into(), "*:read".into()],
            ..PatConfig::default()
        };
        let ok = CreateRequest {
            scopes: vec![
                "uploads:write".into(),
                "uploads:*".into(),
                "reports:read".into(),
            ],
            ..req()
        };
        assert!(check_new(&cfg, &ok, 0, now()).is_ok());
        for s in ["reports:write", "*:*", "*:read2", "reports:*"] {
            let r = CreateRequest {
                scopes: vec![s.into()],
                ..req()
            };
            assert_eq!(
                check_new(&cfg, &r, 0, now()),
                Err(RuleError::NotGrantable(s.into())),
                "{s}"
            );
        }
        // `*:*` grantable still never lets `tokens:*` through.
        let r = CreateRequest {
            scopes: vec!["tokens:read".into()],
            ..req()
        };
        assert_eq!(
            check_new(&PatConfig::default(), &r, 0, now()),
            Err(RuleError::NeverGrantable("tokens:read".into()))
        );
    }
}
