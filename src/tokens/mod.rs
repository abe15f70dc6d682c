//! Token management, shared by the REST API, the gRPC `TokenService` and the
//! web page: who may do what, and how a PAT is minted by each `pat.issuer`.
//!
//! Access rules (the same for every transport):
//! - managing (create, list, get, revoke, rotate) needs a credential of a
//!   kind in `api.manage_kinds` (default: user login JWTs) holding
//!   `api.manage_scope` (default `tokens:manage`);
//! - a PAT may only read itself (`GET self`) and rotate itself, and its
//!   successor never expires later than `pat.max_lifetime_days` after the
//!   rotation chain's first token was created ([`rotation`]);
//! - a user sees and revokes only their own tokens: another user's id
//!   answers 404, exactly like an id that does not exist, so ids leak nothing;
//! - a user is (issuer, `sub`): the same `sub` at another issuer is another
//!   user, and a token with no recorded issuer (older than migration 4, not
//!   claimed at start-up) belongs to nobody;
//! - `/admin/users/{sub}/tokens` needs `api.admin_scope` (`tokens:admin`);
//!   `?issuer=` picks the issuer, required when several are configured;
//! - a new PAT's scopes must lie within the caller's effective scopes and
//!   within `pat.grantable_scopes`, and never name `tokens:*`.
//!
//! Every revocation goes through [`Revoker`].

mod caller;
mod config;
mod error;
pub mod exchange;
mod inventory;
mod lifecycle;
pub mod resource_metadata;
pub mod reuse;
mod rotation;
mod ui_config;
mod view;

use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use caller::{Caller, authenticate, bearer_token};
pub use config::{ApiConfig, LeakSecret};
pub use error::ApiError;
pub use exchange::ExchangeClient;
pub use inventory::{InventoryPage, InventoryParams};
pub use lifecycle::{AuditPage, AuditParams, DeliveriesPage, DeliveryParams, LeakAuth, LeakReport};
pub use resource_metadata::ResourceMetadataConfig;
pub use ui_config::{UiConfig, UiOidcConfig};
pub use view::{CreateInput, CreatedView, RotateInput, TokenView, expiry};

use crate::authz::Engine;
use crate::pat::{self, CreateRequest, Minted, PatConfig, PatIssuerKind, Prepared, format};
use crate::revocation::Revoker;
use crate::scope;
use crate::store::{Store, TokenKind, TokenRecord};

/// The token-management service. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    engine: Arc<ArcSwap<Engine>>,
    revoker: Revoker,
    pat: Arc<PatConfig>,
    api: Arc<ApiConfig>,
    exchange: Option<ExchangeClient>,
    dev: bool,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.pat.issuer)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

/// `GET /api/v1/meta`: what the page needs to render.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub issuer: PatIssuerKind,
    pub prefix: String,
    pub grantable_scopes: Vec<String>,
    pub default_lifetime_days: u32,
    pub max_lifetime_days: u32,
    pub manage_scope: String,
    pub admin_scope: String,
    /// `--dev`: `POST /ui/dev-login` mints login tokens.
    pub dev: bool,
    pub caller: Option<CallerMeta>,
}

/// The caller, as `GET /api/v1/meta` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct CallerMeta {
    pub subject: String,
    /// The caller's issuer (for a PAT: its owner's).
    pub issuer: String,
    pub username: Option<String>,
    pub kind: String,
    pub scopes: Vec<String>,
    pub can_manage: bool,
    pub is_admin: bool,
    /// Scopes this caller may put on a new PAT (checkbox list).
    pub offerable_scopes: Vec<String>,
}

/// `DELETE /api/v1/admin/users/{sub}/tokens` answer.
#[derive(Debug, Clone, Serialize)]
pub struct RevokedAll {
    pub revoked: usize,
    pub tokens: Vec<TokenView>,
}

impl TokenService {
    /// Builds the service; fails if `pat.issuer: keycloak-exchange` lacks a key.
    pub fn new(
        engine: Arc<ArcSwap<Engine>>,
        revoker: Revoker,
        pat: PatConfig,
        api: ApiConfig,
        dev: bool,
    ) -> anyhow::Result<TokenService> {
        let exchange = match pat.issuer {
            PatIssuerKind::KeycloakExchange => Some(ExchangeClient::new(&pat.exchange)?),
            _ => None,
        };
        Ok(TokenService {
            engine,
            revoker,
            pat: Arc::new(pat),
            api: Arc::new(api),
            exchange,
            dev,
        })
    }

