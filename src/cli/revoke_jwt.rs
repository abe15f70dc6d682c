//! `portcullis revoke-jwt`: deny-list IdP-signed JWTs by `jti` or `sid`.

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};

use super::ConfigArgs;
use crate::store::DenylistKind;

/// How long a `--sid` entry lives without `--until`: longer than any
/// Keycloak session (SSO Session Max defaults to 10 h), so every token of
/// the session expires before its entry.
pub const DEFAULT_SID_TTL_HOURS: i64 = 24;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["jti", "sid"])))]
pub struct RevokeJwtArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Deny one token by its `jti` claim (requires --until: the token's `exp`).
    #[arg(long, requires = "until")]
    pub jti: Option<String>,
    /// Deny every token of a Keycloak session by its `sid` claim.
    #[arg(long)]
    pub sid: Option<String>,
    /// When the entry may be dropped: the token's `exp` as Unix seconds or
    /// RFC 3339, or a duration from now (`10h`). Default for --sid: 24h.
    #[arg(long, value_parser = parse_until)]
    pub until: Option<DateTime<Utc>>,
}

/// Why `--until` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntilError {
    #[error("Unix seconds out of range")]
    OutOfRange,
    #[error("duration too long")]
    TooLong,
    #[error("{0:?} is not Unix seconds, an RFC 3339 time or a duration (e.g. 10h)")]
    Unrecognised(String),
    #[error("{0} is in the past: nothing to deny")]
    Past(DateTime<Utc>),
}

/// Unix seconds, RFC 3339, or a duration from now; must be in the future.
pub fn parse_until(s: &str) -> Result<DateTime<Utc>, UntilError> {
    let s = s.trim();
    let at = if let Ok(secs) = s.parse::<i64>() {
        DateTime::from_timestamp(secs, 0).ok_or(UntilError::OutOfRange)?
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = humantime::parse_duration(s) {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .ok_or(UntilError::TooLong)?
    } else {
        return Err(UntilError::Unrecognised(s.to_owned()));
    };
    if at <= Utc::now() {
        return Err(UntilError::Past(at));
    }
    Ok(at)
}

pub async fn run(a: RevokeJwtArgs) -> anyhow::Result<i32> {
    let cfg = a.cfg.load()?;
    let (kind, value) = match (&a.jti, &a.sid) {
        (Some(j), None) => (DenylistKind::Jti, j.clone()),
        (None, Some(s)) => (DenylistKind::Sid, s.clone()),
        _ => anyhow::bail!("give exactly one of --jti or --sid"),
    };
    let until = match a.until {
        Some(u) => u,
        None => Utc::now() + chrono::Duration::hours(DEFAULT_SID_TTL_HOURS),
    };
    let store = super::admin_token::open_store(&cfg).await?;
    let revoker = super::admin_token::revoker_for(&cfg, store).await?;
    revoker
        .deny_jwt_by(kind, &value, until, &super::audit::cli_cause())
        .await?;
    println!(
        "deny-listed {} {value} until {}",
        kind.as_str(),
        until.to_rfc3339()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_forms() {
        let future = Utc::now().timestamp() + 3600;
        assert_eq!(
            parse_until(&future.to_string()).unwrap().timestamp(),
            future
        );
        assert!(parse_until("2999-01-01T00:00:00Z").is_ok());
        let rel = parse_until("2h").unwrap() - Utc::now();
        assert!(rel > chrono::Duration::minutes(119));
        assert!(parse_until("1").unwrap_err().to_string().contains("past"));
        assert!(parse_until("soon").is_err());
        assert!(
            parse_until("100000000y")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }
}
