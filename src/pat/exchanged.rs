//! PATs that are IdP-signed JWTs (Keycloak token exchange): the identity a
//! registered one grants.
//!
//! Such a token is a PAT when it carries `pat.jwt_marker` or its `aud`
//! contains `pat.exchange.audience`; it must then be registered (kind `jwt`)
//! and active, else it is refused. Its effective scopes are the
//! **intersection** of the registered PAT's scopes and the scopes the JWT
//! itself maps to: the registration cannot widen what the IdP granted, and
//! the IdP cannot widen what the user chose for the PAT.

use super::PatGrant;
use crate::identity::{CredentialKind, Identity};
use crate::scope;

/// The identity of a registered, active JWT PAT: who the JWT says, scoped
/// by both the record and the token, reported as `x-auth-method: pat`.
pub fn identity(rec: &PatGrant, jwt: &Identity) -> Identity {
    Identity {
        kind: CredentialKind::Pat,
        subject: jwt.subject.clone(),
        username: jwt
            .username
            .clone()
            .or_else(|| Some(rec.username.to_string()).filter(|u| !u.is_empty())),
        email: jwt.email.clone(),
        client: jwt.client.clone(),
        scopes: intersect_scopes(&rec.scopes, &jwt.scopes).into(),
        token_id: Some(rec.id.to_string()),
        issuer: jwt.issuer.clone(),
        expires_at: jwt.expires_at.min(rec.expires_at.timestamp()),
        claims: jwt.claims.clone(),
        rendered: Default::default(),
    }
}

/// Scopes granted by both sides (wildcard-aware, order of `stored` first):
/// a stored scope is kept when some token scope is at least as wide, and a
/// token scope when some stored scope is at least as wide.
pub fn intersect_scopes<S: AsRef<str>>(stored: &[S], token: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    };
    for s in stored.iter().map(AsRef::as_ref) {
        if token.iter().any(|t| scope::satisfies(t, s)) {
            push(s);
        }
    }
    for t in token {
        if stored.iter().any(|s| scope::satisfies(s.as_ref(), t)) {
            push(t);
        }
    }
    out
}

/// Is a verified JWT a PAT, by marker claim or exchange audience?
pub fn is_pat_jwt(
    marker: Option<&str>,
    audiences: &[String],
    marker_value: &str,
    exchange_audience: Option<&str>,
) -> bool {
    marker == Some(marker_value)
        || exchange_audience.is_some_and(|a| audiences.iter().any(|x| x == a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn intersection_is_wildcard_aware_and_never_widens() {
        let i = |a: &[&str], b: &[&str]| intersect_scopes(&v(a), &v(b));
        assert_eq!(i(&["a:read", "b:write"], &["a:read"]), v(&["a:read"]));
        assert_eq!(i(&["a:*"], &["a:read", "c:read"]), v(&["a:read"]));
        assert_eq!(i(&["a:read"], &["*:*"]), v(&["a:read"]));
        assert_eq!(i(&["a:*"], &["*:read"]), Vec::<String>::new());
        assert_eq!(i(&["a:read"], &[]), Vec::<String>::new());
        assert_eq!(i(&["a:*"], &["a:*"]), v(&["a:*"]));
    }

    #[test]
    fn pat_jwt_detection() {
        let aud = v(&["portcullis", "pat-issuer"]);
        assert!(is_pat_jwt(Some("pat"), &[], "pat", None));
        assert!(!is_pat_jwt(Some("access"), &aud, "pat", None));
        assert!(is_pat_jwt(None, &aud, "pat", Some("pat-issuer")));
        assert!(!is_pat_jwt(None, &aud, "pat", Some("other")));
    }
}
