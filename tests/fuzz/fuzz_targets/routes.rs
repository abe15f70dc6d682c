//! Route matching with arbitrary hosts, methods and raw paths.
//!
//! Input (text): `host \n method \n raw path`; with fewer lines the last one
//! is the path and the host / method default to `api.example.org` / `GET`.
//!
//! The policy is compiled from [`ROUTES`] (exact, prefix and template paths,
//! host tiers, method filters). Properties:
//! * `normalize_path` is idempotent and its output is canonical (starts with
//!   `/`, no empty, `.` or `..` segments, no trailing `/`);
//! * `match_request` answers `BadPath` exactly when normalisation fails, and
//!   otherwise picks the same route for the raw path, for its normalised form
//!   and with a query appended: matching depends on the normalised path only;
//! * the route is the one a straightforward reference implementation of the
//!   documented rules picks (host tiers, exact > template > longest prefix,
//!   literal > param > catch-all, method filters, first listed wins);
//! * a path that normalises to `/admin` or below (e.g. `/public/../admin`,
//!   `/public/%2e%2e/admin`) always lands on an `admin*` route, never on a
//!   public one.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{Config, MapEnv};
use portcullis::policy::{AuthMode, Policy, RouteMatch, normalize_host, normalize_path};
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Prefix,
    Template,
}

struct R {
    name: &'static str,
    hosts: Option<&'static [&'static str]>,
    methods: Option<&'static [&'static str]>,
    kind: Kind,
    path: &'static str,
    public: bool,
}

const fn r(name: &'static str, kind: Kind, path: &'static str) -> R {
    R {
        name,
        hosts: None,
        methods: None,
        kind,
        path,
        public: false,
    }
}

use Kind::*;

const ROUTES: &[R] = &[
    r("admin", Exact, "/admin"),
    r("admin-tree", Prefix, "/admin"),
    R {
        hosts: Some(&["admin.example.org"]),
        ..r("admin-host", Prefix, "/")
    },
    R {
        public: true,
        ..r("public", Prefix, "/public")
    },
    R {
        public: true,
        ..r("public-lookalike", Prefix, "/administrator")
    },
    R {
        public: true,
        hosts: Some(&["cdn.example.org"]),
        ..r("cdn-static", Prefix, "/static")
    },
    R {
        public: true,
        methods: Some(&["GET", "head"]),
        ..r("health", Exact, "/healthz")
    },
    r("upload", Template, "/api/v1/uploads/{id}"),
    r("upload-meta", Template, "/api/v1/uploads/meta"),
    r("files", Template, "/api/v1/uploads/{id}/files/{*rest}"),
    R {
        methods: Some(&["GET", "HEAD"]),
        ..r("users-read", Template, "/api/{version}/users/{id}")
    },
    R {
        methods: Some(&["PUT", "DELETE"]),
        ..r("users-write", Template, "/api/{v}/users/{user}")
    },
    r("users-any", Template, "/api/{v}/users/{*rest}"),
    r("api", Prefix, "/api"),
    R {
        hosts: Some(&["*.example.org"]),
        ..r("api-v2-wild", Prefix, "/api/v2")
    },
    R {
        hosts: Some(&["*.a.example.org"]),
        methods: Some(&["POST"]),
        ..r("api-v2-deep", Exact, "/api/v2/x")
    },
    R {
        hosts: Some(&["internal.example.org", "*.internal.example.org"]),
        ..r("internal", Prefix, "/api/internal")
    },
    R {
        public: true,
        ..r("root", Template, "/")
    },
];

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let routes: Vec<Value> = ROUTES
            .iter()
            .map(|r| {
                let kind = match r.kind {
                    Exact => "exact",
                    Prefix => "prefix",
                    Template => "template",
                };
                let mut m = json!({ "path": { kind: r.path } });
                if let Some(h) = r.hosts {
                    m["hosts"] = json!(h);
                }
                if let Some(ms) = r.methods {
                    m["methods"] = json!(ms);
                }
                let mut route = json!({ "name": r.name, "match": m });
                if r.public {
                    route["auth"] = json!("none");
                } else {
                    route["require"] = json!({ "all_of": [format!("{}:use", r.name)] });
                }
                route
            })
            .collect();
        // YAML is a superset of JSON: load through the real config loader.
        let doc = json!({ "policy": { "default": "deny", "routes": routes } }).to_string();
        let cfg = Config::from_yaml_str(&doc, &MapEnv::default()).expect("config");
        cfg.validate().expect("valid config");
        let p = Policy::compile(&cfg.policy).expect("policy");
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(p.routes()[i].name, r.name);
            assert_eq!(p.routes()[i].auth == AuthMode::None, r.public);
        }
        p
    })
}

// --- reference matcher, written from the documented rules ---

fn host_tiers(host: &str) -> Vec<Box<dyn Fn(&R) -> bool + '_>> {
    let mut tiers: Vec<Box<dyn Fn(&R) -> bool>> = Vec::new();
    tiers.push(Box::new(move |r: &R| {
        r.hosts
            .is_some_and(|hs| hs.iter().any(|h| !h.starts_with("*.") && *h == host))
    }));
    // Wildcard suffixes that match, longest first.
    let mut suffixes: Vec<&str> = ROUTES
        .iter()
        .flat_map(|r| r.hosts.unwrap_or(&[]).iter())
        .filter_map(|h| h.strip_prefix("*."))
        .filter(|s| {
            host.len() > s.len() + 1
                && host.ends_with(s)
                && host[..host.len() - s.len()].ends_with('.')
        })
        .collect();
    suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
    suffixes.dedup();
    for s in suffixes {
        tiers.push(Box::new(move |r: &R| {
            r.hosts
                .is_some_and(|hs| hs.iter().any(|h| h.strip_prefix("*.") == Some(s)))
        }));
    }
    tiers.push(Box::new(|r: &R| r.hosts.is_none()));
    tiers
}