    /// Whether `--dev` is on.
    pub fn dev(&self) -> bool {
        self.dev
    }

    /// Whether `/ui` is served.
    pub fn ui_enabled(&self) -> bool {
        self.api.ui.enabled
    }

    fn store(&self) -> Store {
        self.engine.load().pats().store().clone()
    }

    /// Verifies the `Authorization` header value.
    pub async fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let engine = self.engine.load_full();
        authenticate(&engine, authorization).await
    }

    fn holds(c: &Caller, required: &str) -> bool {
        scope::any_satisfies(c.identity.scopes.iter().map(String::as_str), required)
    }

    fn kind_allowed(&self, c: &Caller) -> Result<(), ApiError> {
        if c.is_pat() {
            return Err(ApiError::insufficient_scope(
                "a personal access token cannot manage tokens; it may only read itself (GET /api/v1/tokens/self) and rotate itself",
            ));
        }
        if !self.api.manage_kinds.contains(&c.identity.kind) {
            let accepted: Vec<&str> = self.api.manage_kinds.iter().map(|k| k.as_str()).collect();
            return Err(ApiError::insufficient_scope(format!(
                "credential kind {} cannot manage tokens (api.manage_kinds: {})",
                c.identity.kind,
                accepted.join(", ")
            )));
        }
        Ok(())
    }

    fn require_manage(&self, c: &Caller) -> Result<(), ApiError> {
        self.kind_allowed(c)?;
        if !Self::holds(c, &self.api.manage_scope) {
            return Err(ApiError::insufficient_scope(format!(
                "managing tokens requires the scope {}",
                self.api.manage_scope
            )));
        }
        Ok(())
    }

    fn require_admin(&self, c: &Caller) -> Result<(), ApiError> {
        self.kind_allowed(c)?;
        if !Self::holds(c, &self.api.admin_scope) {
            return Err(ApiError::insufficient_scope(format!(
                "this call requires the scope {}",
                self.api.admin_scope
            )));
        }
        Ok(())
    }

    /// The caller's own token `id`; another user's is reported as missing.
    /// The owner is (issuer, sub); an unowned row (empty issuer) is nobody's.
    async fn own(&self, c: &Caller, id: &str) -> Result<TokenRecord, ApiError> {
        let id = Uuid::parse_str(id).map_err(|_| ApiError::not_found())?;
        match self.store().get(id).await? {
            Some(r) if owned_by(&r, c.issuer(), c.subject()) => Ok(r),
            _ => Err(ApiError::not_found()),
        }
    }

    /// The issuer an admin call means: `?issuer=` when given, else the one
    /// configured issuer; with several, the caller must say which, so an
    /// admin never acts on a same-`sub` user of another issuer by accident.
    /// Listed tokens, flagged when their owner's issuer is no longer
    /// configured (Check refuses them; they stay listed to be revoked).
    pub(crate) fn views(&self, recs: &[TokenRecord], now: DateTime<Utc>) -> Vec<TokenView> {
        let engine = self.engine.load();
        recs.iter()
            .map(|r| TokenView::of(r, now).flag_issuer(|i| engine.owner_issuer_trusted(i)))
            .collect()
    }

    fn admin_issuer(&self, given: Option<&str>) -> Result<String, ApiError> {
        if let Some(i) = given {
            if i.is_empty() {
                return Err(ApiError::invalid_request("issuer: must not be empty"));
            }
            return Ok(i.to_owned());
        }
        let engine = self.engine.load();
        let mut names: Vec<&str> = engine.verifier().issuer_names().collect();
        match names.as_slice() {
            [one] => Ok((*one).to_owned()),
            _ => {
                names.sort_unstable();
                Err(ApiError::invalid_request(format!(
                    "issuer: required when {} issuers are configured (one of: {})",
                    names.len(),
                    names.join(", ")
                )))
            }
        }
    }

    /// `POST /api/v1/tokens`.
    pub async fn create(&self, c: &Caller, input: CreateInput) -> Result<CreatedView, ApiError> {
        self.require_manage(c)?;
        let now = Utc::now();
        let req = CreateRequest {
            user_id: c.subject().to_owned(),
            user_issuer: c.issuer().to_owned(),
            username: c.identity.username.clone().unwrap_or_default(),
            name: input.name,
            description: input.description,
            scopes: input.scopes,
            expires_at: expiry(
                input.expires_in_days,
                input.expires_at,
                now,
                self.pat.max_lifetime_days,
            )?,
            rotated_from: None,
        };
        self.mint_and_store(c, req, now).await
    }

    /// `GET /api/v1/tokens`.
    pub async fn list(&self, c: &Caller) -> Result<Vec<TokenView>, ApiError> {
        self.require_manage(c)?;
        let now = Utc::now();
        let recs = self.store().list_for_user(c.issuer(), c.subject()).await?;
        Ok(recs.iter().map(|r| TokenView::of(r, now)).collect())
    }

    /// `GET /api/v1/tokens/{id}`.
    pub async fn get(&self, c: &Caller, id: &str) -> Result<TokenView, ApiError> {
        self.require_manage(c)?;
        Ok(TokenView::of(&self.own(c, id).await?, Utc::now()))
    }

    /// `DELETE /api/v1/tokens/{id}` (idempotent).
    pub async fn revoke(&self, c: &Caller, id: &str) -> Result<TokenView, ApiError> {
        self.require_manage(c)?;
        let rec = self.own(c, id).await?;
        let revoked = self
            .revoker
            .revoke_by(rec.id, &c.cause("api"))
            .await?
            .ok_or_else(ApiError::not_found)?;
        tracing::info!(token_id = %rec.id, user = %rec.user_id, "token revoked through the API");
        Ok(TokenView::of(&revoked, Utc::now()))
    }

    /// `POST /api/v1/tokens/{id}/rotate`: a login token with the manage
    /// scope rotates any of its owner's tokens; a PAT only itself.
    pub async fn rotate(
        &self,
        c: &Caller,
        id: &str,
        input: RotateInput,
    ) -> Result<CreatedView, ApiError> {
        if c.is_pat() {
            if c.pat_id.map(|p| p.to_string()).as_deref() != Some(id) {
                return Err(ApiError::insufficient_scope(
                    "a personal access token may only rotate itself",
                ));
            }
        } else {
            self.require_manage(c)?;
        }
        let old = self.own(c, id).await?;
        let now = Utc::now();
        if old.revoked_at.is_some() {
            return Err(ApiError::conflict("token is revoked; it cannot be rotated"));
        }
        if old.expires_at <= now {
            return Err(ApiError::conflict(
                "token has expired; it cannot be rotated",
            ));
        }
        let max_days = self.pat.max_lifetime_days;
        let asked = expiry(input.expires_in_days, input.expires_at, now, max_days)?;
        let expires_at = match asked {
            Some(at) => at,
            // Same lifetime as the old token, within the current maximum.
            // Checked: stored dates and the configured limit are inputs too.
            None => {
                let max = TimeDelta::try_days(i64::from(max_days)).unwrap_or(TimeDelta::MAX);
                let life = (old.expires_at - old.created_at)
                    .max(TimeDelta::days(1))
                    .min(max);
                now.checked_add_signed(life).ok_or_else(|| {
                    ApiError::invalid_request(format!(
                        "expires_in_days: the old lifetime is out of range; give at most {max_days} (pat.max_lifetime_days)"
                    ))
                })?
            }
        };
        // A PAT renewing itself must not outlive its chain; a re-authenticated
        // owner could create a new token anyway.
        let expires_at = match c.is_pat() {
            true => {
                self.within_chain(&old, expires_at, asked.is_some(), now)
                    .await?
            }
            false => expires_at,
        };
        let req = CreateRequest {
            user_id: old.user_id.clone(),
            user_issuer: old.user_issuer.clone(),
            username: old.username.clone(),
            name: old.name.clone(),
            description: old.description.clone(),
            scopes: old.scopes.clone(),
            expires_at: Some(expires_at),
            rotated_from: Some(old.id),
        };
        let created = self.mint_and_store(c, req, now).await?;
        // The store revoked the old token in the rotation's transaction.
        // Announce it as it is now: a Check may have moved a legacy row to
        // its HMAC hash since `old` was read, and caches key it by that.
        let mut gone = vec![old];
        if let Ok(Some(cur)) = self.store().get(gone[0].id).await
            && cur.token_hash != gone[0].token_hash
        {
            gone.push(cur);
        }
        self.revoker.announce(&gone).await;
        Ok(created)
    }

    /// `GET /api/v1/tokens/self`: the PAT used on this call.
    pub async fn get_self(&self, c: &Caller) -> Result<TokenView, ApiError> {
        let Some(id) = c.pat_id else {
            return Err(ApiError::invalid_request(format!(
                "GET /api/v1/tokens/self describes the personal access token used on the call; this call used a {} credential",
                c.identity.kind
            )));
        };
        let rec = self
            .store()
            .get(id)
            .await?
            .ok_or_else(|| ApiError::invalid_token("unknown token"))?;
        Ok(TokenView::of(&rec, Utc::now()))
    }

    /// `GET /api/v1/admin/users/{sub}/tokens[?issuer=ISS]`.
    pub async fn admin_list(
        &self,
        c: &Caller,
        sub: &str,
        issuer: Option<&str>,
    ) -> Result<Vec<TokenView>, ApiError> {
        self.require_admin(c)?;
        let issuer = self.admin_issuer(issuer)?;
        let now = Utc::now();
        let recs = self.store().list_for_user(&issuer, sub).await?;
        Ok(self.views(&recs, now))
    }

    /// `DELETE /api/v1/admin/users/{sub}/tokens[?issuer=ISS]`: revokes
    /// every active token.
    pub async fn admin_revoke(
        &self,
        c: &Caller,
        sub: &str,
        issuer: Option<&str>,
    ) -> Result<RevokedAll, ApiError> {
        self.require_admin(c)?;
        let issuer = self.admin_issuer(issuer)?;
        let recs = self
            .revoker
            .revoke_all_by(&issuer, sub, &c.cause("admin"))
            .await?;
        tracing::info!(
            user = %sub,
            issuer = %issuer,
            by = %c.subject(),
            revoked = recs.len(),
            "admin revoked every token of a user"
        );
        let now = Utc::now();
        Ok(RevokedAll {
            revoked: recs.len(),
            tokens: recs.iter().map(|r| TokenView::of(r, now)).collect(),
        })
    }

    /// `GET /api/v1/meta`: settings, and the caller when one is given.
    pub fn meta(&self, c: Option<&Caller>) -> Meta {
        Meta {
            issuer: self.pat.issuer,
            prefix: self.pat.prefix.clone(),
            grantable_scopes: self.pat.grantable_scopes.clone(),
            default_lifetime_days: self.pat.default_lifetime_days,
            max_lifetime_days: self.pat.max_lifetime_days,
            manage_scope: self.api.manage_scope.clone(),
            admin_scope: self.api.admin_scope.clone(),
            dev: self.dev,
            caller: c.map(|c| CallerMeta {
                subject: c.subject().to_owned(),
                issuer: c.issuer().to_owned(),
                username: c.identity.username.clone(),
                kind: c.identity.kind.as_str().to_owned(),
                scopes: c.identity.scopes.to_vec(),
                can_manage: self.require_manage(c).is_ok(),
                is_admin: self.require_admin(c).is_ok(),
                offerable_scopes: offerable(&self.pat.grantable_scopes, &c.identity.scopes),
            }),
        }
    }

    /// Rules, the caller's own scopes, then mint per `pat.issuer` and store.
    async fn mint_and_store(
        &self,
        c: &Caller,
        req: CreateRequest,
        now: DateTime<Utc>,
    ) -> Result<CreatedView, ApiError> {
        let store = self.store();
        let p = pat::prepare(&store, &self.pat, req, now).await?;
        for s in &p.scopes {
            if !Self::holds(c, s) {
                return Err(ApiError::insufficient_scope(format!(
                    "scopes: {s:?} is not within your own scopes"
                )));
            }
        }
        let minted = match self.pat.issuer {
            PatIssuerKind::Opaque => {
                let raw = format::generate(&self.pat.prefix);
                Minted {
                    display_hint: format::display_hint(&self.pat.prefix, &raw),
                    raw,
                    kind: TokenKind::Opaque,
                    jti: None,
                    expires_at: None,
                }
            }
            PatIssuerKind::LocalJwt => self.mint_local(&p, now)?,
            PatIssuerKind::KeycloakExchange => self.mint_exchanged(c).await?,
        };
        let hasher = self.engine.load().pats().hasher().clone();
        let reason = if p.req.rotated_from.is_some() {
            "rotation"
        } else {
            "api"
        };
        let (raw, rec) =
            pat::store_minted(&store, &hasher, p, minted, now, &c.cause(reason)).await?;
        self.revoker.announce_created(&rec).await;
        Ok(CreatedView::of(raw, &rec))
    }

    fn mint_local(&self, p: &Prepared, now: DateTime<Utc>) -> Result<Minted, ApiError> {
        let engine = self.engine.load();
        let lj = engine
            .pats()
            .local_jwt()
            .ok_or_else(|| ApiError::internal("pat.local_jwt_key is not loaded"))?;
        let jti = Uuid::new_v4().to_string();
        let raw = lj
            .mint(&p.req.user_id, &p.scopes, &jti, now, p.expires_at)
            .map_err(|e| ApiError::internal(format!("signing a local-jwt PAT failed: {e}")))?;
        Ok(Minted {
            raw,
            kind: TokenKind::Jwt,
            display_hint: jwt_hint(&jti),
            jti: Some(jti),
            expires_at: None,
        })
    }

    async fn mint_exchanged(&self, c: &Caller) -> Result<Minted, ApiError> {
        let ex = self
            .exchange
            .as_ref()
            .ok_or_else(|| ApiError::internal("pat.exchange is not configured"))?;
        let jwt = ex.exchange(c.bearer()).await?;
        let engine = self.engine.load_full();
        let v = engine.verifier().verify(&jwt).await.map_err(|e| {
            ApiError::exchange_failed(
                None,
                format!("the token Keycloak returned failed verification: {e}"),
            )
        })?;
        if v.identity.subject != c.subject() || v.identity.issuer.as_deref() != Some(c.issuer()) {
            return Err(ApiError::exchange_failed(
                None,
                "the token Keycloak returned is for another subject or issuer",
            ));
        }
        let jti = v.jti.clone().filter(|j| !j.is_empty()).ok_or_else(|| {
            ApiError::exchange_failed(None, "the token Keycloak returned has no jti")
        })?;
        let exp = DateTime::from_timestamp(v.identity.expires_at, 0).ok_or_else(|| {
            ApiError::exchange_failed(None, "the token Keycloak returned has a bad exp")
        })?;
        Ok(Minted {
            raw: jwt,
            kind: TokenKind::Jwt,
            display_hint: jwt_hint(&jti),
            jti: Some(jti.into()),
            expires_at: Some(exp),
        })
    }
}

