//! The HTTP side (`listen.http`): health probes and, in `--dev`, the
//! built-in issuer's discovery and JWKS. The token REST API and web page
//! join here.

mod http;

pub use http::{HttpState, router};
