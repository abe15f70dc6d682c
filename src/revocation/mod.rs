//! Revocation propagation: how a token revoked anywhere stops working here.
//!
//! Every revoke path (API, CLI, rotation, revoke-all, `revoke-jwt`) goes
//! through [`Revoker`]: store first, then this replica's caches, then the
//! bus. Two mechanisms carry it to the other replicas, layered:
//! - the bus ([`bus`], `revocation.kind`): `local` (in-process only) or
//!   `redis` pub/sub, milliseconds;
//! - the resync loop ([`resync`]): every `revocation.resync_interval`, and at
//!   once after the bus (re)connects, each replica asks the store what was
//!   revoked or deny-listed since its watermark. This bounds staleness when
//!   Redis is down or messages are lost.
//!
//! JWTs are revoked through a deny-list of `jti`/`sid` values
//! ([`denylist`]), held in memory so Check never queries the store for it;
//! OpenID Connect back-channel logouts leave per-issuer session and subject
//! marks ([`logout`]) that travel the same way.

pub mod bus;
pub mod denylist;
pub mod logout;
pub mod resync;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use bus::Bus;
pub use denylist::{DenyCheck, JwtDenyList};
pub use logout::LogoutMarks;
pub use resync::Resync;

use crate::config_error::{ConfigError, Problems};
use crate::pat::PatValidator;
use crate::store::{
    Cause, DenylistKind, LogoutClaims, LogoutMark, OwnerRecord, StoreError, TokenKind, TokenRecord,
};

/// Default Redis channel.
pub const DEFAULT_CHANNEL: &str = "portcullis:revocations";

/// `revocation:` config. `Debug` hides the Redis URL's password.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// `local` (in-process only) or `redis` (publish/subscribe across replicas).
    pub kind: RevocationKind,
    /// Redis URL when `kind: redis`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Redis pub/sub channel. Default `portcullis:revocations`.
    pub channel: String,
    /// How often the store is polled for revocations (bounded staleness). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// Most live JWT deny-list entries held in memory; past it, JWTs are
    /// checked against the store. Default 100000.
    pub jwt_denylist_capacity: usize,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            kind: RevocationKind::Local,
            redis_url: None,
            channel: DEFAULT_CHANNEL.into(),
            resync_interval: Duration::from_secs(5),
            jwt_denylist_capacity: 100_000,
        }
    }
}

/// `redis_url` may be `redis://:password@host:6379`: a config printed with
/// `{:?}` (startup errors, `ServeOptions`) must not show it.
impl std::fmt::Debug for RevocationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.redis_url.as_deref().map(crate::store::redact_url);
        f.debug_struct("RevocationConfig")
            .field("kind", &self.kind)
            .field("redis_url", &url)
            .field("channel", &self.channel)
            .field("resync_interval", &self.resync_interval)
            .field("jwt_denylist_capacity", &self.jwt_denylist_capacity)
            .finish()
    }
}

/// Revocation bus kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    Local,
    Redis,
}

impl RevocationConfig {
    /// Checks the values; each problem names its key.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        if self.kind == RevocationKind::Redis {
            match self.redis_url.as_deref().filter(|u| !u.is_empty()) {
                None => p.push(
                    "revocation.redis_url",
                    "required when revocation.kind is redis",
                ),
                // Never echo the URL: it may carry a password.
                Some(url) => p.check(
                    redis::Client::open(url).is_ok(),
                    "revocation.redis_url",
                    || "not a valid Redis URL (redis://host:port)".into(),
                ),
            }
            p.check(!self.channel.is_empty(), "revocation.channel", || {
                "must not be empty".into()
            });
        }
        p.check(
            self.resync_interval >= Duration::from_millis(50),
            "revocation.resync_interval",
            || "must be at least 50ms".into(),
        );
        p.check(
            self.jwt_denylist_capacity > 0,
            "revocation.jwt_denylist_capacity",
            || "must be >= 1".into(),
        );
        p.into_vec()
    }
}

