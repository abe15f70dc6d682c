//! Effective scopes of a login token, from the sources configured per
//! issuer (`issuers[].scopes`): the OAuth `scope` claim, realm roles and
//! client roles, renamed through `map`, plus `default`.
//!
//! Values that are not valid `resource:action` scopes after mapping are
//! dropped (OAuth scopes such as `openid` or `profile` are not ours), so an
//! odd role name can never widen a grant or break a header.

use std::collections::HashMap;

use serde::Deserialize;

use super::config::ScopeSourceConfig;
use crate::scope::{ScopeRole, validate};

/// Shares equal scope sets between verified tokens: a cached token holds
/// a pointer to its set, not its own vector and strings (about 120 bytes
/// per token otherwise). The sets are immutable, so sharing exposes
/// nothing of one token to another.
pub type ScopeSets = crate::identity::Interner<[String]>;

#[cfg(test)]
use crate::identity::INTERNED_MAX as MAX_SETS;

/// Keycloak's `{ "roles": [...] }` shape.
#[derive(Debug, Deserialize)]
pub struct Roles {
    #[serde(default)]
    pub roles: Vec<String>,
}

pub fn effective(
    cfg: &ScopeSourceConfig,
    scope_claim: Option<&str>,
    realm: Option<&Roles>,
    clients: Option<&HashMap<String, Roles>>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |value: &str| match cfg.map.get(value) {
        Some(mapped) => out.extend(mapped.iter().cloned()),
        None => out.push(value.to_owned()),
    };
    for src in &cfg.from {
        if src == "claim:scope" {
            scope_claim
                .unwrap_or("")
                .split_ascii_whitespace()
                .for_each(&mut push);
        } else if src == "realm_roles" {
            realm.iter().flat_map(|r| &r.roles).for_each(|r| push(r));
        } else if let Some(client) = src.strip_prefix("client_roles:") {
            clients
                .and_then(|c| c.get(client))
                .iter()
                .flat_map(|r| &r.roles)
                .for_each(|r| push(r));
        }
    }
    out.extend(cfg.default.iter().cloned());
    out.retain(|s| validate(s, ScopeRole::Granted).is_ok());
    out.sort();
    out.dedup();
    out
}

/// A user's scopes from their roles alone (realm roles, and client roles
/// by client id), as a login token with those roles would get them, minus
/// anything from the OAuth `scope` claim (which the client asked for, not
/// the user's entitlement). `None` when the issuer maps no role source:
/// then roles say nothing about scopes.
pub fn from_roles(
    cfg: &ScopeSourceConfig,
    realm: Vec<String>,
    clients: HashMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let role_source = |s: &String| s == "realm_roles" || s.starts_with("client_roles:");
    if !cfg.from.iter().any(role_source) {
        return None;
    }
    let clients: HashMap<String, Roles> = clients
        .into_iter()
        .map(|(c, roles)| (c, Roles { roles }))
        .collect();
    Some(effective(
        cfg,
        None,
        Some(&Roles { roles: realm }),
        Some(&clients),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn roles(r: &[&str]) -> Roles {
        Roles {
            roles: r.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn sources_map_and_default() {
        let cfg = ScopeSourceConfig {
            from: vec![
                "claim:scope".into(),
                "realm_roles".into(),
                "client_roles:api".into(),
            ],
            map: [
                (
                    "uploader".to_string(),
                    vec!["uploads:write".to_string(), "uploads:read".to_string()],
                ),
                ("profile".to_string(), vec!["profile:read".to_string()]),
            ]
            .into_iter()
            .collect(),
            default: vec!["self:read".into()],
        };
        let clients: HashMap<String, Roles> = [
            ("api".to_string(), roles(&["reports:read"])),
            ("other".to_string(), roles(&["admin:all"])),
        ]
        .into_iter()
        .collect();
        let got = effective(
            &cfg,
            Some("openid profile billing:read"),
            Some(&roles(&["uploader", "offline_access"])),
            Some(&clients),
        );
        assert_eq!(
            got,
            vec![
                "billing:read",
                "profile:read",
                "reports:read",
                "self:read",
                "uploads:read",
                "uploads:write"
            ]
        );
    }

    #[test]
    fn from_roles_ignores_the_scope_claim_and_needs_a_role_source() {
        let mut cfg = ScopeSourceConfig {
            from: vec!["claim:scope".into(), "realm_roles".into()],
            map: [("reader".to_string(), vec!["uploads:read".to_string()])]
                .into_iter()
                .collect(),
            default: vec![],
        };
        let got = from_roles(
            &cfg,
            vec!["reader".into(), "offline_access".into()],
            HashMap::new(),
        );
        assert_eq!(got, Some(vec!["uploads:read".to_string()]));
        cfg.from = vec!["claim:scope".into()];
        assert_eq!(
            from_roles(&cfg, vec!["reader".into()], HashMap::new()),
            None
        );
    }

    #[test]
    fn equal_scope_sets_are_shared_and_others_kept_apart() {
        let sets = ScopeSets::default();
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = sets.intern(v(&["a:read", "b:write"]));
        let b = sets.intern(v(&["a:read", "b:write"]));
        assert!(Arc::ptr_eq(&a, &b), "one allocation for equal sets");
        let c = sets.intern(v(&["a:read"]));
        let d = sets.intern(v(&["b:write", "a:read"]));
        assert_eq!(&*c, ["a:read"]);
        assert_eq!(&*d, ["b:write", "a:read"]);
        assert!(!Arc::ptr_eq(&a, &d));
        assert_eq!(&*a, ["a:read", "b:write"], "unchanged by later sets");
        assert_eq!(sets.len(), 3);
    }

    #[test]
    fn scope_sets_stop_growing_at_their_bound_without_losing_scopes() {
        let sets = ScopeSets::default();
        for i in 0..MAX_SETS + 10 {
            let got = sets.intern(vec![format!("r{i}:read")]);
            assert_eq!(&*got, [format!("r{i}:read")]);
        }
        assert_eq!(sets.len(), MAX_SETS);
    }

    #[test]
    fn unconfigured_sources_are_ignored() {
        let cfg = ScopeSourceConfig::default();
        let got = effective(&cfg, None, Some(&roles(&["a:b"])), None);
        assert!(got.is_empty());
    }
}
