//! Turns a request into a [`Decision`]: credential → identity → policy.

use std::sync::Arc;

use super::decision::{Decision, Denial};
use super::request::{Credential, RequestView};
use super::surface::Surface;
use crate::identity::{CredentialKind, Identity};
use crate::jwt::{VerifiedJwt, Verifier};
use crate::metrics::Label;
use crate::pat::{PatOutcome, PatValidator, exchanged};
use crate::policy::{self, AuthMode, DefaultAction, NamedRoute, Policy, Route, RouteMatch};
use crate::revocation::{DenyCheck, JwtDenyList, JwtRevocation};
use crate::store::TokenRecord;

/// `context_extensions` key naming a configured route directly.
pub const CTX_ROUTE: &str = "portcullis.route";
/// `context_extensions` key adding all-of scopes for an Envoy route.
pub const CTX_REQUIRED_SCOPES: &str = "portcullis.required_scopes";

/// Everything a Check needs, swapped as a whole on config reload.
#[derive(Debug)]
pub struct Engine {
    /// JWT verification for the configured issuers.
    pub verifier: Arc<Verifier>,
    /// Bearer tokens longer than this are refused unparsed.
    pub max_token_bytes: usize,
    /// PAT lookups (cache → store), shared across config reloads.
    pub pats: Arc<PatValidator>,
    /// A bearer token starting with this is a PAT (`pat.prefix`).
    pub pat_prefix: String,
    /// Deny-listed JWT `jti`/`sid` values, shared across config reloads.
    pub denylist: Arc<JwtDenyList>,
    /// A JWT whose marker claim has this value is a PAT (`pat.jwt_marker.value`).
    pub pat_marker_value: String,
    /// A JWT whose `aud` contains this is a PAT (`pat.exchange.audience`).
    pub pat_exchange_audience: Option<String>,
    /// Compiled routes.
    pub policy: Arc<Policy>,
    /// Credential sources and identity headers (`credentials`,
    /// `identity_headers`).
    pub surface: Arc<Surface>,
}

/// A decision and where the request landed (for the response builder).
#[derive(Debug)]
pub struct Checked<'e> {
    pub decision: Decision,
    /// Route label for metrics and the `route` metadata.
    pub label: Label,
    /// The configured route, when one matched (or Envoy named one).
    pub route: Option<&'e Route>,
}

fn no_route_label() -> Label {
    static L: std::sync::OnceLock<Label> = std::sync::OnceLock::new();
    L.get_or_init(|| Label(Arc::from("(none)"))).clone()
}

fn default_label() -> Label {
    static L: std::sync::OnceLock<Label> = std::sync::OnceLock::new();
    L.get_or_init(|| Label(Arc::from("(default)"))).clone()
}

/// Where a request landed in the policy.
enum Target<'p> {
    Route(&'p Route),
    /// No route matched: `policy.default` decides.
    Default(DefaultAction),
}

// === impl Engine ===

impl Engine {
    /// Decides one request. Never fails: every error is a denial.
    pub async fn check(&self, req: &RequestView<'_>) -> Decision {
        self.check_labeled(req).await.0
    }

    /// [`Engine::check`] plus the route label for metrics.
    pub async fn check_labeled(&self, req: &RequestView<'_>) -> (Decision, Label) {
        let c = self.check_routed(req).await;
        (c.decision, c.label)
    }

    /// [`Engine::check`] plus the route label and the matched route.
    pub async fn check_routed(&self, req: &RequestView<'_>) -> Checked<'_> {
        let mut label = no_route_label();
        let mut route = None;
        let decision = match self.decide(req, &mut label, &mut route).await {
            Ok(d) => d,
            Err(denial) => Decision::Deny(denial),
        };
        Checked {
            decision,
            label,
            route,
        }
    }

    async fn decide<'e>(
        &'e self,
        req: &RequestView<'_>,
        label: &mut Label,
        hit: &mut Option<&'e Route>,
    ) -> Result<Decision, Denial> {
        if !req.has_http() {
            return Err(Denial::forbidden(
                "invalid_request",
                "no HTTP request attributes in CheckRequest",
            ));
        }
        let target = self.target(req)?;
        *label = match &target {
            Target::Route(r) => {
                *hit = Some(*r);
                r.label().clone()
            }
            Target::Default(_) => default_label(),
        };
        let extra = match req.context(CTX_REQUIRED_SCOPES) {
            None => Vec::new(),
            Some(s) => policy::parse_required_scopes(s).map_err(|e| {
                tracing::error!(error = %e, "Envoy context_extensions {CTX_REQUIRED_SCOPES} is invalid");
                Denial::unavailable("authorization misconfigured for this route")
            })?,
        };
        // Scopes Envoy requires always need a credential holding them, even
        // on an `auth: none` route: the Envoy route is then not public.
        let public =
            extra.is_empty() && matches!(target, Target::Route(r) if r.auth == AuthMode::None);
        let query = matches!(target, Target::Route(r) if r.query_credential);
        let cred = req.credential_from(&self.surface.sources, query, self.max_token_bytes)?;
        let Some(token) = cred.token() else {
            return match public {
                true => Ok(Decision::AllowAnonymous),
                false => Err(Denial::no_credential()),
            };
        };
        if matches!(cred, Credential::Basic { .. }) && !token.starts_with(&self.pat_prefix) {
            return Err(Denial::unauthenticated(
                "invalid_token",
                "Basic authentication accepts only a personal access token as the password",
            ));
        }
        // On a public route a credential is still verified, so identity
        // headers are trustworthy; a bad one is refused, not ignored.
        let id = self.authenticate(token).await?;
        if let Credential::Basic { username, .. } = &cred {
            self.check_basic(username, &id)?;
        }
        if public {
            return Ok(Decision::Allow(id));
        }
        self.authorize(&target, &extra, &id)?;
        Ok(Decision::Allow(id))
    }

