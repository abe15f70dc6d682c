//! Who a bearer token belongs to. The token is classified once, then each
//! kind takes one straight path:
//!
//! | kind | how it is recognised | path |
//! | --- | --- | --- |
//! | opaque PAT | starts with `pat.prefix` | hash → cache → store |
//! | local-JWT PAT (`--dev`) | HS256 header while `pat.issuer: local-jwt` | signature → registration |
//! | Keycloak-exchanged PAT | verified JWT with the PAT marker or exchange audience | deny-list → registration → owner (→ logout marks with `include_pats`) |
//! | login JWT | any other verified JWT | deny-list → logout marks |
//!
//! Every PAT then follows its owner (`pat.owner_sync`, [`Engine::follow_owner`]).
//!
//! Logout marks (OpenID Connect back-channel logout) apply only to issuers
//! with `backchannel_logout`; PATs only with its `include_pats: true`
//! (opaque ones by their owner and `created_at`).
//!
//! A JWT's `cnf` binding (DPoP key or client certificate) is checked right
//! after verification, on every request ([`super::binding`]).

use std::sync::Arc;

use super::binding::Presentation;
use super::decision::Denial;
use super::engine::Engine;
use crate::identity::{CredentialKind, Identity};
use crate::jwt::VerifiedJwt;
use crate::pat::{PatGrant, PatOutcome, PatRejection, exchanged};
use crate::revocation::{DenyCheck, JwtRevocation, logout};
use crate::store::{OwnerState, StoreError};

/// What a bearer token is.
enum Bearer {
    OpaquePat,
    LocalJwtPat,
    ExchangedPat(Arc<VerifiedJwt>),
    Login(Arc<VerifiedJwt>),
}

// === impl Engine ===

