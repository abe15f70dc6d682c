//! `portcullis-testkit`: what the integration tests (`tests/*.rs`) and the
//! benches share, as one crate so every test file reaches it the same way
//! (`use portcullis_testkit::…`) and nothing is compiled in twice.
//!
//! - [`check`]: start portcullis in-process and wait until it is ready,
//!   [`check::Req`] (the `CheckRequest` builder, also used by
//!   `portcullis-bench`), Check over gRPC, allow/deny assertions;
//! - [`cli`]: the `portcullis` binary with a home of its own (`login`,
//!   `token --api`);
//! - [`in_process`]: the same Check handler without gRPC, for table tests;
//! - [`dpop`]: a DPoP client key, its thumbprint and signed proofs;
//! - [`api`]: a JSON client for `/api/v1` and dev-issuer logins;
//! - [`browser`]: real headless Chromium over WebDriver (chromedriver);
//! - [`keycloak`]: the Keycloak stand-in (failure injection);
//!   [`real_keycloak`]: the real Keycloak for `tests/keycloak_*.rs`;
//!   [`oidc`]: browser-flow helpers against it (Keycloak's login form
//!   without a browser, PKCE pairs, a client's allowed origins, sessions);
//! - [`signin`]: the `/ui` page signing in through the real Keycloak;
//! - [`pg`], [`redis_server`]: throwaway Postgres and Redis servers;
//! - [`cluster`]: two replicas sharing one Postgres and one Redis;
//! - [`envoy`], [`echo`]: a real Envoy and an upstream that records requests;
//! - [`wrapped_store`]: a counting, gateable `TokenStore`;
//! - [`webhook`]: a webhook receiver that records, verifies signatures
//!   independently, answers chosen statuses or holds requests;
//! - [`store_suite`]: run one store case against SQLite and Postgres
//!   ([`store_suite!`]);
//! - [`deploy`]: reading `deploy/` and the properties shipped Envoy configs keep;
//! - [`wait`]: [`eventually`] and its variants, the one way to wait: no
//!   test or helper writes its own deadline loop.
//!
//! Helpers panic on failure: this is test support.

pub mod api;
pub mod browser;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod deploy;
pub mod dpop;
pub mod echo;
pub mod envoy;
pub mod in_process;
pub mod keycloak;
pub mod oidc;
pub mod pg;
pub mod real_keycloak;
pub mod redis_server;
pub mod signin;
pub mod store_suite;
pub mod wait;
pub mod webhook;
pub mod wrapped_store;

pub use check::Req;
pub use wait::eventually;
