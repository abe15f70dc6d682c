//! Per-route authorization policy: config, compilation and request matching.
//!
//! # Matching rules
//!
//! A request is matched on `(host, method, raw_path)`:
//!
//! 1. **Path normalisation** first (see below). A path that cannot be
//!    normalised safely gives [`RouteMatch::BadPath`] whatever the host.
//! 2. **Host tiers**, most specific first: the exact host, then wildcard
//!    patterns by decreasing suffix length (`*.a.example.org` before
//!    `*.example.org`), then routes without `hosts`. The request host is
//!    compared case-insensitively, without a `:port` suffix or trailing dot.
//!    `*.example.org` matches one *or more* labels (`a.example.org`,
//!    `a.b.example.org`), never `example.org` itself.
//! 3. Within a tier: **exact** beats **template** beats **prefix**. Among
//!    prefixes the longest wins. Among templates the trie decides segment by
//!    segment, left to right: a literal segment beats a `{param}`, which beats
//!    a `{*catch_all}` (with backtracking, so `/a/{x}/c` still matches `/a/b/c`
//!    when a `/a/b/{y}/z` template exists). Among identical paths
//!    (templates differing only in parameter names count as identical) the
//!    first listed route wins.
//! 4. **Methods**: a route with `methods` only matches those methods
//!    (compared case-insensitively; `HEAD` is not implied by `GET`). If a
//!    route's path matches but its method doesn't, matching continues with the
//!    next candidate (no 405), then with the next less specific host tier.
//! 5. Nothing matched: [`RouteMatch::NoRoute`]; the caller applies
//!    [`Policy::default_action`].
//!
//! Path kinds:
//! * `exact: "/x"` — the normalised path equals `/x`.
//! * `prefix: "/api"` — segment-aligned: matches `/api` and `/api/...`, never
//!   `/apix`. `prefix: "/"` matches everything. A trailing slash in the config
//!   is ignored (`/api/` ≡ `/api`).
//! * `template: "/u/{id}/files/{*rest}"` — `{name}` matches exactly one
//!   non-empty segment; a final `{*rest}` matches one or more segments *and*
//!   the bare parent (`/u/1/files`), so that `/u/1/files/` (which normalises to
//!   `/u/1/files`) is covered by the same route.
//!
//! Everything is compiled at load time (hash maps for exact paths and
//! prefixes, a segment trie for templates); a lookup does a handful of hash
//! probes and one trie walk per tier, and allocates only when the path or host
//! needs rewriting (percent-escapes, dot segments, `//`, trailing slash,
//! upper-case host).
//!
//! # Path normalisation
//!
//! Applied to Envoy's raw `:path`, in this order:
//! * query (`?…`) and fragment (`#…`) are cut off;
//! * the path must start with `/` (so `*` and absolute-form are rejected);
//! * percent-escapes are decoded once (`%2e%2E` → `..`, `%41` → `A`, `+` stays `+`),
//!   except `%25`, `%3F` and `%23`, which stay encoded (upper-case) so that
//!   normalising is idempotent (`%` / `?` / `#` would otherwise change meaning);
//! * rejected ([`RouteMatch::BadPath`]): invalid escapes, raw or encoded NUL,
//!   `%2F`/`%5C` (encoded slash/backslash), raw backslash, any other control
//!   character, invalid UTF-8 after decoding, `..` above the root, and dot
//!   segments carrying `;` parameters (`..;x`, which Tomcat-style servers
//!   resolve as `..`);
//! * empty segments are dropped (`//a///b` → `/a/b`), `.` segments removed,
//!   `..` pops one segment;
//! * a trailing slash is dropped (`/admin/` → `/admin`), so a route for `/admin`
//!   also covers `/admin/`;
//! * `;` parameters in a segment (`/uploads;x/1`, also `%3B` after
//!   decoding), which Tomcat and Spring drop before routing: refused with
//!   `policy.matrix_params: reject` (default), or dropped with `strip`
//!   (`/uploads;x/1` → `/uploads/1`; a segment left empty is merged away);
//! * paths are **case-sensitive** (`/ADMIN` does not match `/admin`), like
//!   Envoy, unless `policy.case_insensitive_paths: true`: then the request
//!   path and every configured path are ASCII-lower-cased before matching,
//!   for upstreams that serve `/API/V1/x` as `/api/v1/x`.
//!
//! # Routes named by Envoy
//!
//! `portcullis.route` picks a route by name ([`Policy::named_route`]); Envoy
//! has already matched the path, but the route's own `methods` and `hosts`
//! still apply, and a path that normalisation refuses is still refused
//! (`authz::engine`; Envoy leaves `%2e%2e;` unresolved, Tomcat does not). A
//! request outside them is refused (403), never moved to another route.

