//! The outcome of a Check before it becomes protobuf.

use std::borrow::Cow;
use std::sync::Arc;

use crate::identity::Identity;

/// What portcullis decided for one request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Let the request through with this caller's identity headers.
    Allow(Arc<Identity>),
    /// A public route called without a credential: through, no identity.
    AllowAnonymous,
    /// Refuse it.
    Deny(Denial),
}

/// The three ways a request is refused; each fixes the gRPC code and the
/// HTTP status Envoy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Missing or bad credential: gRPC 16, HTTP 401.
    Unauthenticated,
    /// Valid credential, not allowed here: gRPC 7, HTTP 403.
    Forbidden,
    /// We cannot decide (keys or store unavailable): gRPC 14, HTTP 503.
    Unavailable,
}

impl DenyKind {
    pub fn grpc_code(self) -> i32 {
        match self {
            DenyKind::Unauthenticated => 16,
            DenyKind::Forbidden => 7,
            DenyKind::Unavailable => 14,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            DenyKind::Unauthenticated => 401,
            DenyKind::Forbidden => 403,
            DenyKind::Unavailable => 503,
        }
    }
}

/// A refusal, with what the client is told (RFC 6750 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenyKind,
    /// RFC 6750 error code (`invalid_token`, `invalid_request`,
    /// `insufficient_scope`) or `temporarily_unavailable` for 503s.
    /// `None` when no credential was sent at all (§3.1: no error code then).
    pub error: Option<&'static str>,
    /// Human-readable reason; never contains a token.
    pub description: Cow<'static, str>,
    /// Scopes to name in the challenge for `insufficient_scope`.
    pub scope: Option<String>,
    /// The authentication scheme the challenge names.
    pub challenge: Challenge,
}

/// The `WWW-Authenticate` scheme of a 401/403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// RFC 6750 `Bearer`.
    #[default]
    Bearer,
    /// RFC 9449 `DPoP`, with the accepted proof algorithms.
    Dpop,
}

impl Denial {
    pub fn unauthenticated(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Denial {
            kind: DenyKind::Unauthenticated,
            error: Some(error),
            description: description.into(),
            scope: None,
            challenge: Challenge::Bearer,
        }
    }

    pub fn forbidden(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Denial {
            kind: DenyKind::Forbidden,
            error: Some(error),
            description: description.into(),
            scope: None,
            challenge: Challenge::Bearer,
        }
    }

    pub fn unavailable(description: impl Into<Cow<'static, str>>) -> Self {
        Denial {
            kind: DenyKind::Unavailable,
            error: Some("temporarily_unavailable"),
            description: description.into(),
            scope: None,
            challenge: Challenge::Bearer,
        }
    }

    /// No credential at all: a bare challenge.
    pub fn no_credential() -> Self {
        Denial {
            kind: DenyKind::Unauthenticated,
            error: None,
            description: Cow::Borrowed("missing bearer token"),
            scope: None,
            challenge: Challenge::Bearer,
        }
    }

    /// A 401 about a DPoP-bound token or its proof (RFC 9449 §7.1).
    pub fn dpop(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Denial {
            challenge: Challenge::Dpop,
            ..Denial::unauthenticated(error, description)
        }
    }

    pub fn insufficient_scope(required: &[String]) -> Self {
        Denial {
            kind: DenyKind::Forbidden,
            error: Some("insufficient_scope"),
            description: Cow::Borrowed("the token lacks a scope this route requires"),
            scope: Some(required.join(" ")),
            challenge: Challenge::Bearer,
        }
    }
}