impl Engine {
    /// Verifies a bearer token and returns who it belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Denial> {
        self.authenticate_as(token, &Presentation::bearer()).await
    }

    /// Verifies a token presented as `p` says (a DPoP proof, a client
    /// certificate) and returns who it belongs to.
    pub async fn authenticate_as(
        &self,
        token: &str,
        p: &Presentation<'_>,
    ) -> Result<Arc<Identity>, Denial> {
        let bearer = self.classify(token).await?;
        match &bearer {
            Bearer::ExchangedPat(v) | Bearer::Login(v) => self.check_binding(v, token, p)?,
            // PATs are bearer tokens: nothing binds them to a key.
            Bearer::OpaquePat | Bearer::LocalJwtPat if p.dpop_proof.is_some() => {
                return Err(Denial::dpop(
                    "invalid_token",
                    "a personal access token is not DPoP-bound; send it as a Bearer token",
                ));
            }
            Bearer::OpaquePat | Bearer::LocalJwtPat => {}
        }
        match bearer {
            Bearer::OpaquePat => {
                let rec = pat_record(self.pats.validate(token).await)?;
                if self.verifier.logout_policy(&rec.user_issuer) == Some(true) {
                    let created = Some(rec.created_at.timestamp());
                    self.check_logout(&rec.user_issuer, None, &rec.user_id, created)
                        .await?;
                }
                self.follow_owner(&rec, pat_identity(&rec))
            }
            Bearer::LocalJwtPat => self.local_jwt_pat(token).await,
            Bearer::ExchangedPat(v) => {
                self.check_denylist(&v).await?;
                if self.logout_policy(&v) == Some(true) {
                    self.check_jwt_logout(&v).await?;
                }
                self.exchanged_pat(token, &v).await
            }
            Bearer::Login(v) => {
                self.check_denylist(&v).await?;
                if self.logout_policy(&v).is_some() {
                    self.check_jwt_logout(&v).await?;
                }
                Ok(v.identity.clone())
            }
        }
    }

    /// Decides the kind. Only a JWT is verified here (its claims decide
    /// between a login and an exchanged PAT); PATs are looked up later.
    async fn classify(&self, token: &str) -> Result<Bearer, Denial> {
        if token.starts_with(&self.pat_prefix) {
            return Ok(Bearer::OpaquePat);
        }
        if self.pats.is_local_jwt(token) {
            return Ok(Bearer::LocalJwtPat);
        }
        let verified = self.verifier.verify(token).await?;
        let is_pat = exchanged::is_pat_jwt(
            verified.token_use.as_deref(),
            &verified.audiences,
            &self.pat_marker_value,
            self.pat_exchange_audience.as_deref(),
        );
        Ok(match is_pat {
            true => Bearer::ExchangedPat(verified),
            false => Bearer::Login(verified),
        })
    }

    /// Refuses a deny-listed `jti`/`sid`. Runs after the verified-token
    /// cache, so a cached token is re-checked. Answers from memory; only
    /// when the deny set cannot answer (not loaded, overflowed) asks the store.
    async fn check_denylist(&self, v: &VerifiedJwt) -> Result<(), Denial> {
        let (jti, sid) = (v.jti.as_deref(), v.sid.as_deref());
        let denied = match self.denylist.check(jti, sid, crate::jwt::unix_now()) {
            DenyCheck::Clear => false,
            DenyCheck::Denied => true,
            DenyCheck::AskStore => {
                let store = self.pats.store();
                store
                    .is_jwt_denied(jti, sid, chrono::Utc::now())
                    .await
                    .map_err(store_failed)?
            }
        };
        match denied {
            true => Err(JwtRevocation::DenyListed.into()),
            false => Ok(()),
        }
    }

    /// `Some(include_pats)` when the token's issuer accepts back-channel logout.
    fn logout_policy(&self, v: &VerifiedJwt) -> Option<bool> {
        let issuer = v.identity.issuer.as_deref()?;
        self.verifier.logout_policy(issuer)
    }

    async fn check_jwt_logout(&self, v: &VerifiedJwt) -> Result<(), Denial> {
        let id = &v.identity;
        let issuer = id.issuer.as_deref().unwrap_or_default();
        self.check_logout(issuer, v.sid.as_deref(), &id.subject, v.issued_at)
            .await
    }

    /// Refuses a token whose session (`sid`) or subject (`sub`, issued at or
    /// before the logout) was logged out. Answers from memory; only when the
    /// marks cannot answer (not loaded, overflowed) asks the store.
    async fn check_logout(
        &self,
        issuer: &str,
        sid: Option<&str>,
        sub: &str,
        iat: Option<i64>,
    ) -> Result<(), Denial> {
        let now = crate::jwt::unix_now();
        let logged_out = match self.denylist.logout().check(issuer, sid, sub, iat, now) {
            DenyCheck::Clear => false,
            DenyCheck::Denied => true,
            DenyCheck::AskStore => {
                let store = self.pats.store();
                let marks = store
                    .logout_marks_for(issuer, sid, sub, chrono::Utc::now())
                    .await
                    .map_err(store_failed)?;
                logout::any_refuses(&marks, iat, now)
            }
        };
        match logged_out {
            true => Err(JwtRevocation::LoggedOut.into()),
            false => Ok(()),
        }
    }

    /// A PAT-marked JWT: must be registered (kind `jwt`), active, and owned
    /// by the token's (`iss`, `sub`). Any other outcome is a denial.
    async fn exchanged_pat(&self, token: &str, v: &VerifiedJwt) -> Result<Arc<Identity>, Denial> {
        let hash = crate::jwt::token_hash(token);
        let outcome = self
            .pats
            .validate_jwt(hash, v.jti.as_deref())
            .await
            .map_err(store_failed)?;
        let rec = match outcome {
            Ok(rec) => rec,
            Err(PatRejection::Unknown | PatRejection::Malformed) => {
                return Err(JwtRevocation::Unregistered.into());
            }
            Err(other) => return Err(other.into()),
        };
        // Owned by the token's (iss, sub): the same sub at another issuer is another user.
        let owner = *rec.user_id == *v.identity.subject
            && !rec.user_issuer.is_empty()
            && v.identity.issuer.as_deref() == Some(&*rec.user_issuer);
        if !owner {
            tracing::warn!(token_id = %rec.id, jti = ?v.jti, "JWT PAT registered to another user; denying");
            return Err(JwtRevocation::Unregistered.into());
        }
        self.follow_owner(&rec, exchanged::identity(&rec, &v.identity))
    }

    /// `pat.owner_sync`: a disabled owner's PATs are refused (until
    /// re-enabled), a deleted owner's too (their revocation follows), and a
    /// PAT's scopes are cut to what its owner holds now. One in-memory
    /// lookup; an owner not synced (yet) leaves the PAT as it is.
    ///
    /// First of all, the owner's issuer must still be configured
    /// ([`Engine::owner_issuer_trusted`]): removing an issuer from `issuers`
    /// (reload or restart) cuts off its users' PATs.
    /// An unowned pre-0004 row (empty issuer) is not attributable and passes.
    fn follow_owner(&self, rec: &PatGrant, mut id: Identity) -> Result<Arc<Identity>, Denial> {
        if !rec.user_issuer.is_empty() && !self.owner_issuer_trusted(&rec.user_issuer) {
            return Err(PatRejection::OwnerIssuerRemoved.into());
        }
        let Some(owner) = self.pats.owners().get(&rec.user_issuer, &rec.user_id) else {
            return Ok(Arc::new(id));
        };
        match owner.state {
            OwnerState::Disabled => return Err(PatRejection::OwnerDisabled.into()),
            OwnerState::Deleted => return Err(PatRejection::Revoked.into()),
            OwnerState::Enabled => {}
        }
        if let Some(current) = &owner.scopes {
            id.scopes = crate::scope::intersect(&id.scopes, current).into();
        }
        Ok(Arc::new(id))
    }

    /// `pat.issuer: local-jwt` (dev only): an HS256 JWT signed with
    /// `pat.local_jwt_key` is a PAT only while its hash is registered and
    /// unrevoked.
    async fn local_jwt_pat(&self, token: &str) -> Result<Arc<Identity>, Denial> {
        let outcome = self
            .pats
            .validate_local_jwt(token)
            .await
            .map_err(store_failed)?
            // Classified as local-jwt, so `None` cannot happen; refuse anyway.
            .unwrap_or(Err(PatRejection::Malformed));
        let rec = pat_record(Ok(outcome))?;
        self.follow_owner(&rec, pat_identity(&rec))
    }
}

/// An opaque or local-JWT PAT's lookup, as a record or a denial.
fn pat_record(r: Result<PatOutcome, StoreError>) -> Result<Arc<PatGrant>, Denial> {
    Ok(r.map_err(store_failed)??)
}

/// A store failure during a Check: logged and counted here, where the
/// decision is made, then a 503.
fn store_failed(e: StoreError) -> Denial {
    tracing::warn!(error = %e, "token store error during Check; denying with 503");
    crate::metrics::global().backend_error("store");
    Denial::from(e)
}

fn pat_identity(rec: &PatGrant) -> Identity {
    Identity {
        kind: CredentialKind::Pat,
        subject: rec.user_id.to_string(),
        username: Some(rec.username.to_string()).filter(|u| !u.is_empty()),
        email: None,
        client: None,
        scopes: rec.scopes.clone(),
        token_id: Some(rec.id.to_string()),
        // `x-auth-issuer`: the owner's; none for an unowned (pre-0004) row.
        issuer: Some(rec.user_issuer.clone()).filter(|i| !i.is_empty()),
        expires_at: rec.expires_at.timestamp(),
        claims: Vec::new(),
        rendered: Default::default(),
    }
}
