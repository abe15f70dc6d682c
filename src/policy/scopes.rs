//! Per-request scope check against a route's requirements.

use crate::scope::{self, ScopeError, ScopeRole};

/// The caller lacks scopes a route (or Envoy's context extensions) demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDenial {
    /// Required scopes the caller does not satisfy, for `WWW-Authenticate: ... scope="..."`:
    /// every unsatisfied `all_of`/extra scope (deduplicated, in order), followed by
    /// all `any_of` scopes when none of them is satisfied.
    pub missing: Vec<String>,
}

impl ScopeDenial {
    /// Space-separated `missing`, ready for the `scope="..."` auth-param
    /// (scopes are `[A-Za-z0-9_.:-]` only, so no escaping is needed).
    pub fn scope_param(&self) -> String {
        self.missing.join(" ")
    }
}

impl std::fmt::Display for ScopeDenial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "missing scopes: {}", self.missing.join(" "))
    }
}

impl std::error::Error for ScopeDenial {}

/// Check granted scopes against a route's requirements.
///
/// * every scope in `route_all_of` and `extra_all_of` must be satisfied by some granted scope;
/// * if `route_any_of` is non-empty, at least one of it must be satisfied.
///
/// `granted` may contain wildcards (`uploads:*`, `*:*`). With `is_pat`, matching
/// uses [`scope::pat_satisfies`], so a PAT never satisfies a `tokens:*` scope,
/// whatever it holds.
pub fn check_scopes(
    route_all_of: &[String],
    route_any_of: &[String],
    extra_all_of: &[String],
    granted: &[String],
    is_pat: bool,
) -> Result<(), ScopeDenial> {
    let sat = |required: &str| {
        granted.iter().any(|g| {
            if is_pat {
                scope::pat_satisfies(g, required)
            } else {
                scope::satisfies(g, required)
            }
        })
    };
    let mut missing: Vec<String> = Vec::new();
    for r in route_all_of.iter().chain(extra_all_of) {
        if !sat(r) && !missing.contains(r) {
            missing.push(r.clone());
        }
    }
    if !route_any_of.is_empty() && !route_any_of.iter().any(|r| sat(r)) {
        for r in route_any_of {
            if !missing.contains(r) {
                missing.push(r.clone());
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ScopeDenial { missing })
    }
}

/// Parse Envoy's `portcullis.required_scopes` context extension: scopes separated by
/// ASCII whitespace, each a valid *required* (non-wildcard) scope. Empty input gives
/// an empty list; duplicates are dropped.
pub fn parse_required_scopes(s: &str) -> Result<Vec<String>, ScopeError> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split_ascii_whitespace() {
        scope::validate(part, ScopeRole::Required)?;
        if !out.iter().any(|o| o == part) {
            out.push(part.to_owned());
        }
    }
    Ok(out)
}
