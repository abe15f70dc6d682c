//! The one place a [`Decision`] becomes a `CheckResponse`.
//!
//! Every response carries an explicit status: Envoy treats an unset status
//! as OK. Identity headers are built by hand with `append: false` *and*
//! `OVERWRITE_IF_EXISTS_OR_ADD`, which every Envoy version reads as
//! "replace"; client-sent identity headers we do not set are removed. An
//! allow also carries the caller as dynamic metadata (namespace
//! `envoy.filters.http.ext_authz`): `subject`, `issuer`, `username`,
//! `client`, `method`, `token_id`, `scopes`, `route` (and mapped `claims`).
//!
//! [`reply_for`] is what the gRPC server sends: an allow for an identity
//! has its headers and metadata written straight from the identity
//! ([`CheckReply`], `authz::render`).
//! [`build_for`] is the same answer as a `CheckResponse` message (decoded
//! from those bytes), so tests of one test the other.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{BoolValue, Struct};
use envoy_types::pb::google::rpc::Status;

use super::decision::{Challenge, Decision, Denial, DenyKind};
use super::reply::CheckReply;
use super::request::RequestView;
use super::surface::Surface;
use crate::identity::Identity;
use crate::policy::Route;

/// Prefix of every header we own on the upstream request (the default of
/// `identity_headers.prefix`).
pub const IDENTITY_PREFIX: &str = super::headers::DEFAULT_PREFIX;

/// Server-wide settings that shape responses (fixed until a restart).
#[derive(Debug, Clone)]
pub struct ResponseOptions {
    /// RFC 9728 metadata URL (`api.resource_metadata`): 401 challenges
    /// carry it as `resource_metadata="…"`. `None`: not sent.
    pub resource_metadata: Option<String>,
    /// `algs` of a `DPoP` challenge (`dpop.algorithms`).
    pub dpop_algs: String,
}

impl Default for ResponseOptions {
    fn default() -> Self {
        ResponseOptions {
            resource_metadata: None,
            dpop_algs: crate::dpop::DpopConfig::default().algs_param(),
        }
    }
}

/// Builds the response with the default `credentials` and
/// `identity_headers`, no route and no server options. `request` supplies
/// the client's header names so spoofed identity headers can be stripped.
pub fn build(decision: &Decision, request: &RequestView<'_>) -> CheckResponse {
    reply(decision, request).into_response()
}

/// [`build`]'s answer as sent ([`CheckReply`]).
pub fn reply(decision: &Decision, request: &RequestView<'_>) -> CheckReply {
    static DEFAULT: std::sync::OnceLock<Surface> = std::sync::OnceLock::new();
    let surface = DEFAULT.get_or_init(Surface::default);
    let landed = Landed {
        route: None,
        label: "(none)",
        assertion: None,
    };
    reply_for(
        decision,
        request,
        &landed,
        surface,
        &ResponseOptions::default(),
    )
}

/// Where an allowed request landed: the route's own options and its name
/// for the dynamic metadata.
#[derive(Debug, Clone, Copy)]
pub struct Landed<'a> {
    pub route: Option<&'a Route>,
    /// Route name, `(default)` or `(none)`.
    pub label: &'a str,
    /// The signed identity assertion for this route, if it wants one.
    pub assertion: Option<&'a str>,
}

/// Builds the response for a decision on `landed`, with `surface`'s
/// identity headers and credential sources and the server-wide `opts`:
/// [`reply_for`]'s answer as a message.
pub fn build_for(
    decision: &Decision,
    request: &RequestView<'_>,
    landed: &Landed<'_>,
    surface: &Surface,
    opts: &ResponseOptions,
) -> CheckResponse {
    reply_for(decision, request, landed, surface, opts).into_response()
}

/// The answer to send for a decision on `landed` (see [`build_for`]).
pub fn reply_for(
    decision: &Decision,
    request: &RequestView<'_>,
    landed: &Landed<'_>,
    surface: &Surface,
    opts: &ResponseOptions,
) -> CheckReply {
    match decision {
        Decision::Allow(id) => allow(Some(id), request, landed, surface),
        Decision::AllowAnonymous => allow(None, request, landed, surface),
        Decision::Deny(d) => deny(d, opts).into(),
    }
}