mod compile;
mod config;
mod error;
mod path;
mod router;
mod scopes;

#[cfg(test)]
mod tests;

pub use config::{
    AuthMode, CredentialKind, DefaultAction, MatchConfig, MatrixParams, PathConfig, PolicyConfig,
    RequireConfig, RouteAssertion, RouteConfig,
};
pub use error::PolicyError;
pub use path::{PathOptions, normalize_host, normalize_path, normalize_path_with};
pub use scopes::{ScopeDenial, ScopeRequirements, parse_required_scopes};

use path::HostPattern;
use router::{HashMap, Hosts, Idx};

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique route name from config.
    pub name: String,
    /// Whether a credential is needed.
    pub auth: AuthMode,
    /// Every one of these must be granted (deduplicated, config order).
    pub all_of: Vec<String>,
    /// If non-empty, one of these must be granted.
    pub any_of: Vec<String>,
    /// `strip_credential`: the credential never reaches the upstream.
    pub strip_credential: bool,
    /// `query_credential`: a token may come in `credentials.query_param`.
    pub query_credential: bool,
    /// `assertion.audience`: send a signed identity assertion for it.
    pub assertion_audience: Option<std::sync::Arc<str>>,
    credentials: u8,
    /// Upper-cased methods; `None` = any method.
    methods: Option<Vec<Box<str>>>,
    /// Host patterns; `None` = any host. Only read for routes named by
    /// Envoy: path matching gets the same effect from the host tiers.
    hosts: Option<Vec<HostPattern>>,
    index: usize,
    /// The name as a shared metrics label (no allocation per request).
    label: crate::metrics::Label,
}

impl Route {
    /// What a request on this route must hold, with Envoy's extra scopes.
    pub fn requirements<'a>(&'a self, envoy_all_of: &'a [String]) -> ScopeRequirements<'a> {
        ScopeRequirements {
            all_of: &self.all_of,
            any_of: &self.any_of,
            envoy_all_of,
        }
    }

    /// The route name as a metrics label.
    pub fn label(&self) -> &crate::metrics::Label {
        &self.label
    }

    /// Does this route accept a credential of `kind`?
    pub fn accepts(&self, kind: CredentialKind) -> bool {
        self.credentials & kind.bit() != 0
    }

    /// Accepted credential kinds in canonical order (jwt, service_account, pat).
    pub fn accepted_kinds(&self) -> impl Iterator<Item = CredentialKind> + Clone + use<> {
        let mask = self.credentials;
        CredentialKind::ALL
            .into_iter()
            .filter(move |k| mask & k.bit() != 0)
    }

    /// Position of the route in `policy.routes`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Upper-cased methods this route is limited to; `None` = any method.
    pub fn methods(&self) -> Option<&[Box<str>]> {
        self.methods.as_deref()
    }

    pub(crate) fn accepts_method(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }

