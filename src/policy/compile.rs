//! Compiling a [`PolicyConfig`] into a [`Policy`]: every route checked
//! (each problem names its key), then placed in the host/path router.

use super::config::PathConfig;
use super::path::{self, HostPattern, PathOptions};
use super::router::{HashMap, Hosts, Idx, PathKind, Tier};
use super::{AuthMode, Policy, PolicyConfig, PolicyError, Route, RouteConfig};
use crate::scope::{self, ScopeRole};

/// Per route: host patterns (None = any host) and path kind.
type Placement = (Option<Vec<HostPattern>>, PathKind);

/// Every problem, or the compiled policy.
pub(super) fn build(cfg: &PolicyConfig) -> Result<Policy, Vec<PolicyError>> {
    let mut errs = Vec::new();
    let mut routes = Vec::with_capacity(cfg.routes.len());
    let mut placement: Vec<Placement> = Vec::new();
    let mut by_name: HashMap<String, Idx> = HashMap::default();
    for (i, rc) in cfg.routes.iter().enumerate() {
        let key = format!("policy.routes[{i}]");
        check_name(&key, i, rc, &mut by_name, &mut errs);
        let (route, place) = compile_route(&key, i, rc, cfg.case_insensitive_paths, &mut errs);
        routes.push(route);
        placement.push(place);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Policy {
        routes,
        by_name,
        hosts: place(&placement),
        default: cfg.default,
        path_options: PathOptions {
            matrix_params: cfg.matrix_params,
            case_insensitive: cfg.case_insensitive_paths,
        },
    })
}

/// Names are non-empty and unique.
fn check_name(
    key: &str,
    i: usize,
    rc: &RouteConfig,
    by_name: &mut HashMap<String, Idx>,
    errs: &mut Vec<PolicyError>,
) {
    if rc.name.trim().is_empty() {
        errs.push(PolicyError::EmptyName {
            key: format!("{key}.name"),
        });
    } else if let Some(first) = by_name.get(&rc.name) {
        errs.push(PolicyError::DuplicateName {
            key: format!("{key}.name"),
            name: rc.name.clone(),
            first: *first as usize,
        });
    } else {
        by_name.insert(rc.name.clone(), i as Idx);
    }
}

/// One route and where it goes in the router.
fn compile_route(
    key: &str,
    i: usize,
    rc: &RouteConfig,
    case_insensitive: bool,
    errs: &mut Vec<PolicyError>,
) -> (Route, Placement) {
    let m = &rc.matcher;
    let hosts = m.hosts.as_ref().map(|hs| compile_hosts(key, hs, errs));
    let methods = m.methods.as_ref().map(|ms| compile_methods(key, ms, errs));
    let mut path_kind = compile_path(key, m.path.as_ref()).unwrap_or_else(|e| {
        errs.push(e);
        PathKind::Prefix("/".into())
    });
    if case_insensitive {
        // Request paths are lower-cased too (`normalize_path_with`).
        path_kind.make_ascii_lowercase();
    }
    let all_of = scopes_at(&format!("{key}.require.all_of"), &rc.require.all_of, errs);
    let any_of = scopes_at(&format!("{key}.require.any_of"), &rc.require.any_of, errs);
    if rc.auth == AuthMode::None && !(rc.require.all_of.is_empty() && rc.require.any_of.is_empty())
    {
        errs.push(PolicyError::PublicWithScopes {
            key: format!("{key}.require"),
        });
    }
    if rc.credentials.is_empty() {
        errs.push(PolicyError::EmptyCredentials {
            key: format!("{key}.credentials"),
        });
    }
    let route = Route {
        name: rc.name.clone(),
        auth: rc.auth,
        all_of,
        any_of,
        strip_credential: rc.strip_credential,
        query_credential: rc.query_credential,
        assertion_audience: rc
            .assertion
            .as_ref()
            .map(|a| std::sync::Arc::from(a.audience.as_str())),
        credentials: rc.credentials.iter().fold(0, |acc, k| acc | k.bit()),
        methods,
        hosts: hosts.clone(),
        index: i,
        label: crate::metrics::Label::new(&rc.name),
    };
    (route, (hosts, path_kind))
}

