//! The one place an error becomes a [`Denial`]. Anything that cannot be
//! classified is a denial too: there is no error path that allows.

use super::decision::Denial;
use crate::jwt::JwtError;
use crate::pat::PatOutcome;
use crate::revocation::JwtRevocation;
use crate::store::StoreError;

impl From<JwtError> for Denial {
    fn from(e: JwtError) -> Denial {
        use JwtError::*;
        match e {
            KeysUnavailable => Denial::unavailable("signing keys are not available; try again"),
            Malformed(why) => {
                Denial::unauthenticated("invalid_token", format!("malformed token: {why}"))
            }
            Header(why) => {
                Denial::unauthenticated("invalid_token", format!("invalid token header: {why}"))
            }
            Claims(why) => {
                Denial::unauthenticated("invalid_token", format!("invalid token claims: {why}"))
            }
            UnknownIssuer => Denial::unauthenticated("invalid_token", "untrusted issuer"),
            AlgNotAllowed => {
                Denial::unauthenticated("invalid_token", "signing algorithm not allowed")
            }
            UnknownKey => Denial::unauthenticated("invalid_token", "unknown signing key"),
            KeyWithdrawn => {
                Denial::unauthenticated("invalid_token", "signing key no longer published")
            }
            KeyMismatch => {
                Denial::unauthenticated("invalid_token", "signing algorithm does not match the key")
            }
            BadSignature => Denial::unauthenticated("invalid_token", "invalid signature"),
            Expired => Denial::unauthenticated("invalid_token", "token expired"),
            NotYetValid => Denial::unauthenticated("invalid_token", "token not yet valid"),
            Audience => Denial::unauthenticated("invalid_token", "token audience not accepted"),
            TokenType => Denial::unauthenticated("invalid_token", "token type not accepted"),
        }
    }
}

impl From<PatOutcome> for Denial {
    fn from(o: PatOutcome) -> Denial {
        match o {
            // Only reached if a caller forgets to handle Valid: still a deny.
            PatOutcome::Valid(_) => Denial::unavailable("internal error"),
            PatOutcome::Malformed => Denial::unauthenticated("invalid_token", "malformed token"),
            PatOutcome::Unknown => Denial::unauthenticated("invalid_token", "unknown token"),
            PatOutcome::Expired => Denial::unauthenticated("invalid_token", "token expired"),
            PatOutcome::Revoked => Denial::unauthenticated("invalid_token", "token revoked"),
        }
    }
}

impl From<JwtRevocation> for Denial {
    fn from(r: JwtRevocation) -> Denial {
        match r {
            JwtRevocation::DenyListed => Denial::unauthenticated("invalid_token", "token revoked"),
            JwtRevocation::Unregistered => {
                Denial::unauthenticated("invalid_token", "unregistered token")
            }
        }
    }
}

impl From<StoreError> for Denial {
    fn from(e: StoreError) -> Denial {
        tracing::warn!(error = %e, "token store error during Check; denying with 503");
        crate::metrics::global().backend_error("store");
        Denial::unavailable("token store unavailable; try again")
    }
}
