//! The Envoy side: `envoy.service.auth.v3.Authorization/Check`.
//!
//! [`request`] reads what Envoy sent, [`engine`] decides, [`deny`] is the
//! single error → denial mapping and [`response`] the single decision →
//! `CheckResponse` builder. [`service`] is the tonic glue that can only
//! ever answer `Ok(CheckResponse{status: Some(..)})`.

pub mod assertion;
pub mod decision;
mod deny;
pub mod engine;
pub mod headers;
pub mod request;
pub mod response;
pub mod service;
pub mod sources;
pub mod surface;

pub use decision::{Decision, Denial, DenyKind};
pub use engine::Engine;
pub use service::CheckService;
pub use surface::Surface;
