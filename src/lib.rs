//! portcullis: an Envoy external-authorization (ext_authz) gRPC sidecar.
//!
//! It validates Keycloak-signed JWTs and personal access tokens (PATs),
//! enforces per-route scopes, and tells Envoy who the caller is through
//! `x-auth-*` headers. Every failure is a denial: the Check handler never
//! returns a gRPC error and never a response without a status.
//!
//! # Layout
//!
//! The path of one Check, top to bottom:
//!
//! - [`listen::Coalescing`]: the accepted gRPC connection (answers batched
//!   into few writes).
//! - [`authz::input`]: the Check codec; decodes only what is read into
//!   [`authz::CheckInput`], strings sliced from the received frame.
//! - [`authz::service`]: tonic `Authorization/Check`; catches panics as denials.
//! - [`authz::request`]: reads method, host, path, `context_extensions` and
//!   the bearer credential (from `headers` or raw `header_map`).
//! - [`authz::engine`]: [`authz::Engine::decide`], the one Check entry:
//!   route → credential → [`identity::Identity`] → scopes →
//!   [`authz::Checked`] (decision and route).
//!   - [`policy`]: the compiled router (host, method, path normalisation)
//!     and [`policy::ScopeRequirements`].
//!   - [`authz::authenticate`]: classifies a bearer token once (opaque PAT,
//!     local-JWT PAT, Keycloak-exchanged PAT, login JWT), one path each:
//!     - [`pat`]: PAT format, hashing, the cached validator;
//!     - [`jwt`]: issuer keys (discovery, JWKS, refetch; each key parsed
//!       into aws-lc once), RFC 8725 checks, a common token's claims read
//!       once (`jwt::payload`), verified-token cache keyed by
//!       keyed BLAKE3;
//!     - [`revocation`]: the in-memory JWT deny set and back-channel
//!       logout marks (and the revoke path);
//!     - [`store`]: SQLite or Postgres behind PAT and deny-list lookups;
//!     - [`dpop`]: a bound token's proof (DPoP, client certificate),
//!       checked by [`authz::binding`] on every request.
//! - [`authz::deny`]: the one place an error becomes a [`authz::Denial`].
//! - [`authz::response`]: the one place a decision becomes a `CheckResponse`.
//!
//! Around it:
//!
//! - [`config`]: gathers the sections their owners define, layered
//!   loading, `validate()`; [`config_error`] is below every section.
//! - [`scope`]: the `resource:action` scope grammar and wildcards.
//! - [`api`]: HTTP `/healthz`, `/readyz`, the REST token API, the `/ui`
//!   page (signing in at Keycloak as an in-page PKCE client), OpenID Connect back-channel logout (`POST /backchannel-logout`,
//!   validated by [`jwt`], recorded through [`revocation`]), the gRPC
//!   `TokenService`, and the `--dev` issuer endpoints.
//! - [`tokens`]: token management shared by REST, gRPC and the page: who
//!   may call, issuers (opaque, Keycloak exchange, local JWT), reuse detection.
//! - [`notify`]: token events to the outside: the webhook dispatcher
//!   (fan-out, leases in the store, signed POSTs, backoff, dead letters)
//!   and the expiry notices, reading the outbox the store writes with
//!   every token change ([`store::events`]).
//! - [`audit`]: the audit trail's config, client addresses behind trusted
//!   proxies, page cursors and the retention purge.
//! - [`owners`]: PATs follow their owner (`pat.owner_sync`): Keycloak's
//!   admin REST API read on a schedule by the replica holding the store
//!   lease, changes stored and propagated; Check reads the result from
//!   memory ([`pat::OwnerStates`]).
//! - [`dev`]: the built-in dev issuer and `dev-token`.
//! - [`metrics`]: Prometheus metrics served at `/metrics`.
//! - [`server`]: wiring, listeners, background tasks, graceful shutdown;
//!   [`listen`]: `listen.grpc` as TCP or a Unix socket.
//! - [`reload`]: hot reload of issuers and policy (file change, SIGHUP).
//! - [`cli`]: command line, including `login`/`logout` (device grant,
//!   client credentials) and `token … --api` as the logged-in user;
//!   [`telemetry`]: logging.
//!
//! The load generator is not in this crate: it is the workspace member
//! `benches/loadgen` (binary `portcullis-bench`).

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod dev;
pub mod dpop;
pub mod identity;
pub mod jwt;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod owners;
pub mod pat;
pub mod policy;
pub mod reload;
pub mod revocation;
pub mod scope;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tokens;
