//! Sender-constrained tokens: DPoP proofs (RFC 9449) and certificate-bound
//! tokens (RFC 8705).
//!
//! A bound token carries `cnf.jkt` (the RFC 7638 thumbprint of the key the
//! client holds) or `cnf["x5t#S256"]` (the SHA-256 thumbprint of its TLS
//! client certificate). Such a token is only good together with proof of
//! that key: a DPoP proof JWT signed with it ([`proof`]), or the certificate
//! Envoy saw on the mutual-TLS connection ([`cert`]). The verified-token
//! cache may hold the token; the proof is checked on every request.

pub mod cert;
pub mod config;
pub mod htu;
pub mod proof;
pub mod replay;

pub use config::{DpopConfig, DpopMode};
pub use proof::{ProofError, ProofInput, VerifiedProof};
pub use replay::ReplayCache;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// base64url(SHA-256(bytes)) without padding: `ath`, `jkt` and `x5t#S256`
/// all take this form.
pub fn sha256_b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}