    /// Does `host` (already [`normalize_host`]d) fit `match.hosts`? Same
    /// rule as the host tiers: `*.example.org` needs one or more labels
    /// before the suffix.
    pub(crate) fn accepts_host(&self, host: &str) -> bool {
        self.hosts.as_ref().is_none_or(|hs| {
            hs.iter().any(|h| match h {
                HostPattern::Exact(n) => host == n,
                HostPattern::Wildcard(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .and_then(|label| label.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty()),
            })
        })
    }
}

/// Result of [`Policy::named_route`].
#[derive(Debug, Clone, Copy)]
pub enum NamedRoute<'a> {
    /// The route, and the request fits its methods and hosts.
    Route(&'a Route),
    /// No route has this name (a misconfiguration: answer 503).
    Unknown,
    /// The route exists but its `match.methods` exclude the request method.
    MethodNotAllowed(&'a Route),
    /// The route exists but its `match.hosts` exclude the request host.
    HostNotAllowed(&'a Route),
}

/// Result of [`Policy::match_request`].
#[derive(Debug, Clone, Copy)]
pub enum RouteMatch<'a> {
    /// The best matching route.
    Route(&'a Route),
    /// No route matched; apply [`Policy::default_action`].
    NoRoute,
    /// The path was rejected by normalisation (answer 400); the reason is for logs.
    BadPath(&'static str),
}

/// A compiled, immutable policy. `Send + Sync`; share it in an `Arc`.
pub struct Policy {
    routes: Vec<Route>,
    by_name: HashMap<String, Idx>,
    hosts: Hosts,
    default: DefaultAction,
    path_options: PathOptions,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("default", &self.default)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Compile and validate. Errors name the config key path, e.g.
    /// `policy.routes[2].require.all_of[0]: scope "uploads:*" uses a wildcard, which is only allowed in granted scopes`.
    /// Returns the first error; [`PolicyConfig::validate`] lists them all.
    pub fn compile(cfg: &PolicyConfig) -> Result<Policy, PolicyError> {
        compile::build(cfg).map_err(|mut errs| errs.swap_remove(0))
    }

    /// Find the route for a request. `raw_path` is Envoy's raw request target
    /// including the query string, not decoded. See the module docs for the rules.
    pub fn match_request(&self, host: &str, method: &str, raw_path: &str) -> RouteMatch<'_> {
        let path = match normalize_path_with(raw_path, self.path_options) {
            Ok(p) => p,
            Err(reason) => return RouteMatch::BadPath(reason),
        };
        let host = normalize_host(host);
        for tier in self.hosts.tiers(&host) {
            if let Some(i) = tier.lookup(&self.routes, method, &path) {
                return RouteMatch::Route(&self.routes[i as usize]);
            }
        }
        RouteMatch::NoRoute
    }

    /// Look a route up by its configured name.
    pub fn route_by_name(&self, name: &str) -> Option<&Route> {
        self.by_name.get(name).map(|i| &self.routes[*i as usize])
    }

    /// The route Envoy named (`portcullis.route`), checked against its own
    /// `match.methods` and `match.hosts`. The path is not matched again:
    /// Envoy chose the route on it. A route listing `GET` only must not
    /// serve a `DELETE` just because Envoy sent every method to it.
    pub fn named_route(&self, name: &str, host: &str, method: &str) -> NamedRoute<'_> {
        let Some(r) = self.route_by_name(name) else {
            return NamedRoute::Unknown;
        };
        if !r.accepts_method(method) {
            return NamedRoute::MethodNotAllowed(r);
        }
        if r.hosts.is_some() && !r.accepts_host(&normalize_host(host)) {
            return NamedRoute::HostNotAllowed(r);
        }
        NamedRoute::Route(r)
    }

    /// How request paths are normalised (`policy.matrix_params`,
    /// `policy.case_insensitive_paths`).
    pub fn path_options(&self) -> PathOptions {
        self.path_options
    }

    /// What applies to requests matching no route.
    pub fn default_action(&self) -> DefaultAction {
        self.default
    }

    /// All routes in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
};
