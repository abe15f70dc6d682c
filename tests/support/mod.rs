//! Shared integration-test support.

#![allow(dead_code)]

pub mod api;
pub mod check;
pub mod echo;
pub mod envoy;
pub mod keycloak;
pub mod pg;
pub mod real_keycloak;
pub mod redis_server;
pub mod store_suite;
pub mod wrapped_store;