/// Priority key of a template matching `segs`, or None: per segment literal
/// 0, param 1; then 0 for an exact end or 2 for a catch-all.
fn template_key(t: &str, segs: &[&str]) -> Option<Vec<u8>> {
    let tsegs: Vec<&str> = t[1..].split('/').filter(|s| !s.is_empty()).collect();
    let mut key = Vec::new();
    for (i, ts) in tsegs.iter().enumerate() {
        if ts.starts_with("{*") {
            return (segs.len() >= i).then(|| {
                key.push(2);
                key
            });
        }
        let seg = segs.get(i)?;
        if ts.starts_with('{') {
            key.push(1);
        } else if ts == seg {
            key.push(0);
        } else {
            return None;
        }
    }
    (segs.len() == tsegs.len()).then(|| {
        key.push(0);
        key
    })
}

fn reference(host: &str, method: &str, path: &str) -> Option<usize> {
    let host = normalize_host(host);
    let segs: Vec<&str> = path[1..].split('/').filter(|s| !s.is_empty()).collect();
    for in_tier in host_tiers(&host) {
        let cands: Vec<(usize, &R)> = ROUTES
            .iter()
            .enumerate()
            .filter(|(_, r)| in_tier(r))
            .filter(|(_, r)| {
                r.methods
                    .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
            })
            .collect();
        let exact = cands
            .iter()
            .find(|(_, r)| matches!(r.kind, Exact) && r.path == path);
        if let Some((i, _)) = exact {
            return Some(*i);
        }
        let template = cands
            .iter()
            .filter(|(_, r)| matches!(r.kind, Template))
            .filter_map(|(i, r)| template_key(r.path, &segs).map(|k| (k, *i)))
            .min();
        if let Some((_, i)) = template {
            return Some(i);
        }
        let prefix = cands
            .iter()
            .filter(|(_, r)| matches!(r.kind, Prefix))
            .filter(|(_, r)| {
                r.path == "/"
                    || path == r.path
                    || path
                        .strip_prefix(r.path)
                        .is_some_and(|t| t.starts_with('/'))
            })
            .max_by_key(|(i, r)| (r.path.len(), std::cmp::Reverse(*i)));
        if let Some((i, _)) = prefix {
            return Some(*i);
        }
    }
    None
}

fn idx(m: RouteMatch<'_>) -> Result<Option<usize>, &'static str> {
    match m {
        RouteMatch::Route(r) => Ok(Some(r.index())),
        RouteMatch::NoRoute => Ok(None),
        RouteMatch::BadPath(why) => Err(why),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.splitn(3, '\n').collect();
    let (host, method, raw) = match parts[..] {
        [h, m, p] => (h, m, p),
        [m, p] => ("api.example.org", m, p),
        [p] => ("api.example.org", "GET", p),
        _ => unreachable!(),
    };
    let p = policy();
    let got = idx(p.match_request(host, method, raw));
    let norm = normalize_path(raw);
    let n = match (&norm, got) {
        (Err(a), Err(b)) => {
            assert_eq!(a, &b);
            return;
        }
        (Ok(n), Ok(_)) => n,
        _ => panic!("{raw:?}: normalize_path {norm:?} but match_request {got:?}"),
    };

    // Canonical and idempotent.
    assert!(n.starts_with('/'), "{raw:?} -> {n:?}");
    if n.len() > 1 {
        assert!(!n.ends_with('/'), "{raw:?} -> {n:?}");
        for seg in n[1..].split('/') {
            assert!(!matches!(seg, "" | "." | ".."), "{raw:?} -> {n:?}");
        }
    }
    let again = normalize_path(n);
    assert_eq!(
        again.as_deref(),
        Ok(&**n),
        "not idempotent: {raw:?} -> {n:?} -> {again:?}"
    );

    // Matching depends on the normalised path only.
    let got = got.unwrap();
    assert_eq!(
        idx(p.match_request(host, method, n)),
        Ok(got),
        "{raw:?} vs {n:?}"
    );
    if !raw.contains(['?', '#']) {
        let q = format!("{raw}?next=/public#/public");
        assert_eq!(idx(p.match_request(host, method, &q)), Ok(got), "{q:?}");
    }
    let want = reference(host, method, n);
    let name = |i: Option<usize>| i.map_or("<none>", |i| ROUTES[i].name);
    assert_eq!(
        got,
        want,
        "{host:?} {method:?} {raw:?} (normalised {n:?}): got {} want {}",
        name(got),
        name(want)
    );

    // Nothing under /admin is ever public.
    if *n == "/admin" || n.starts_with("/admin/") {
        let route = got.map(|i| &ROUTES[i]);
        assert!(
            route.is_some_and(|r| r.name.starts_with("admin") && !r.public),
            "{host:?} {method:?} {raw:?} normalises to {n:?} but matched {}",
            name(got)
        );
    }
});