/// Is `r` owned by (`issuer`, `sub`)? A row without an issuer is nobody's.
fn owned_by(r: &TokenRecord, issuer: &str, sub: &str) -> bool {
    !r.user_issuer.is_empty() && r.user_issuer == issuer && r.user_id == sub
}

fn jwt_hint(jti: &str) -> String {
    let head: String = jti.chars().take(8).collect();
    format!("jwt:{head}…")
}

/// Scopes a caller may tick for a new PAT: grantable scopes the caller
/// holds, and the caller's scopes that are grantable; never `tokens:*`.
pub fn offerable(grantable: &[String], held: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let candidates = grantable
        .iter()
        .filter(|g| scope::any_satisfies(held.iter().map(String::as_str), g))
        .chain(
            held.iter()
                .filter(|h| scope::any_satisfies(grantable.iter().map(String::as_str), h)),
        );
    for s in candidates {
        if !scope::never_grantable(s) && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn offerable_scopes() {
        assert_eq!(
            offerable(
                &v(&["*:*"]),
                &v(&["api:read", "tokens:manage", "api:write"])
            ),
            v(&["api:read", "api:write"])
        );
        assert_eq!(
            offerable(&v(&["uploads:*", "*:read"]), &v(&["*:*"])),
            v(&["uploads:*", "*:read"])
        );
        assert_eq!(
            offerable(&v(&["uploads:*"]), &v(&["uploads:read", "reports:read"])),
            v(&["uploads:read"])
        );
    }
}
