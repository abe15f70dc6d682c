//! tonic glue for `Authorization/Check`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use futures::FutureExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::decision::{Decision, Denial, DenyKind};
use super::engine::{Checked, Engine};
use super::input::CheckInput;
use super::reply::CheckReply;
use super::request::RequestView;
use super::response;
use crate::metrics::{self, Label};

/// The Check service. Holds the engine behind an `ArcSwap` so a config
/// reload replaces it atomically between requests.
#[derive(Debug, Clone)]
pub struct CheckService {
    engine: Arc<ArcSwap<Engine>>,
    response: response::ResponseOptions,
}

impl CheckService {
    pub fn new(engine: Arc<ArcSwap<Engine>>) -> Self {
        CheckService {
            engine,
            response: response::ResponseOptions::default(),
        }
    }

    /// 401 challenges carry `resource_metadata="<url>"` (RFC 9728), when
    /// `url` is `Some`.
    pub fn with_resource_metadata(mut self, url: Option<String>) -> Self {
        self.response.resource_metadata = url;
        self
    }

    /// `algs` named in `DPoP` challenges (`dpop.algorithms`).
    pub fn with_dpop_algs(mut self, algs: String) -> Self {
        self.response.dpop_algs = algs;
        self
    }

    /// [`CheckService::reply`] to `envoy-types`' request message, with the
    /// answer as a message (tests).
    pub async fn respond(&self, req: &CheckRequest) -> (Decision, CheckResponse) {
        let (decision, reply) = self.reply(&CheckInput::from_request(req)).await;
        (decision, reply.into_response())
    }

    /// The whole handler without gRPC (what the server sends; benches):
    /// [`Engine::decide`] behind a panic guard, then metrics, the log line
    /// and the answer.
    pub async fn reply(&self, req: &CheckInput) -> (Decision, CheckReply) {
        let view = RequestView::new(req);
        let engine = self.engine.load_full();
        // A panic must still produce a deny: an Err or a dropped stream is an
        // *error* to Envoy, which fails open when `failure_mode_allow` is set.
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("check", request_id = view.log_request_id());
        let checked = AssertUnwindSafe(engine.decide(&view))
            .catch_unwind()
            .instrument(span)
            .await
            .unwrap_or_else(|_| {
                tracing::error!("panic while checking a request; denying");
                Checked {
                    decision: Decision::Deny(Denial::unavailable("internal error")),
                    label: Label::new("(panic)"),
                    route: None,
                }
            });
        let Checked {
            mut decision,
            label,
            route,
        } = checked;
        let assertion = match assertion(&engine, &decision, route, &label) {
            Ok(a) => a,
            Err(denial) => {
                decision = Decision::Deny(denial);
                None
            }
        };
        let landed = response::Landed {
            route,
            label: label.name(),
            assertion: assertion.as_deref(),
        };
        let resp = response::reply_for(&decision, &view, &landed, engine.surface(), &self.response);
        record(&view, &decision, &label, started);
        log_decision(&view, &decision);
        (decision, resp)
    }
}

/// The signed identity assertion an allow on `route` carries, if the route
/// asks for one. Cached per identity, route and audience; a signing
/// failure denies (503), never allows without it.
fn assertion(
    engine: &Engine,
    decision: &Decision,
    route: Option<&crate::policy::Route>,
    label: &Label,
) -> Result<Option<Arc<str>>, Denial> {
    let (Decision::Allow(id), Some(audience)) = (
        decision,
        route.and_then(|r| r.assertion_audience.as_deref()),
    ) else {
        return Ok(None);
    };
    let Some(signer) = &engine.surface().assertions else {
        tracing::error!("a route asks for an identity assertion but no signer is loaded");
        return Err(Denial::unavailable(
            "authorization misconfigured for this route",
        ));
    };
    signer
        .assertion(id, label.name(), audience)
        .map(Some)
        .map_err(|e| {
            tracing::error!(error = %e, "signing the identity assertion failed");
            Denial::unavailable("identity assertion unavailable")
        })
}

/// Latency and the decision counter: atomics only (the counter is resolved
/// once per route, result and method, and kept on the route's label).
fn record(view: &RequestView<'_>, decision: &Decision, route: &Label, started: std::time::Instant) {
    metrics::global().check_seconds.observe(started.elapsed());
    let result = match decision {
        Decision::Allow(_) | Decision::AllowAnonymous => "allow",
        Decision::Deny(d) => match d.kind {
            DenyKind::Unauthenticated => "unauthenticated",
            DenyKind::Forbidden => "forbidden",
            DenyKind::Unavailable => "unavailable",
        },
    };
    route.count_decision(result, view.method());
}

fn log_decision(view: &RequestView<'_>, decision: &Decision) {
    match decision {
        Decision::Allow(id) => tracing::debug!(
            request_id = view.log_request_id(),
            method = view.method(),
            path = &*view.log_path(),
            subject = %id.subject,
            kind = id.kind.as_str(),
            token_id = id.token_id.as_deref().unwrap_or(""),
            "allow"
        ),
        Decision::AllowAnonymous => tracing::debug!(
            request_id = view.log_request_id(),
            method = view.method(),
            path = &*view.log_path(),
            "allow (public route, no credential)"
        ),
        Decision::Deny(d) => tracing::info!(
            request_id = view.log_request_id(),
            method = view.method(),
            path = &*view.log_path(),
            status = d.kind.http_status(),
            error = d.error.unwrap_or(""),
            reason = %d.description,
            "deny"
        ),
    }
}

/// `envoy.service.auth.v3.Authorization`'s server glue, generated by
/// tonic's code generator with [`CheckReply`] as the reply (build.rs).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod glue {
    include!(concat!(
        env!("OUT_DIR"),
        "/envoy.service.auth.v3.Authorization.rs"
    ));
}

/// The tonic service to add to a server: `CheckServer::new(check)`.
pub type CheckServer = glue::authorization_server::AuthorizationServer<CheckService>;

#[tonic::async_trait]
impl glue::authorization_server::Authorization for CheckService {
    async fn check(&self, request: Request<CheckInput>) -> Result<Response<CheckReply>, Status> {
        let (_, reply) = self.reply(request.get_ref()).await;
        Ok(Response::new(reply))
    }
}
