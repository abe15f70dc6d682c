//! Sender-constrained tokens at Check (RFC 9449 DPoP, RFC 8705 mTLS): a
//! token bound to a key is good only with proof of that key, every time.
//! The verified-token cache may hold the token; the proof never is.

use super::decision::Denial;
use super::engine::Engine;
use crate::dpop::{self, DpopMode, ProofError, ProofInput};
use crate::jwt::VerifiedJwt;

/// How a token reached us, as far as binding is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presentation<'a> {
    /// The `DPoP` header, when the scheme was `Authorization: DPoP`.
    pub dpop_proof: Option<&'a str>,
    /// Request method, scheme, host and path (with query) as Envoy saw them.
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Envoy's `source.certificate` (URL-encoded PEM); empty without mTLS
    /// or without `include_peer_certificate`.
    pub certificate: &'a str,
}

impl Presentation<'_> {
    /// A plain bearer token with no request around it (the token API).
    pub fn bearer() -> Presentation<'static> {
        Presentation::default()
    }
}

// === impl Engine ===

impl Engine {
    /// Checks a verified JWT's `cnf` against how it was presented, and the
    /// issuer's `dpop` setting.
    pub(super) fn check_binding(
        &self,
        v: &VerifiedJwt,
        token: &str,
        p: &Presentation<'_>,
    ) -> Result<(), Denial> {
        if let Some(x5t) = v.cnf.x5t_s256.as_deref() {
            dpop::cert::check(x5t, p.certificate)
                .map_err(|e| Denial::unauthenticated("invalid_token", e.to_string()))?;
        }
        match (v.cnf.jkt.as_deref(), p.dpop_proof) {
            (Some(_), Some(_)) if v.dpop == DpopMode::Off => Err(Denial::dpop(
                "invalid_token",
                "DPoP is not enabled for this token's issuer",
            )),
            (Some(jkt), Some(proof)) => self.check_proof(jkt, proof, token, p),
            (Some(_), None) => Err(Denial::dpop("invalid_token", "token is DPoP-bound")),
            (None, Some(_)) => Err(Denial::dpop("invalid_token", "token is not DPoP-bound")),
            (None, None) if v.dpop == DpopMode::Required => Err(Denial::dpop(
                "invalid_token",
                "this issuer's tokens must be DPoP-bound and sent with a DPoP proof",
            )),
            (None, None) => Ok(()),
        }
    }

    fn check_proof(
        &self,
        jkt: &str,
        proof: &str,
        token: &str,
        p: &Presentation<'_>,
    ) -> Result<(), Denial> {
        let url = dpop::htu::request_url(p.scheme, p.host, p.path)
            .ok_or_else(|| proof_denial(ProofError::Url))?;
        let input = ProofInput {
            proof,
            method: p.method,
            url: &url,
            access_token: token,
            expected_jkt: jkt,
            now: crate::jwt::unix_now(),
        };
        let dpop = &self.dpop;
        dpop::proof::verify(&input, &dpop.config, &dpop.replay)
            .map(|_| ())
            .map_err(proof_denial)
    }
}

fn proof_denial(e: ProofError) -> Denial {
    Denial::dpop("invalid_dpop_proof", e.to_string())
}
