//! Token lifecycle calls of [`TokenService`]: the audit trail, webhook
//! deliveries (admin), a PAT revoking itself, and leak reports.

use std::time::Instant;

use aws_lc_rs::hmac;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::{ApiError, Caller, TokenService, TokenView};
use crate::audit::Cursor;
use crate::pat::format;
use crate::store::{
    Actor, ActorKind, Cause, DeliveryQuery, DeliveryRecord, DeliveryState, EventKind, EventQuery,
    EventRecord,
};

/// Default and largest page sizes of the listings.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// `GET /api/v1/audit` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct AuditParams {
    /// Another user's events (`tokens:admin`): their `sub`.
    pub user: Option<String>,
    /// That user's issuer (default: the one configured issuer).
    pub issuer: Option<String>,
    /// One token's events (yours, or with `tokens:admin` anyone's).
    pub token_id: Option<String>,
    /// Only this event name.
    pub event: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A page of audit events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub events: Vec<EventRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/admin/webhooks/deliveries` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `dead`.
    pub state: Option<String>,
    /// A webhook key (its `name`, or `url-…`).
    pub webhook: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A page of deliveries, newest event first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveriesPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next_cursor: Option<String>,
}

/// Who reports leaked tokens. Its `Debug` never prints the presented
/// secret (a wrong one may be a real secret sent to the wrong place).
pub enum LeakAuth {
    /// An API caller; must hold `api.admin_scope`.
    Caller(Caller),
    /// A secret scanner presenting `api.leak_report_secret`.
    Secret {
        presented: String,
        client_addr: Option<String>,
    },
}

impl std::fmt::Debug for LeakAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeakAuth::Caller(c) => f.debug_tuple("Caller").field(c).finish(),
            LeakAuth::Secret { client_addr, .. } => f
                .debug_struct("Secret")
                .field("presented", &"<redacted>")
                .field("client_addr", client_addr)
                .finish(),
        }
    }
}

/// The answer to a leak report: the same whether any token existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeakReport {
    /// How many tokens the report carried.
    pub received: usize,
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::invalid_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

fn cursor(c: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    c.filter(|s| !s.is_empty())
        .map(Cursor::decode)
        .transpose()
        .map_err(|e| ApiError::invalid_request(e.to_string()))
}

/// Where another person acted from is theirs, not the token owner's: a
/// non-admin reading their trail sees who acted on their token (its
/// accountability) but not the address of an admin, a scanner or anyone
/// else; only their own calls keep `client_addr`.
fn hide_others_address(e: &mut EventRecord, c: &Caller) {
    let a = &e.actor;
    let own = a.subject == c.subject() && a.issuer == c.issuer();
    if !own {
        e.actor.client_addr = None;
    }
}

impl TokenService {
    /// The client address of a call on the HTTP port: `X-Forwarded-For`
    /// values and the TCP peer, read per `audit.trusted_proxies` and
    /// `audit.trusted_proxy_hops`.
    pub fn client_addr(
        &self,
        forwarded_for: &[&str],
        peer: Option<std::net::SocketAddr>,
    ) -> Option<String> {
        self.engine.load().client_addrs().http(forwarded_for, peer)
    }

    /// The same on the gRPC port (`audit.grpc_trusted_proxy_hops`).
    pub fn grpc_client_addr(
        &self,
        forwarded_for: &[&str],
        peer: Option<std::net::SocketAddr>,
    ) -> Option<String> {
        self.engine.load().client_addrs().grpc(forwarded_for, peer)
    }

    /// `GET /api/v1/audit`: the caller's own events (about their tokens or
    /// made by them); with `api.admin_scope`, `?user=` or `?token_id=`
    /// reach anyone's. Login tokens only, like the rest of token
    /// management.
    pub async fn audit(&self, c: &Caller, p: AuditParams) -> Result<AuditPage, ApiError> {
        self.require_manage(c)?;
        let admin = self.require_admin(c).is_ok();
        let limit = limit(p.limit)?;
        let token_id = p
            .token_id
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| ApiError::invalid_request("token_id: not a token id (uuid)"))?;
        if let Some(e) = p.event.as_deref()
            && EventKind::parse(e).is_none()
        {
            return Err(ApiError::invalid_request(format!(
                "event: unknown event {e:?}"
            )));
        }
        let own = (c.issuer().to_owned(), c.subject().to_owned());
        let party = match (p.user, admin) {
            (Some(user), true) => Some((self.admin_issuer(p.issuer.as_deref())?, user)),
            (Some(user), false)
                if user == own.1 && p.issuer.as_deref().is_none_or(|i| i == own.0) =>
            {
                Some(own)
            }
            (Some(_), false) => {
                return Err(ApiError::insufficient_scope(format!(
                    "another user's events require the scope {}",
                    self.api.admin_scope
                )));
            }
            // An admin asking about one token sees all of its events.
            (None, true) if token_id.is_some() => None,
            (None, _) => Some(own),
        };
        let q = EventQuery {
            party,
            token_id,
            event: p.event,
            before_seq: cursor(p.cursor.as_deref())?.map(|c| c.seq),
            limit,
        };
        let mut events = self.store().events(&q).await?;
        if !admin {
            for e in &mut events {
                hide_others_address(e, c);
            }
        }
        let next_cursor = (events.len() == limit as usize)
            .then(|| events.last())
            .flatten()
            .map(|e| {
                Cursor {
                    seq: e.seq,
                    key: String::new(),
                }
                .encode()
            });
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }

    /// `GET /api/v1/admin/webhooks/deliveries` (`api.admin_scope`).
    pub async fn deliveries(
        &self,
        c: &Caller,
        p: DeliveryParams,
    ) -> Result<DeliveriesPage, ApiError> {
        self.require_admin(c)?;
        let state = p
            .state
            .as_deref()
            .map(|s| {
                DeliveryState::parse(s).ok_or_else(|| {
                    ApiError::invalid_request("state: accepted: pending, delivered, dead")
                })
            })
            .transpose()?;
        let limit = limit(p.limit)?;
        let q = DeliveryQuery {
            state,
            webhook: p.webhook,
            before: cursor(p.cursor.as_deref())?.map(|c| (c.seq, c.key)),
            limit,
        };
        let deliveries = self.store().deliveries(&q).await?;
        let next_cursor = (deliveries.len() == limit as usize)
            .then(|| deliveries.last())
            .flatten()
            .map(|d| {
                Cursor {
                    seq: d.seq,
                    key: d.webhook.clone(),
                }
                .encode()
            });
        Ok(DeliveriesPage {
            deliveries,
            next_cursor,
        })
    }

    /// `DELETE /api/v1/tokens/self`: the PAT used on the call revokes
    /// itself (idempotent).
    pub async fn revoke_self(&self, c: &Caller) -> Result<TokenView, ApiError> {
        let Some(id) = c.pat_id else {
            return Err(ApiError::invalid_request(format!(
                "DELETE /api/v1/tokens/self revokes the personal access token used on the call; \
                 this call used a {} credential (revoke a token by id instead)",
                c.identity.kind
            )));
        };
        let rec = self
            .revoker
            .revoke_by(id, &c.cause("self"))
            .await?
            .ok_or_else(|| ApiError::invalid_token("unknown token"))?;
        tracing::info!(token_id = %rec.id, user = %rec.user_id, "token revoked itself");
        Ok(TokenView::of(&rec, Utc::now()))
    }

    /// Who reports a leak, as the actor of its events: an API caller with
    /// `api.admin_scope`, or a scanner presenting `api.leak_report_secret`.
    /// Checked before the report's body is read.
    pub fn leak_reporter(&self, auth: LeakAuth) -> Result<Cause, ApiError> {
        match auth {
            LeakAuth::Caller(c) => {
                self.require_admin(&c)?;
                Ok(c.cause("leaked"))
            }
            LeakAuth::Secret {
                presented,
                client_addr,
            } => {
                self.check_leak_secret(&presented)?;
                Ok(Cause {
                    actor: Actor {
                        kind: ActorKind::Scanner,
                        client_addr,
                        ..Actor::default()
                    },
                    reason: "leaked",
                })
            }
        }
    }

    /// Runs a whole leak report (`work`: authentication, reading the body,
    /// [`TokenService::revoke_leaked`]) and answers no earlier than
    /// `api.leak_report_floor` after `started`, whatever the outcome: a
    /// refusal or a bad body answered sooner than a success would time
    /// apart the paths, and the store's work on a found token from an
    /// unknown one. Transports wrap every path of the call in this.
    pub async fn leak_padded<F: std::future::Future>(
        &self,
        started: Instant,
        work: F,
    ) -> F::Output {
        let out = work.await;
        tokio::time::sleep_until((started + self.api.leak_report_floor).into()).await;
        out
    }

    /// `POST /api/v1/tokens/revoke-leaked`: revokes each reported token
    /// that exists, with `token.leaked`, for `reporter` (see
    /// [`TokenService::leak_reporter`]). The answer is the same whether any
    /// token existed; callers pad its timing with
    /// [`TokenService::leak_padded`], so the endpoint tells a caller
    /// nothing about a token.
    pub async fn revoke_leaked(
        &self,
        reporter: &Cause,
        tokens: Vec<String>,
    ) -> Result<LeakReport, ApiError> {
        let cause = reporter;
        let max = self.api.leak_report_max_tokens;
        if tokens.is_empty() || tokens.len() > max {
            return Err(ApiError::invalid_request(format!(
                "tokens: must hold 1 to {max} tokens (api.leak_report_max_tokens)"
            )));
        }
        let hashes = self.leak_hashes(&tokens);
        let found = self
            .store()
            .revoke_hashes(&hashes, Utc::now(), cause)
            .await?;
        if !found.is_empty() {
            tracing::warn!(
                tokens = found.len(),
                "leaked personal access tokens reported and revoked"
            );
            // Caches and the bus off the answer's clock (timing).
            let revoker = self.revoker.clone();
            tokio::spawn(async move { revoker.announce(&found).await });
        }
        Ok(LeakReport {
            received: tokens.len(),
        })
    }

    /// Every hash a reported token may be stored under: an opaque PAT under
    /// the keyed hash and plain SHA-256 (a legacy row), anything else
    /// (a JWT-kind PAT) under SHA-256. Depends only on the token's form.
    fn leak_hashes(&self, tokens: &[String]) -> Vec<crate::store::TokenHash> {
        let engine = self.engine.load();
        let hasher = engine.pats().hasher();
        let mut out = Vec::with_capacity(tokens.len() * 2);
        for t in tokens {
            let t = t.trim();
            if t.starts_with(&self.pat.prefix) {
                out.push(hasher.primary(t).0);
            }
            out.push(format::hash(t));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Compares the presented secret with `api.leak_report_secret` in
    /// constant time (an HMAC check against a random key).
    fn check_leak_secret(&self, presented: &str) -> Result<(), ApiError> {
        let refused = || ApiError::invalid_token("leak report secret not accepted");
        let Some(expected) = &self.api.leak_report_secret else {
            return Err(refused());
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| ApiError::internal("random key"))?;
        let tag = hmac::sign(&key, expected.0.as_bytes());
        hmac::verify(&key, presented.as_bytes(), tag.as_ref()).map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::LeakAuth;

    #[test]
    fn leak_auth_debug_never_prints_the_secret() {
        let a = LeakAuth::Secret {
            presented: "s3cret-scanner-value".into(),
            client_addr: Some("192.0.2.1".into()),
        };
        let text = format!("{a:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("redacted") && text.contains("192.0.2.1"),
            "{text}"
        );
    }
}