/// Why a verified JWT is refused by revocation (mapped in `authz::deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtRevocation {
    /// Its `jti` or `sid` is deny-listed.
    #[error("token revoked")]
    DenyListed,
    /// A PAT-marked JWT that is not registered in `personal_access_tokens`.
    #[error("unregistered token")]
    Unregistered,
    /// Its session or subject was logged out (OpenID Connect back-channel logout).
    #[error("session logged out")]
    LoggedOut,
}

/// The one way tokens are revoked: store first, then this replica's
/// caches, then the bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Revoker {
    pats: Arc<PatValidator>,
    deny: Arc<JwtDenyList>,
    bus: Bus,
}

impl Revoker {
    /// A local-only revoker with its own deny set (tools, tests).
    pub fn new(pats: Arc<PatValidator>) -> Self {
        let deny = Arc::new(JwtDenyList::new(
            RevocationConfig::default().jwt_denylist_capacity,
        ));
        Revoker::with_parts(pats, deny, Bus::local())
    }

    /// The revoker for `revocation:` (publishes on Redis when configured).
    /// Must run inside a Tokio runtime; never touches the network here.
    pub fn for_config(cfg: &RevocationConfig, pats: Arc<PatValidator>) -> anyhow::Result<Self> {
        let deny = Arc::new(JwtDenyList::new(cfg.jwt_denylist_capacity));
        Ok(Revoker::with_parts(pats, deny, Bus::from_config(cfg)?))
    }

    /// Assembles a revoker from shared parts (the server).
    pub fn with_parts(pats: Arc<PatValidator>, deny: Arc<JwtDenyList>, bus: Bus) -> Self {
        Revoker { pats, deny, bus }
    }

    /// This replica's JWT deny set.
    pub fn denylist(&self) -> &Arc<JwtDenyList> {
        &self.deny
    }

    /// The bus revocations are published on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Propagates tokens already revoked in the store: marks them revoked
    /// here and publishes them. A JWT-kind PAT with a `jti` is also
    /// deny-listed by `jti` until its expiry, so replicas that cached it
    /// under another hash refuse it too.
    pub async fn announce(&self, records: &[TokenRecord]) {
        let now = Utc::now();
        let mut items = Vec::with_capacity(records.len());
        for r in records {
            self.pats.mark_revoked(&r.token_hash).await;
            items.push(bus::Item::Pat(r.token_hash));
            if r.kind == TokenKind::Jwt
                && let Some(jti) = r.jti.as_deref().filter(|j| bus::valid_value(j))
                && r.expires_at > now
            {
                let store = self.pats.store();
                if let Err(e) = store.deny_jwt(DenylistKind::Jti, jti, r.expires_at).await {
                    tracing::warn!(error = %e, token_id = %r.id, "deny-listing a revoked JWT PAT's jti failed");
                }
                let exp = r.expires_at.timestamp();
                self.deny
                    .insert(DenylistKind::Jti, jti, exp, now.timestamp());
                items.push(bus::Item::Deny {
                    kind: DenylistKind::Jti,
                    value: jti.to_owned(),
                    expires_at: exp,
                });
            }
        }
        self.bus.publish(&items).await;
    }

    /// A token was just stored: this replica's known-hash set learns it at
    /// once, the others through the bus (`new:`) or their resync loop.
    pub async fn announce_created(&self, rec: &TokenRecord) {
        self.pats.note_created(&rec.token_hash);
        self.bus.publish(&[bus::Item::New(rec.token_hash)]).await;
    }

    /// Revokes one token: store, then caches, then the bus (cause
    /// [`Cause::unspecified`]; product paths use [`Revoker::revoke_by`]).
    pub async fn revoke(&self, id: uuid::Uuid) -> Result<Option<TokenRecord>, StoreError> {
        self.revoke_by(id, &Cause::unspecified()).await
    }

    /// Revokes one token, recording `cause` with its `token.revoked` event.
    pub async fn revoke_by(
        &self,
        id: uuid::Uuid,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let rec = self.pats.store().revoke_by(id, Utc::now(), cause).await?;
        if let Some(r) = &rec {
            self.announce(std::slice::from_ref(r)).await;
        }
        Ok(rec)
    }

