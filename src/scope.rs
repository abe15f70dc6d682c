//! NOMAD-style scope grammar shared by policy, PAT creation and the API.
//!
//! A scope is `resource:action`. A *granted* scope may use `*` for either half
//! (`*:*`, `uploads:*`, `*:read`); a *required* scope never does. Both halves
//! are non-empty and use `[A-Za-z0-9_.-]` (plus `*` when granted), so a scope
//! can never smuggle whitespace or a separator into a header.

use std::fmt;

/// Why a scope string was rejected; rendered into config and API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {0:?} is not of the form resource:action")]
    Shape(String),
    #[error("scope {0:?} contains characters outside [A-Za-z0-9_.-]")]
    Chars(String),
    #[error("scope {0:?} uses a wildcard, which is only allowed in granted scopes")]
    WildcardRequired(String),
}

/// Which side of an authorization a scope string sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRole {
    /// Held by a caller; `*` wildcards allowed.
    Granted,
    /// Demanded by a route; must be concrete.
    Required,
}

impl fmt::Display for ScopeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScopeRole::Granted => "granted",
            ScopeRole::Required => "required",
        })
    }
}

fn valid_part(part: &str, role: ScopeRole) -> bool {
    if part == "*" {
        return role == ScopeRole::Granted;
    }
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Validates one scope for the given role.
pub fn validate(scope: &str, role: ScopeRole) -> Result<(), ScopeError> {
    let Some((res, act)) = scope.split_once(':') else {
        return Err(ScopeError::Shape(scope.to_owned()));
    };
    if res.is_empty() || act.is_empty() || act.contains(':') {
        return Err(ScopeError::Shape(scope.to_owned()));
    }
    if role == ScopeRole::Required && (res == "*" || act == "*") {
        return Err(ScopeError::WildcardRequired(scope.to_owned()));
    }
    if !valid_part(res, role) || !valid_part(act, role) {
        return Err(ScopeError::Chars(scope.to_owned()));
    }
    Ok(())
}

/// Does the granted scope (possibly a wildcard) satisfy the required one?
///
/// Matching is per half: `*` matches anything, otherwise exact equality.
/// A required scope that is itself a wildcard only matches a granted scope
/// that is at least as wide (used when checking that a PAT's requested
/// `uploads:*` lies within its creator's grants).
pub fn satisfies(granted: &str, required: &str) -> bool {
    let (Some((gr, ga)), Some((rr, ra))) = (granted.split_once(':'), required.split_once(':'))
    else {
        return false;
    };
    (gr == "*" || gr == rr) && (ga == "*" || ga == ra)
}

/// Does any of `granted` satisfy `required`?
pub fn any_satisfies<'a, I>(granted: I, required: &str) -> bool
where
    I: IntoIterator<Item = &'a str>,
{
    granted.into_iter().any(|g| satisfies(g, required))
}

/// The scopes both `a` and `b` grant, half by half (`*` meets anything):
/// `uploads:*` ∩ `*:read` is `uploads:read`, `*:*` ∩ `x:y` is `x:y`. Used to
/// bound a PAT's scopes by its owner's current ones.
pub fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    fn meet<'s>(x: &'s str, y: &'s str) -> Option<&'s str> {
        match (x, y) {
            ("*", y) => Some(y),
            (x, "*") => Some(x),
            (x, y) => (x == y).then_some(x),
        }
    }
    let mut out: Vec<String> = Vec::new();
    for x in a {
        for y in b {
            let (Some((xr, xa)), Some((yr, ya))) = (x.split_once(':'), y.split_once(':')) else {
                continue;
            };
            if let (Some(r), Some(act)) = (meet(xr, yr), meet(xa, ya)) {
                let s = format!("{r}:{act}");
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// Scopes that can never be put into a PAT, whatever `pat.grantable_scopes`
/// says: a PAT must not be able to manage tokens.
pub fn never_grantable(scope: &str) -> bool {
    scope
        .split_once(':')
        .is_some_and(|(res, _)| res == "tokens")
}

/// `satisfies` for scopes held by a PAT. A wildcard PAT scope (`*:*`,
/// `*:manage`) still never reaches the `tokens` resource, so a leaked PAT
/// cannot mint or revoke tokens even if its scopes were created wide.
pub fn pat_satisfies(granted: &str, required: &str) -> bool {
    !never_grantable(required) && satisfies(granted, required)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_meets_half_by_half() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            intersect(&v(&["uploads:*"]), &v(&["*:read"])),
            v(&["uploads:read"])
        );
        assert_eq!(
            intersect(&v(&["*:*"]), &v(&["a:b", "c:d"])),
            v(&["a:b", "c:d"])
        );
        assert_eq!(
            intersect(
                &v(&["uploads:read", "uploads:write"]),
                &v(&["uploads:read"])
            ),
            v(&["uploads:read"])
        );
        assert!(intersect(&v(&["a:b"]), &v(&["c:*"])).is_empty());
        assert!(intersect(&v(&["a:b"]), &[]).is_empty());
    }

    #[test]
    fn grammar() {
        assert!(validate("uploads:read", ScopeRole::Required).is_ok());
        assert!(validate("uploads:*", ScopeRole::Granted).is_ok());
        assert!(validate("*:*", ScopeRole::Granted).is_ok());
        assert_eq!(
            validate("uploads:*", ScopeRole::Required),
            Err(ScopeError::WildcardRequired("uploads:*".into()))
        );
        for bad in [
            "uploads", ":read", "uploads:", "a:b:c", "a b:c", "up\"x:y", "",
        ] {
            assert!(validate(bad, ScopeRole::Granted).is_err(), "{bad}");
        }
        assert!(validate("up*:read", ScopeRole::Granted).is_err());
    }

    #[test]
    fn wildcards() {
        let cases = [
            ("*:*", "uploads:write", true),
            ("uploads:*", "uploads:write", true),
            ("*:read", "uploads:read", true),
            ("*:read", "uploads:write", false),
            ("uploads:read", "uploads:write", false),
            ("uploads:read", "uploads:read", true),
            ("downloads:*", "uploads:read", false),
            ("uploads:*", "uploads:*", true),
            ("uploads:read", "uploads:*", false),
            ("garbage", "uploads:read", false),
        ];
        for (g, r, want) in cases {
            assert_eq!(satisfies(g, r), want, "{g} vs {r}");
        }
    }

    #[test]
    fn tokens_scopes_are_never_grantable() {
        assert!(never_grantable("tokens:manage"));
        assert!(never_grantable("tokens:*"));
        assert!(never_grantable("tokens:admin"));
        assert!(!never_grantable("*:*"));
        assert!(!never_grantable("uploads:*"));
        assert!(!pat_satisfies("*:*", "tokens:manage"));
        assert!(!pat_satisfies("*:manage", "tokens:manage"));
        assert!(pat_satisfies("*:*", "uploads:read"));
        assert!(!never_grantable("*:read"));
    }
}