    /// Basic carries only PATs; with `credentials.basic.check_username`
    /// the user name must be the owner's.
    fn check_basic(&self, username: &str, id: &Identity) -> Result<(), Denial> {
        if id.kind != CredentialKind::Pat {
            return Err(Denial::unauthenticated(
                "invalid_token",
                "Basic authentication accepts only a personal access token as the password",
            ));
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
    fn target(&self, req: &RequestView<'_>) -> Result<Target<'_>, Denial> {
        if let Some(name) = req.context(CTX_ROUTE) {
            // Envoy chose the route on the path, but a path normalisation
            // refuses (`..;`, which Envoy leaves alone when spelled
            // `%2e%2e;` and Tomcat resolves as `..`; encoded slashes; `;`
            // parameters under `matrix_params: reject`) is refused here too.
            if let Err(why) = policy::normalize_path_with(req.path(), self.policy.path_options()) {
                return Err(Denial::forbidden(
                    "invalid_request",
                    format!("request path rejected: {why}"),
                ));
            }
            return match self.policy.named_route(name, req.host(), req.method()) {
                NamedRoute::Route(r) => Ok(Target::Route(r)),
                NamedRoute::Unknown => {
                    tracing::error!(route = name, "Envoy names a route that is not configured");
                    Err(Denial::unavailable(
                        "authorization misconfigured for this route",
                    ))
                }
                // Refused, not re-matched on the path: Envoy chose this
                // route, and falling through could land on a broader one.
                NamedRoute::MethodNotAllowed(r) => Err(Denial::forbidden(
                    "insufficient_scope",
                    format!("method {} is not allowed on route {}", req.method(), r.name),
                )),
                NamedRoute::HostNotAllowed(r) => Err(Denial::forbidden(
                    "insufficient_scope",
                    format!("host is not allowed on route {}", r.name),
                )),
            };
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

    /// Credential kind and scopes against the target.
    fn authorize(
        &self,
        target: &Target<'_>,
        extra: &[String],
        id: &Identity,
    ) -> Result<(), Denial> {
        let route = match target {
            Target::Route(r) => r,
            Target::Default(DefaultAction::Authenticated) if extra.is_empty() => return Ok(()),
            Target::Default(DefaultAction::Authenticated) => {
                return policy::check_scopes(
                    &[],
                    &[],
                    extra,
                    &id.scopes,
                    id.kind == CredentialKind::Pat,
                )
                .map_err(|_| Denial::insufficient_scope(extra));
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
        policy::check_scopes(
            &route.all_of,
            &route.any_of,
            extra,
            &id.scopes,
            id.kind == CredentialKind::Pat,
        )
        .map_err(|_| {
            // RFC 6750 §3: name the scopes the resource needs.
            let mut required: Vec<String> = Vec::new();
            for s in route.all_of.iter().chain(extra).chain(&route.any_of) {
                if !required.contains(s) {
                    required.push(s.clone());
                }
            }
            Denial::insufficient_scope(&required)
        })
    }

    /// Verifies a bearer token and returns who it belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Denial> {
        if token.starts_with(&self.pat_prefix) {
            let outcome = self.pats.validate(token).await?;
            return match outcome {
                PatOutcome::Valid(rec) => Ok(Arc::new(pat_identity(&rec))),
                other => Err(other.into()),
            };
        }
        if let Some(id) = self.authenticate_local_pat(token).await? {
            return Ok(id);
        }
        let verified = self.verifier.verify(token).await?;
        // After the verified-token cache, so a cached token is re-checked.
        self.check_denylist(&verified).await?;
        if exchanged::is_pat_jwt(
            verified.token_use.as_deref(),
            &verified.audiences,
            &self.pat_marker_value,
            self.pat_exchange_audience.as_deref(),
        ) {
            return self.jwt_pat(token, &verified).await;
        }
        Ok(verified.identity.clone())
    }

    /// Refuses a deny-listed `jti`/`sid`. Answers from memory; only when the
    /// deny set cannot answer (not loaded, overflowed) asks the store.
    async fn check_denylist(&self, v: &VerifiedJwt) -> Result<(), Denial> {
        let (jti, sid) = (v.jti.as_deref(), v.sid.as_deref());
        match self.denylist.check(jti, sid, crate::jwt::unix_now()) {
            DenyCheck::Clear => Ok(()),
            DenyCheck::Denied => Err(JwtRevocation::DenyListed.into()),
            DenyCheck::AskStore => {
                let store = self.pats.store();
                match store.is_jwt_denied(jti, sid, chrono::Utc::now()).await? {
                    true => Err(JwtRevocation::DenyListed.into()),
                    false => Ok(()),
                }
            }
        }
    }

    /// A PAT-marked JWT: must be registered (kind `jwt`), active, and owned
    /// by the token's (`iss`, `sub`). Any other outcome is a denial.
    async fn jwt_pat(&self, token: &str, v: &VerifiedJwt) -> Result<Arc<Identity>, Denial> {
        let hash = crate::jwt::token_hash(token);
        match self.pats.validate_jwt(hash, v.jti.as_deref()).await? {
            // Owned by the token's (iss, sub): the same sub at another issuer is another user.
            PatOutcome::Valid(rec)
                if rec.user_id == v.identity.subject
                    && !rec.user_issuer.is_empty()
                    && v.identity.issuer.as_deref() == Some(rec.user_issuer.as_str()) =>
            {
                Ok(Arc::new(exchanged::identity(&rec, &v.identity)))
            }
            PatOutcome::Valid(rec) => {
                tracing::warn!(token_id = %rec.id, jti = ?v.jti, "JWT PAT registered to another user; denying");
                Err(JwtRevocation::Unregistered.into())
            }
            PatOutcome::Unknown | PatOutcome::Malformed => Err(JwtRevocation::Unregistered.into()),
            other => Err(other.into()),
        }
    }

    /// `pat.issuer: local-jwt` (dev only): an HS256 JWT signed with
    /// `pat.local_jwt_key` is a PAT only while its hash is registered and
    /// unrevoked. `None`: local-jwt is off or this is not an HS256 JWT.
    async fn authenticate_local_pat(&self, token: &str) -> Result<Option<Arc<Identity>>, Denial> {
        match self.pats.validate_local_jwt(token).await? {
            None => Ok(None),
            Some(PatOutcome::Valid(rec)) => Ok(Some(Arc::new(pat_identity(&rec)))),
            Some(other) => Err(other.into()),
        }
    }
}

fn pat_identity(rec: &TokenRecord) -> Identity {
    Identity {
        kind: CredentialKind::Pat,
        subject: rec.user_id.clone(),
        username: Some(rec.username.clone()).filter(|u| !u.is_empty()),
        email: None,
        client: None,
        scopes: rec.scopes.clone(),
        token_id: Some(rec.id.to_string()),
        // `x-auth-issuer`: the owner's; none for an unowned (pre-0004) row.
        issuer: Some(rec.user_issuer.as_str())
            .filter(|i| !i.is_empty())
            .map(Arc::from),
        expires_at: rec.expires_at.timestamp(),
        claims: Vec::new(),
        rendered: Default::default(),
    }
}

impl Engine {
    /// Readiness of the stores behind the engine (`/readyz`).
    pub async fn store_ready(&self) -> Result<(), String> {
        self.pats
            .store()
            .ping()
            .await
            .map_err(|e| format!("token store unreachable: {e}"))
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

/// What the policy says about a request, for `portcullis check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteExplanation {
    /// The matched route's name, `(default: deny|authenticated)`, or why none.
    pub route: String,
    /// All-of scopes (route plus `portcullis.required_scopes`).
    pub all_of: Vec<String>,
    /// Any-of scopes.
    pub any_of: Vec<String>,
    /// Credential kinds accepted.
    pub credentials: Vec<&'static str>,
}

impl Engine {
    /// Explains which route a request lands on and what it requires.
    pub fn explain(&self, req: &RequestView<'_>) -> RouteExplanation {
        let extra = req
            .context(CTX_REQUIRED_SCOPES)
            .and_then(|s| policy::parse_required_scopes(s).ok())
            .unwrap_or_default();
        match self.target(req) {
            Ok(Target::Route(r)) => RouteExplanation {
                route: r.name.clone(),
                all_of: r.all_of.iter().chain(&extra).fold(Vec::new(), |mut v, s| {
                    if !v.contains(s) {
                        v.push(s.clone());
                    }
                    v
                }),
                any_of: r.any_of.clone(),
                credentials: r.accepted_kinds().map(|k| k.as_str()).collect(),
            },
            Ok(Target::Default(d)) => RouteExplanation {
                route: format!(
                    "(no route; policy.default = {})",
                    match d {
                        DefaultAction::Deny => "deny",
                        DefaultAction::Authenticated => "authenticated",
                    }
                ),
                all_of: extra,
                any_of: Vec::new(),
                credentials: CredentialKind::ALL.iter().map(|k| k.as_str()).collect(),
            },
            Err(d) => RouteExplanation {
                route: format!("(none: {})", d.description),
                all_of: extra,
                any_of: Vec::new(),
                credentials: Vec::new(),
            },
        }
    }
}
