//! The one place a [`Decision`] becomes a `CheckResponse`.
//!
//! Every response carries an explicit status: Envoy treats an unset status
//! as OK. Identity headers are built by hand with `append: false` *and*
//! `OVERWRITE_IF_EXISTS_OR_ADD`, which every Envoy version reads as
//! "replace"; client-sent `x-auth-*` headers we do not set are removed.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc::Status;

use super::decision::{Decision, Denial, DenyKind};
use super::request::RequestView;
use crate::identity::Identity;

/// Prefix of every header we own on the upstream request.
pub const IDENTITY_PREFIX: &str = "x-auth-";

/// Server-wide settings that shape responses (fixed until a restart).
#[derive(Debug, Clone, Default)]
pub struct ResponseOptions {
    /// RFC 9728 metadata URL (`api.resource_metadata`): 401 challenges
    /// carry it as `resource_metadata="…"`. `None`: not sent.
    pub resource_metadata: Option<String>,
}

/// Builds the response. `request` supplies the client's header names so
/// spoofed `x-auth-*` headers can be stripped.
pub fn build(decision: &Decision, request: &RequestView<'_>) -> CheckResponse {
    build_with(decision, request, &ResponseOptions::default())
}

/// [`build`] with server-wide [`ResponseOptions`].
pub fn build_with(
    decision: &Decision,
    request: &RequestView<'_>,
    opts: &ResponseOptions,
) -> CheckResponse {
    match decision {
        Decision::Allow(id) => allow(Some(id), request),
        Decision::AllowAnonymous => allow(None, request),
        Decision::Deny(d) => deny(d, opts),
    }
}

fn allow(id: Option<&Identity>, request: &RequestView<'_>) -> CheckResponse {
    let mut headers = Vec::with_capacity(8);
    if let Some(id) = id {
        let scopes = id.scopes.join(" ");
        let fields: [(&str, Option<&str>); 8] = [
            ("x-auth-subject", Some(&id.subject)),
            // With several issuers `sub` alone is ambiguous; (issuer, subject) is not.
            ("x-auth-issuer", id.issuer.as_deref()),
            ("x-auth-username", id.username.as_deref()),
            ("x-auth-email", id.email.as_deref()),
            ("x-auth-client", id.client.as_deref()),
            ("x-auth-scopes", Some(&scopes)),
            ("x-auth-method", Some(id.kind.as_str())),
            ("x-auth-token-id", id.token_id.as_deref()),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                headers.push(overwrite(name, v));
            }
        }
    }
    let set = |n: &str| {
        headers
            .iter()
            .any(|h| h.header.as_ref().is_some_and(|h| h.key == n))
    };
    // A name we set must never also be removed: Envoy applies removals last.
    let headers_to_remove = request
        .header_names()
        .filter(|n| starts_with_ignore_case(n, IDENTITY_PREFIX))
        .map(|n| n.to_ascii_lowercase())
        .filter(|n| !set(n))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    CheckResponse {
        status: Some(Status {
            code: 0,
            message: String::new(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
    }
}

fn deny(d: &Denial, opts: &ResponseOptions) -> CheckResponse {
    let description = sanitize(&d.description);
    let mut challenge = String::from("Bearer realm=\"portcullis\"");
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

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}
