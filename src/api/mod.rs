//! The HTTP side (`listen.http`): health probes, the REST token API
//! (`/api/v1`), the token page (`/ui`) and, in `--dev`, the built-in issuer's
//! discovery and JWKS. The gRPC `TokenService` lives in [`grpc`].

pub mod grpc;
mod http;
pub mod limits;
pub mod rest;
pub mod ui;

pub use http::{HttpState, router};
