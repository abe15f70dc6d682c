//! Turns a request into a [`Decision`]: route → credential → identity →
//! scopes. [`Engine::decide`] is the one Check entry point: the tonic
//! service, `portcullis check` and the benches all call it.

use std::sync::{Arc, OnceLock};

use super::binding::Presentation;
use super::decision::{Decision, Denial};
use super::request::{Credential, RequestView};
use super::surface::Surface;
use crate::identity::{CredentialKind, Identity};
use crate::jwt::Verifier;
use crate::metrics::Label;
use crate::pat::PatValidator;
use crate::policy::{
    self, AuthMode, DefaultAction, NamedRoute, Policy, Route, RouteMatch, ScopeRequirements,
};
use crate::revocation::JwtDenyList;

/// `context_extensions` key naming a configured route directly.
pub const CTX_ROUTE: &str = "portcullis.route";
/// `context_extensions` key adding all-of scopes for an Envoy route.
pub const CTX_REQUIRED_SCOPES: &str = "portcullis.required_scopes";

/// Everything a Check needs, swapped as a whole on config reload. Built by
/// [`Engine::build`](super::build); read through accessors outside `authz`.
#[derive(Debug)]
pub struct Engine {
    /// JWT verification for the configured issuers.
    pub(super) verifier: Arc<Verifier>,
    /// Bearer tokens longer than this are refused unparsed.
    pub(super) max_token_bytes: usize,
    /// PAT lookups (cache → store), shared across config reloads.
    pub(super) pats: Arc<PatValidator>,
    /// A bearer token starting with this is a PAT (`pat.prefix`).
    pub(super) pat_prefix: String,
    /// Deny-listed JWT `jti`/`sid` values, shared across config reloads.
    pub(super) denylist: Arc<JwtDenyList>,
    /// A JWT whose marker claim has this value is a PAT (`pat.jwt_marker.value`).
    pub(super) pat_marker_value: String,
    /// A JWT whose `aud` contains this is a PAT (`pat.exchange.audience`).
    pub(super) pat_exchange_audience: Option<String>,
    /// Compiled routes.
    pub(super) policy: Arc<Policy>,
    /// Credential sources and identity output (`credentials`,
    /// `identity_headers`, `assertion`).
    pub(super) surface: Arc<Surface>,
    /// DPoP proof settings and replay cache, shared across reloads.
    pub(super) dpop: Arc<super::build::DpopState>,
    /// How the token API finds a caller's address (`audit.trusted_proxies`
    /// and the hop counts).
    pub(super) client_addrs: Arc<crate::audit::ClientAddrs>,
    /// `pat.owner_issuers`: owner issuers trusted besides the JWT issuers.
    pub(super) owner_issuers: Arc<[String]>,
}

/// The outcome of one Check: the decision, and where the request landed.
#[derive(Debug, Clone)]
pub struct Checked<'e> {
    pub decision: Decision,
    /// Route label for metrics and the `route` metadata.
    pub label: Label,
    /// The configured route, when one matched (or Envoy named one).
    pub route: Option<&'e Route>,
}

/// Where a request landed in the policy.
pub(super) enum Target<'p> {
    Route(&'p Route),
    /// No route matched: `policy.default` decides.
    Default(DefaultAction),
}

fn static_label(cell: &'static OnceLock<Label>, name: &str) -> Label {
    cell.get_or_init(|| Label::new(name)).clone()
}

fn no_route_label() -> Label {
    static L: OnceLock<Label> = OnceLock::new();
    static_label(&L, "(none)")
}

fn default_label() -> Label {
    static L: OnceLock<Label> = OnceLock::new();
    static_label(&L, "(default)")
}

// === impl Engine ===

impl Engine {
    /// Whether PATs owned by a user of `issuer` may authenticate: it is a
    /// configured JWT issuer (or the dev issuer) or in `pat.owner_issuers`.
    /// An issuer removed from the config (reload or restart) is neither.
    pub fn owner_issuer_trusted(&self, issuer: &str) -> bool {
        self.verifier.trusts(issuer) || self.owner_issuers.iter().any(|i| i == issuer)
    }

