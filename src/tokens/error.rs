//! API errors: one type for REST (JSON `{error, error_description}` with a
//! 4xx/5xx status) and gRPC (a `tonic::Status`).

use crate::authz::{Denial, DenyKind};
use crate::pat::{CreateError, RuleError};
use crate::store::StoreError;

/// A refused or failed API call. Never contains a token.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status: 400, 401, 403, 404, 409, 502 or 503.
    pub status: u16,
    /// OAuth-style error code (`invalid_request`, `invalid_token`, …).
    pub error: &'static str,
    pub description: String,
    /// For 502: Keycloak's own `error` code.
    pub upstream_error: Option<String>,
    /// What failed underneath (a store error), for the server's log line
    /// when the error is answered ([`ApiError::log`]); never sent.
    pub cause: Option<String>,
}

/// Equal when the caller would see the same answer (`cause` is log-only).
impl PartialEq for ApiError {
    fn eq(&self, o: &Self) -> bool {
        (
            self.status,
            self.error,
            &self.description,
            &self.upstream_error,
        ) == (o.status, o.error, &o.description, &o.upstream_error)
    }
}

impl Eq for ApiError {}

impl ApiError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            description: description.into(),
            upstream_error: None,
            cause: None,
        }
    }

    /// Logs a server-side failure (5xx) where it is answered; refusals of
    /// the caller (4xx) are not the server's problem and are not logged.
    pub fn log(&self) {
        if self.status >= 500 {
            tracing::warn!(
                status = self.status,
                error = self.error,
                cause = self.cause.as_deref().unwrap_or(""),
                "API call failed: {}",
                self.description
            );
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", d)
    }

    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self::new(401, "invalid_token", d)
    }

    pub fn insufficient_scope(d: impl Into<String>) -> Self {
        Self::new(403, "insufficient_scope", d)
    }

    pub fn not_found() -> Self {
        Self::new(404, "not_found", "no such token")
    }

    pub fn conflict(d: impl Into<String>) -> Self {
        Self::new(409, "conflict", d)
    }

    /// The token exchange failed; `upstream` is Keycloak's `error`.
    pub fn exchange_failed(upstream: Option<String>, d: impl Into<String>) -> Self {
        ApiError {
            upstream_error: upstream,
            ..Self::new(502, "exchange_failed", d)
        }
    }

    pub fn unavailable(d: impl Into<String>) -> Self {
        Self::new(503, "temporarily_unavailable", d)
    }

    pub fn internal(d: impl Into<String>) -> Self {
        Self::new(503, "temporarily_unavailable", d)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        if let Some(u) = &self.upstream_error {
            v["upstream_error"] = serde_json::Value::from(u.as_str());
        }
        v
    }

    /// The gRPC status for the same error.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        self.log();
        let code = match self.status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::FailedPrecondition,
            _ => Code::Unavailable,
        };
        tonic::Status::new(code, format!("{}: {}", self.error, self.description))
    }
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        match d.kind {
            DenyKind::Unauthenticated => ApiError::invalid_token(d.description),
            DenyKind::Forbidden => ApiError::insufficient_scope(d.description),
            DenyKind::Unavailable => ApiError::unavailable(d.description),
        }
    }
}

impl From<crate::jwt::JwtError> for ApiError {
    fn from(e: crate::jwt::JwtError) -> Self {
        Denial::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(why) => ApiError::conflict(format!("token store conflict: {why}")),
            StoreError::Unavailable(_) => ApiError {
                cause: Some(e.to_string()),
                ..ApiError::unavailable("token store unavailable; try again")
            },
            StoreError::Other(_) => ApiError {
                cause: Some(e.to_string()),
                ..ApiError::unavailable("token store error; try again")
            },
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Rule(r @ RuleError::TooManyActive { .. }) => {
                ApiError::conflict(r.to_string())
            }
            CreateError::Rule(r) => ApiError::invalid_request(r.to_string()),
            CreateError::NotFound => ApiError::not_found(),
            CreateError::Store(s) => s.into(),
        }
    }
}
