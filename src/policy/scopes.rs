//! Per-request scope check against a route's requirements.

use super::CredentialKind;
use crate::scope::{self, ScopeError, ScopeRole};

/// What a request must hold: a route's `require` block plus the scopes
/// Envoy demands through `portcullis.required_scopes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopeRequirements<'a> {
    /// Every one of these (the route's `require.all_of`).
    pub all_of: &'a [String],
    /// At least one of these, when non-empty (the route's `require.any_of`).
    pub any_of: &'a [String],
    /// Every one of these too (Envoy's `portcullis.required_scopes`).
    pub envoy_all_of: &'a [String],
}

/// The caller lacks scopes a route (or Envoy's context extensions) demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDenial {
    /// Required scopes the caller does not satisfy: every unsatisfied
    /// `all_of`/Envoy scope (deduplicated, in order), followed by all
    /// `any_of` scopes when none of them is satisfied.
    pub missing: Vec<String>,
    /// Every scope the requirements name (all-of, Envoy's, any-of;
    /// deduplicated): what the 403 challenge names, as RFC 6750 §3 asks
    /// ("the scope necessary to access the requested resource").
    pub required: Vec<String>,
}

impl ScopeDenial {
    /// Space-separated `required`, ready for the `scope="..."` auth-param
    /// (scopes are `[A-Za-z0-9_.:-]` only, so no escaping is needed).
    pub fn scope_param(&self) -> String {
        self.required.join(" ")
    }
}

impl std::fmt::Display for ScopeDenial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "missing scopes: {}", self.missing.join(" "))
    }
}

impl std::error::Error for ScopeDenial {}

// === impl ScopeRequirements ===

impl ScopeRequirements<'_> {
    /// Checks `granted` (which may hold wildcards such as `uploads:*`)
    /// against the requirements. A PAT's scopes match through
    /// [`scope::pat_satisfies`], so a PAT never satisfies a `tokens:*`
    /// scope, whatever it holds.
    pub fn check(&self, granted: &[String], holder: CredentialKind) -> Result<(), ScopeDenial> {
        let sat = |required: &str| {
            granted.iter().any(|g| match holder {
                CredentialKind::Pat => scope::pat_satisfies(g, required),
                _ => scope::satisfies(g, required),
            })
        };
        let mut missing: Vec<String> = Vec::new();
        for r in self.all_of.iter().chain(self.envoy_all_of) {
            if !sat(r) && !missing.contains(r) {
                missing.push(r.clone());
            }
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(|r| sat(r)) {
            push_new(&mut missing, self.any_of);
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(ScopeDenial {
            missing,
            required: self.named(),
        })
    }

    /// Every scope named: all-of, then Envoy's, then any-of, deduplicated.
    pub fn named(&self) -> Vec<String> {
        let mut out = Vec::new();
        push_new(&mut out, self.all_of);
        push_new(&mut out, self.envoy_all_of);
        push_new(&mut out, self.any_of);
        out
    }

    /// No requirement at all.
    pub fn is_empty(&self) -> bool {
        self.all_of.is_empty() && self.any_of.is_empty() && self.envoy_all_of.is_empty()
    }
}

fn push_new(out: &mut Vec<String>, scopes: &[String]) {
    for s in scopes {
        if !out.contains(s) {
            out.push(s.clone());
        }
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