    /// Revokes every active token of a user (`issuer`, `sub`).
    pub async fn revoke_all(
        &self,
        issuer: &str,
        user_id: &str,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.revoke_all_by(issuer, user_id, &Cause::unspecified())
            .await
    }

    /// [`Revoker::revoke_all`], recording `cause` with its events.
    pub async fn revoke_all_by(
        &self,
        issuer: &str,
        user_id: &str,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let recs = self
            .pats
            .store()
            .revoke_all_for_user_by(issuer, user_id, Utc::now(), cause)
            .await?;
        self.announce(&recs).await;
        Ok(recs)
    }

    /// Deny-lists JWTs by `jti` or `sid` until `until`: store, then this
    /// replica's deny set, then the bus (cause [`Cause::unspecified`];
    /// product paths use [`Revoker::deny_jwt_by`]).
    pub async fn deny_jwt(
        &self,
        kind: DenylistKind,
        value: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.deny_jwt_by(kind, value, until, &Cause::unspecified())
            .await
    }

    /// [`Revoker::deny_jwt`], recording `cause` with its `jwt.revoked`
    /// audit event (written with the deny-list entry, one transaction).
    pub async fn deny_jwt_by(
        &self,
        kind: DenylistKind,
        value: &str,
        until: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<(), StoreError> {
        if !bus::valid_value(value) {
            return Err(StoreError::Other(format!(
                "{} must be 1-{} characters without control characters",
                kind.as_str(),
                bus::MAX_VALUE_LEN
            )));
        }
        if looks_like_jws(value) {
            // A pasted token instead of its claim: it would be stored in the
            // deny-list, its `jwt.revoked` event and that event's webhooks.
            return Err(StoreError::Other(format!(
                "{} looks like a whole token (three base64url segments); pass its {} claim,                  never the token",
                kind.as_str(),
                kind.as_str()
            )));
        }
        self.pats
            .store()
            .deny_jwt_by(kind, value, until, cause)
            .await?;
        let exp = until.timestamp();
        self.deny.insert(kind, value, exp, Utc::now().timestamp());
        tracing::info!(kind = kind.as_str(), value, until = %until, "JWT deny-listed");
        self.bus
            .publish(&[bus::Item::Deny {
                kind,
                value: value.to_owned(),
                expires_at: exp,
            }])
            .await;
        Ok(())
    }

    /// Records a back-channel logout: store (with its `jwt.logged_out`
    /// audit event: what the logout token said in `claims`, who sent it in
    /// `cause`), then this replica's marks, then the bus.
    pub async fn logout(
        &self,
        mark: LogoutMark,
        claims: &LogoutClaims,
        cause: &Cause,
    ) -> Result<(), StoreError> {
        self.pats
            .store()
            .mark_logout_by(&mark, claims, cause)
            .await?;
        let now = Utc::now().timestamp();
        self.deny.logout().apply(std::slice::from_ref(&mark), now);
        tracing::info!(
            issuer = %mark.issuer,
            kind = mark.kind.as_str(),
            value = %mark.value,
            until = %mark.expires_at,
            "back-channel logout recorded"
        );
        self.bus.publish(&[bus::Item::Logout(mark)]).await;
        Ok(())
    }

    /// A PAT owner's state changed (already in the store): this replica's
    /// owner states now, the others through a bus hint (they read the
    /// store).
    pub async fn owner_changed(&self, rec: &OwnerRecord) {
        self.pats.owners().apply(std::slice::from_ref(rec));
        let hint = bus::Item::Owner {
            issuer: rec.issuer.clone(),
            user_id: rec.user_id.clone(),
        };
        self.bus.publish(&[hint]).await;
    }
}

/// A JWS in compact form (`eyJ…` header, three base64url segments): what a
/// `jti` or `sid` never is (Keycloak's are UUIDs, with a prefix such as
/// `onrtac:`).
fn looks_like_jws(v: &str) -> bool {
    let mut parts = v.split('.');
    let segments = [parts.next(), parts.next(), parts.next()];
    parts.next().is_none()
        && v.starts_with("eyJ")
        && segments.iter().all(|p| {
            p.is_some_and(|p| {
                p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
}
