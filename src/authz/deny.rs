//! The one place an error becomes a [`Denial`]. Anything that cannot be
//! classified is a denial too: there is no error path that allows.

use super::decision::Denial;
use crate::jwt::JwtError;
use crate::pat::PatRejection;
use crate::policy::ScopeDenial;
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

impl From<PatRejection> for Denial {
    fn from(r: PatRejection) -> Denial {
        match r {
            PatRejection::Malformed => Denial::unauthenticated("invalid_token", "malformed token"),
            PatRejection::Unknown => Denial::unauthenticated("invalid_token", "unknown token"),
            PatRejection::Expired => Denial::unauthenticated("invalid_token", "token expired"),
            PatRejection::Revoked => Denial::unauthenticated("invalid_token", "token revoked"),
            PatRejection::OwnerDisabled => {
                Denial::unauthenticated("invalid_token", "owner disabled")
            }
            PatRejection::OwnerIssuerRemoved => Denial::unauthenticated(
                "invalid_token",
                "token owner's issuer is no longer trusted",
            ),
        }
    }
}

/// RFC 6750 §3: the 403 names the scopes the resource needs.
impl From<ScopeDenial> for Denial {
    fn from(d: ScopeDenial) -> Denial {
        Denial::insufficient_scope(&d.required)
    }
}

impl From<JwtRevocation> for Denial {
    fn from(r: JwtRevocation) -> Denial {
        match r {
            JwtRevocation::DenyListed => Denial::unauthenticated("invalid_token", "token revoked"),
            JwtRevocation::LoggedOut => {
                Denial::unauthenticated("invalid_token", "session logged out")
            }
            JwtRevocation::Unregistered => {
                Denial::unauthenticated("invalid_token", "unregistered token")
            }
        }
    }
}

/// Pure mapping: the engine logs and counts the failure where it decides.
impl From<StoreError> for Denial {
    fn from(_: StoreError) -> Denial {
        Denial::unavailable("token store unavailable; try again")
    }
}