    /// Decides one request. Never fails: every error is a denial.
    pub async fn decide(&self, req: &RequestView<'_>) -> Checked<'_> {
        fn deny(d: Denial, label: Label, route: Option<&Route>) -> Checked<'_> {
            Checked {
                decision: Decision::Deny(d),
                label,
                route,
            }
        }
        if !req.has_http() {
            return deny(
                Denial::forbidden(
                    "invalid_request",
                    "no HTTP request attributes in CheckRequest",
                ),
                no_route_label(),
                None,
            );
        }
        let target = match self.target(req) {
            Ok(t) => t,
            Err(d) => return deny(d, no_route_label(), None),
        };
        let (label, route) = match &target {
            Target::Route(r) => (r.label().clone(), Some(*r)),
            Target::Default(_) => (default_label(), None),
        };
        match self.decide_on(req, &target).await {
            Ok(decision) => Checked {
                decision,
                label,
                route,
            },
            Err(d) => deny(d, label, route),
        }
    }

    /// The decision once the route is known.
    async fn decide_on(
        &self,
        req: &RequestView<'_>,
        target: &Target<'_>,
    ) -> Result<Decision, Denial> {
        let envoy_all_of = envoy_required_scopes(req)?;
        // Scopes Envoy requires always need a credential holding them, even
        // on an `auth: none` route: the Envoy route is then not public.
        let public = envoy_all_of.is_empty()
            && matches!(target, Target::Route(r) if r.auth == AuthMode::None);
        let query = matches!(target, Target::Route(r) if r.query_credential);
        let cred = req.credential_from(&self.surface.sources, query, self.max_token_bytes)?;
        let Some(token) = cred.token() else {
            return match public {
                true => Ok(Decision::AllowAnonymous),
                false => Err(Denial::no_credential()),
            };
        };
        if matches!(cred, Credential::Basic { .. }) && !token.starts_with(&self.pat_prefix) {
            return Err(basic_needs_a_pat());
        }
        // On a public route a credential is still verified, so identity
        // headers are trustworthy; a bad one is refused, not ignored.
        let presented = Presentation {
            dpop_proof: match &cred {
                Credential::Dpop { proof, .. } => Some(proof),
                _ => None,
            },
            method: req.method(),
            scheme: req.scheme(),
            host: req.host(),
            path: req.path(),
            certificate: req.peer_certificate(),
        };
        let id = self.authenticate_as(token, &presented).await?;
        if id.kind == CredentialKind::Pat {
            self.note_client(&id, req);
        }
        if let Credential::Basic { username, .. } = &cred {
            self.check_basic(username, &id)?;
        }
        if !public {
            authorize(target, &envoy_all_of, &id)?;
        }
        Ok(Decision::Allow(id))
    }

    /// Where a PAT was used from (`last_used_ip`, `last_used_user_agent`):
    /// into the usage tracker's pending entry, no I/O.
    fn note_client(&self, id: &Identity, req: &RequestView<'_>) {
        if let Some(tid) = id
            .token_id
            .as_deref()
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
        {
            self.pats
                .usage()
                .record_client(tid, req.client_ip(), req.user_agent());
        }
    }

    /// Basic carries only PATs; with `credentials.basic.check_username`
    /// the user name must be the owner's.
    fn check_basic(&self, username: &str, id: &Identity) -> Result<(), Denial> {
        if id.kind != CredentialKind::Pat {
            return Err(basic_needs_a_pat());
        }
        if self.surface.sources.check_username && id.username.as_deref() != Some(username) {
            return Err(Denial::unauthenticated(
                "invalid_token",
                "the Basic user name is not the token owner's",
            ));
        }
        Ok(())
    }

