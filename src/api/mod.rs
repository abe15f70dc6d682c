//! The HTTP side (`listen.http`): health probes, the REST token API
//! (`/api/v1`), the token page (`/ui`), OpenID Connect back-channel logout
//! ([`logout`]) and, in `--dev`, the built-in issuer's discovery and JWKS,
//! and the RFC 9728 protected resource metadata ([`metadata`]). The gRPC
//! `TokenService` lives in [`grpc`].

pub mod grpc;
mod http;
pub mod limits;
pub mod logout;
pub mod metadata;
pub mod rest;
pub mod ui;

pub use http::{HttpState, router};