fn allow(
    id: Option<&Arc<Identity>>,
    request: &RequestView<'_>,
    landed: &Landed<'_>,
    surface: &Surface,
) -> CheckReply {
    let mut headers = Vec::new();
    if let Some(jwt) = landed.assertion {
        headers.push(overwrite(surface.headers.assertion_header(), jwt));
    }
    let set = |n: &str| {
        id.is_some_and(|id| surface.headers.sets(id, n))
            || headers
                .iter()
                .any(|h| h.header.as_ref().is_some_and(|h| h.key == n))
    };
    let mut headers_to_remove: Vec<String> = Vec::new();
    let mut remove = |n: String| {
        if !headers_to_remove.contains(&n) {
            headers_to_remove.push(n);
        }
    };
    // A name we set must never also be removed: Envoy applies removals last.
    for n in request.header_names() {
        if surface.headers.owns(n) {
            // Checked as UTF-8 at decode, so nothing is replaced here.
            let n = String::from_utf8_lossy(n).to_ascii_lowercase();
            if !set(&n) {
                remove(n);
            }
        }
    }
    let route = landed.route;
    if route.is_some_and(|r| r.strip_credential) {
        remove("authorization".to_owned());
        for h in &surface.sources.headers {
            if request
                .header_names()
                .any(|n| n.eq_ignore_ascii_case(h.as_bytes()))
            {
                remove(h.to_string());
            }
        }
    }
    // A token in the query never reaches the upstream (or its logs).
    let param = &*surface.sources.query_param;
    let query_parameters_to_remove = match route {
        Some(r) if r.query_credential && request.has_query_param(param) => vec![param.to_owned()],
        _ => Vec::new(),
    };
    let ok = OkHttpResponse {
        headers,
        headers_to_remove,
        query_parameters_to_remove,
        ..Default::default()
    };
    let mut fields = std::collections::HashMap::with_capacity(1);
    fields.insert("route".to_owned(), super::headers::string(landed.label));
    let metadata = Struct { fields };
    match id {
        // The identity's part is written at encode, from the identity.
        Some(id) => CheckReply::allow(id.clone(), surface.headers.template().clone(), ok, metadata),
        None => CheckResponse {
            status: Some(Status {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            dynamic_metadata: Some(metadata),
            http_response: Some(HttpResponse::OkResponse(ok)),
        }
        .into(),
    }
}

fn deny(d: &Denial, opts: &ResponseOptions) -> CheckResponse {
    let description = sanitize(&d.description);
    let mut challenge = match d.challenge {
        Challenge::Bearer => String::from("Bearer realm=\"portcullis\""),
        Challenge::Dpop => format!(
            "DPoP realm=\"portcullis\", algs=\"{}\"",
            sanitize(&opts.dpop_algs)
        ),
    };
    if d.kind != DenyKind::Unavailable
        && let Some(err) = d.error
    {
        challenge.push_str(&format!(
            ", error=\"{err}\", error_description=\"{description}\""
        ));
        if let Some(scope) = &d.scope {
            challenge.push_str(&format!(", scope=\"{}\"", sanitize(scope)));
        }
    }
    // RFC 9728 §5.1: tell a client without a usable token where to learn
    // which authorization server to get one from.
    if d.kind == DenyKind::Unauthenticated
        && let Some(url) = &opts.resource_metadata
    {
        challenge.push_str(&format!(", resource_metadata=\"{}\"", sanitize(url)));
    }
    let body = serde_json::json!({
        "error": d.error.unwrap_or("invalid_request"),
        "error_description": description,
    })
    .to_string();
    let mut headers = vec![overwrite("content-type", "application/json")];
    if d.kind != DenyKind::Unavailable {
        headers.push(overwrite("www-authenticate", &challenge));
    }
    CheckResponse {
        status: Some(Status {
            code: d.kind.grpc_code(),
            message: description.clone(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(d.kind.http_status()),
            }),
            headers,
            body,
        })),
    }
}

/// A header that replaces any client-sent value (public for the bench's
/// no-op server, which mimics an allow's headers).
#[allow(deprecated)] // `append` is deprecated, yet Envoy ≤ 1.36 reads only it.
pub fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: header_safe(value),
            raw_value: Vec::new(),
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

/// Header values: no control characters (no CR/LF header splitting).
/// `authz::render` writes the same replacement without a copy.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// RFC 6750 quoted-string content: no control characters, quotes or backslashes.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '\''
            } else {
                c
            }
        })
        .collect()
}
