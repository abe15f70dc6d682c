//! The Envoy side: `envoy.service.auth.v3.Authorization/Check`.
//!
//! [`input`] decodes what Envoy sent (only the fields read, strings not
//! copied), [`request`] reads it, [`engine`] decides ([`Engine::decide`]
//! is the one entry point), [`authenticate`] classifies a bearer token once
//! and verifies it, [`deny`] is the single error → denial mapping and
//! [`response`] the single decision → `CheckResponse` builder ([`reply`]:
//! the same answer as sent, an allow's identity part written by
//! [`render`] from the identity and a per-configuration template). [`service`] is the tonic glue that can only ever answer
//! `Ok(CheckResponse{status: Some(..)})`. [`build`] makes an engine from a
//! config.

pub mod assertion;
pub mod authenticate;
pub mod binding;
pub mod build;
pub mod decision;
pub mod deny;
pub mod engine;
pub mod explain;
pub mod headers;
pub mod input;
pub mod render;
pub mod reply;
pub mod request;
pub mod response;
pub mod service;
pub mod sources;
pub mod surface;

pub use binding::Presentation;
pub use build::{DpopState, EngineConfig, SharedParts};
pub use decision::{Challenge, Decision, Denial, DenyKind};
pub use engine::{Checked, Engine};
pub use explain::RouteExplanation;
pub use input::CheckInput;
pub use reply::CheckReply;
pub use service::{CheckServer, CheckService};
pub use surface::Surface;