fn compile_hosts(key: &str, hs: &[String], errs: &mut Vec<PolicyError>) -> Vec<HostPattern> {
    if hs.is_empty() {
        errs.push(PolicyError::EmptyList {
            key: format!("{key}.match.hosts"),
            what: "host",
        });
    }
    let mut out = Vec::new();
    for (j, h) in hs.iter().enumerate() {
        match path::parse_host(h) {
            Ok(p) if !out.contains(&p) => out.push(p),
            Ok(_) => {}
            Err(reason) => errs.push(PolicyError::Host {
                key: format!("{key}.match.hosts[{j}]"),
                host: h.clone(),
                reason,
            }),
        }
    }
    out
}

fn compile_methods(key: &str, ms: &[String], errs: &mut Vec<PolicyError>) -> Vec<Box<str>> {
    if ms.is_empty() {
        errs.push(PolicyError::EmptyList {
            key: format!("{key}.match.methods"),
            what: "method",
        });
    }
    let mut out: Vec<Box<str>> = Vec::new();
    for (j, raw) in ms.iter().enumerate() {
        match path::parse_method(raw) {
            Some(up) if !out.iter().any(|o| **o == *up) => out.push(up.into()),
            Some(_) => {}
            None => errs.push(PolicyError::Method {
                key: format!("{key}.match.methods[{j}]"),
                method: raw.clone(),
            }),
        }
    }
    out
}

fn compile_path(key: &str, p: Option<&PathConfig>) -> Result<PathKind, PolicyError> {
    let bad_path = |which: &str, p: &str| {
        let (key, path) = (format!("{key}.match.path.{which}"), p.to_owned());
        move |reason| PolicyError::Path { key, path, reason }
    };
    match p {
        None => Ok(PathKind::Prefix("/".into())),
        Some(PathConfig::Exact(p)) => path::parse_config_path(p)
            .map(PathKind::Exact)
            .map_err(bad_path("exact", p)),
        Some(PathConfig::Prefix(p)) => path::parse_config_path(p)
            .map(PathKind::Prefix)
            .map_err(bad_path("prefix", p)),
        Some(PathConfig::Template(t)) => {
            path::parse_template(t)
                .map(PathKind::Template)
                .map_err(|reason| PolicyError::Template {
                    key: format!("{key}.match.path.template"),
                    template: t.clone(),
                    reason: reason.to_string(),
                })
        }
    }
}

/// The router: each route under its hosts (or any host) by path kind.
fn place(placement: &[Placement]) -> Hosts {
    let mut hosts = Hosts::default();
    for (i, (host_patterns, path_kind)) in placement.iter().enumerate() {
        let idx = i as Idx;
        let Some(hs) = host_patterns else {
            hosts.any.add(idx, path_kind);
            continue;
        };
        for h in hs {
            let (map, name) = match h {
                HostPattern::Exact(n) => (&mut hosts.exact, n),
                HostPattern::Wildcard(n) => (&mut hosts.wildcard, n),
            };
            map.entry(name.as_str().into())
                .or_insert_with(Tier::default)
                .add(idx, path_kind);
        }
    }
    hosts
}

/// Validate scopes at `key[j]`, dropping duplicates.
fn scopes_at(key: &str, list: &[String], errs: &mut Vec<PolicyError>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (j, s) in list.iter().enumerate() {
        match scope::validate(s, ScopeRole::Required) {
            Err(error) => errs.push(PolicyError::Scope {
                key: format!("{key}[{j}]"),
                error,
            }),
            Ok(()) if !out.contains(s) => out.push(s.clone()),
            Ok(()) => {}
        }
    }
    out
}