    /// Picks the route: named by Envoy, else matched on host/method/path.
    pub(super) fn target(&self, req: &RequestView<'_>) -> Result<Target<'_>, Denial> {
        if let Some(name) = req.context(CTX_ROUTE) {
            return self.named_target(name, req);
        }
        match self
            .policy
            .match_request(req.host(), req.method(), req.path())
        {
            RouteMatch::Route(r) => Ok(Target::Route(r)),
            RouteMatch::NoRoute => Ok(Target::Default(self.policy.default_action())),
            RouteMatch::BadPath(why) => Err(Denial::forbidden(
                "invalid_request",
                format!("request path rejected: {why}"),
            )),
        }
    }

    /// The route Envoy named in `portcullis.route`.
    fn named_target(&self, name: &str, req: &RequestView<'_>) -> Result<Target<'_>, Denial> {
        // Envoy chose the route on the path, but a path normalisation
        // refuses (`..;`, which Envoy leaves alone when spelled `%2e%2e;`
        // and Tomcat resolves as `..`; encoded slashes; `;` parameters
        // under `matrix_params: reject`) is refused here too.
        if let Err(why) = policy::normalize_path_with(req.path(), self.policy.path_options()) {
            return Err(Denial::forbidden(
                "invalid_request",
                format!("request path rejected: {why}"),
            ));
        }
        match self.policy.named_route(name, req.host(), req.method()) {
            NamedRoute::Route(r) => Ok(Target::Route(r)),
            NamedRoute::Unknown => {
                tracing::error!(route = name, "Envoy names a route that is not configured");
                Err(Denial::unavailable(
                    "authorization misconfigured for this route",
                ))
            }
            // Refused, not re-matched on the path: Envoy chose this route,
            // and falling through could land on a broader one.
            NamedRoute::MethodNotAllowed(r) => Err(Denial::forbidden(
                "insufficient_scope",
                format!("method {} is not allowed on route {}", req.method(), r.name),
            )),
            NamedRoute::HostNotAllowed(r) => Err(Denial::forbidden(
                "insufficient_scope",
                format!("host is not allowed on route {}", r.name),
            )),
        }
    }

    /// JWT verification for the configured issuers.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// How the token API finds a caller's address (`audit:`).
    pub fn client_addrs(&self) -> &crate::audit::ClientAddrs {
        &self.client_addrs
    }

    /// PAT lookups (cache → store), shared across config reloads.
    pub fn pats(&self) -> &Arc<PatValidator> {
        &self.pats
    }

    /// Deny-listed JWT `jti`/`sid` values, shared across config reloads.
    pub fn denylist(&self) -> &Arc<JwtDenyList> {
        &self.denylist
    }

    /// Bearer tokens longer than this are refused unparsed (`jwt.max_token_bytes`).
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Credential sources and identity output of this configuration.
    pub fn surface(&self) -> &Arc<Surface> {
        &self.surface
    }

    /// Flushes buffered `last_used_at` updates (graceful shutdown).
    pub async fn flush(&self) {
        match self.pats.usage().flush().await {
            Ok(n) if n > 0 => tracing::info!(tokens = n, "flushed PAT last_used_at"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "flushing PAT last_used_at failed"),
        }
    }
}

fn basic_needs_a_pat() -> Denial {
    Denial::unauthenticated(
        "invalid_token",
        "Basic authentication accepts only a personal access token as the password",
    )
}

/// Envoy's `portcullis.required_scopes`; an invalid value is our operator's
/// mistake, so it is a 503 (and logged), not the caller's 403.
fn envoy_required_scopes(req: &RequestView<'_>) -> Result<Vec<String>, Denial> {
    match req.context(CTX_REQUIRED_SCOPES) {
        None => Ok(Vec::new()),
        Some(s) => policy::parse_required_scopes(s).map_err(|e| {
            tracing::error!(error = %e, "Envoy context_extensions {CTX_REQUIRED_SCOPES} is invalid");
            Denial::unavailable("authorization misconfigured for this route")
        }),
    }
}

/// Credential kind and scopes against the target.
fn authorize(target: &Target<'_>, envoy_all_of: &[String], id: &Identity) -> Result<(), Denial> {
    let route = match target {
        Target::Route(r) => r,
        Target::Default(DefaultAction::Authenticated) => {
            let req = ScopeRequirements {
                envoy_all_of,
                ..ScopeRequirements::default()
            };
            return Ok(req.check(&id.scopes, id.kind)?);
        }
        Target::Default(DefaultAction::Deny) => {
            return Err(Denial::forbidden(
                "insufficient_scope",
                "no route matches this request",
            ));
        }
    };
    if !route.accepts(id.kind) {
        let accepted: Vec<&str> = route.accepted_kinds().map(|k| k.as_str()).collect();
        return Err(Denial::forbidden(
            "insufficient_scope",
            format!(
                "credential kind {} is not accepted on route {} (accepted: {})",
                id.kind,
                route.name,
                accepted.join(", ")
            ),
        ));
    }
    Ok(route
        .requirements(envoy_all_of)
        .check(&id.scopes, id.kind)?)
}
