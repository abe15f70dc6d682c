//! Token events: the outbox and audit trail in one table (`token_events`,
//! migration 0007), written by the same transaction as the change they
//! describe, and the webhook deliveries fanned out from them.
//!
//! Every write that changes a token takes a [`Cause`] (who acted, from
//! where, why); the backend turns the rows it changed into [`NewEvent`]s
//! with [`token_event`] and inserts them before it commits. Nothing here
//! sends anything: `notify` delivers, `audit` reads.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{OwnerRecord, TokenRecord};

#[path = "events_jwt.rs"]
mod jwt;
pub use jwt::{LogoutClaims, jwt_revoked_event, logged_out_event};

/// What happened. The names are the public event names (webhook `type`,
/// audit `event`, `notify.webhooks[].events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.rotated")]
    TokenRotated,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    #[serde(rename = "token.expired")]
    TokenExpired,
    #[serde(rename = "token.expiring")]
    TokenExpiring,
    #[serde(rename = "token.reuse_detected")]
    TokenReuseDetected,
    #[serde(rename = "token.leaked")]
    TokenLeaked,
    #[serde(rename = "token.new_ip")]
    TokenNewIp,
    #[serde(rename = "owner.suspended")]
    OwnerSuspended,
    #[serde(rename = "owner.reinstated")]
    OwnerReinstated,
    #[serde(rename = "jwt.revoked")]
    JwtRevoked,
    #[serde(rename = "jwt.logged_out")]
    JwtLoggedOut,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: [EventKind; 12] = [
        EventKind::TokenCreated,
        EventKind::TokenRotated,
        EventKind::TokenRevoked,
        EventKind::TokenExpired,
        EventKind::TokenExpiring,
        EventKind::TokenReuseDetected,
        EventKind::TokenLeaked,
        EventKind::TokenNewIp,
        EventKind::OwnerSuspended,
        EventKind::OwnerReinstated,
        EventKind::JwtRevoked,
        EventKind::JwtLoggedOut,
    ];

    /// The public name, e.g. `token.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TokenCreated => "token.created",
            EventKind::TokenRotated => "token.rotated",
            EventKind::TokenRevoked => "token.revoked",
            EventKind::TokenExpired => "token.expired",
            EventKind::TokenExpiring => "token.expiring",
            EventKind::TokenReuseDetected => "token.reuse_detected",
            EventKind::TokenLeaked => "token.leaked",
            EventKind::TokenNewIp => "token.new_ip",
            EventKind::OwnerSuspended => "owner.suspended",
            EventKind::OwnerReinstated => "owner.reinstated",
            EventKind::JwtRevoked => "jwt.revoked",
            EventKind::JwtLoggedOut => "jwt.logged_out",
        }
    }

    /// Parses a public name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The kind of party that made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A user's login token (API).
    Jwt,
    /// A service account's token (API).
    ServiceAccount,
    /// A personal access token acting on itself (API).
    Pat,
    /// An operator running `portcullis token …` against the store.
    Cli,
    /// A secret scanner through `POST /api/v1/tokens/revoke-leaked` with the shared secret.
    Scanner,
    /// An identity provider through `POST /backchannel-logout` (a verified
    /// logout token; `issuer` is its `iss`).
    Idp,
    /// portcullis itself (expiry, owner sync, reuse detection).
    #[default]
    System,
}

impl ActorKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Jwt => "jwt",
            ActorKind::ServiceAccount => "service_account",
            ActorKind::Pat => "pat",
            ActorKind::Cli => "cli",
            ActorKind::Scanner => "scanner",
            ActorKind::Idp => "idp",
            ActorKind::System => "system",
        }
    }

    /// Parses a column value (unknown values read as `system`).
    pub fn parse(s: &str) -> ActorKind {
        match s {
            "jwt" => ActorKind::Jwt,
            "service_account" => ActorKind::ServiceAccount,
            "pat" => ActorKind::Pat,
            "cli" => ActorKind::Cli,
            "scanner" => ActorKind::Scanner,
            "idp" => ActorKind::Idp,
            _ => ActorKind::System,
        }
    }
}

/// Who made a change, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// `sub` of the caller (a PAT: its owner's); the OS user for `cli`;
    /// empty for `system` and `scanner`.
    pub subject: String,
    /// The caller's issuer; empty when none.
    pub issuer: String,
    /// The PAT the caller used, when it used one.
    pub token_id: Option<Uuid>,
    /// The client address (see `audit.trusted_proxy_hops`); `None` when
    /// the change did not come over the network.
    pub client_addr: Option<String>,
}

impl Actor {
    /// portcullis itself.
    pub fn system() -> Actor {
        Actor::default()
    }
}

/// Why a change was made, with who made it: recorded with its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub actor: Actor,
    /// `api`, `admin`, `self`, `cli`, `owner_deleted`, `reuse_detected`,
    /// `leaked`, `expiry`, `owner_sync`, `usage`.
    pub reason: &'static str,
}

impl Cause {
    /// portcullis itself, for `reason`.
    pub fn system(reason: &'static str) -> Cause {
        Cause {
            actor: Actor::system(),
            reason,
        }
    }

    /// The cause of writes made through the plain [`Store`](super::Store)
    /// calls (tests, tools): portcullis itself, reason `unspecified`.
    pub fn unspecified() -> Cause {
        Cause::system("unspecified")
    }
}

/// An event to insert with the change it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: Uuid,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// The token it is about (none for owner events).
    pub token_id: Option<Uuid>,
    /// Whose token (or which owner) it is about: (issuer, `sub`).
    pub owner_issuer: String,
    pub owner_id: String,
    pub actor: Actor,
    /// Event details (see README, Events).
    pub data: Value,
}

/// A stored event (audit trail; the webhook body is built from it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Store order; the audit cursor.
    #[serde(skip)]
    pub seq: i64,
    pub id: Uuid,
    /// The public event name (kept as stored, so a newer replica's kinds
    /// still read).
    pub event: String,
    pub at: DateTime<Utc>,
    pub token_id: Option<Uuid>,
    pub owner_issuer: String,
    pub owner_id: String,
    pub actor: Actor,
    pub data: Value,
}

/// What a token event says about the token: metadata only, never its hash.
pub fn token_json(r: &TokenRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "username": r.username,
        "user_id": r.user_id,
        "user_issuer": r.user_issuer,
        "display_hint": r.display_hint,
        "kind": r.kind.as_str(),
        "scopes": r.scopes,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "revoked_at": r.revoked_at,
        "rotated_from": r.rotated_from,
    })
}

/// An event about token `r`: `data` is `{token, reason}` plus `extra`'s
/// fields.
pub fn token_event(
    kind: EventKind,
    r: &TokenRecord,
    cause: &Cause,
    at: DateTime<Utc>,
    extra: Value,
) -> NewEvent {
    let mut data = json!({ "token": token_json(r), "reason": cause.reason });
    if let (Some(d), Value::Object(more)) = (data.as_object_mut(), extra) {
        d.extend(more);
    }
    NewEvent {
        id: Uuid::new_v4(),
        kind,
        at,
        token_id: Some(r.id),
        owner_issuer: r.user_issuer.clone(),
        owner_id: r.user_id.clone(),
        actor: cause.actor.clone(),
        data,
    }
}

/// `token.revoked` for each of `recs`.
pub fn revoked_events(recs: &[TokenRecord], cause: &Cause, at: DateTime<Utc>) -> Vec<NewEvent> {
    recs.iter()
        .map(|r| token_event(EventKind::TokenRevoked, r, cause, at, Value::Null))
        .collect()
}

/// `owner.suspended` / `owner.reinstated` when an owner's state moved
/// between enabled and disabled (`prev` is the stored state before).
pub fn owner_event(prev: Option<&str>, now: &OwnerRecord) -> Option<NewEvent> {
    use super::OwnerState;
    let kind = match (prev, now.state) {
        (Some("disabled"), OwnerState::Disabled) => return None,
        (_, OwnerState::Disabled) => EventKind::OwnerSuspended,
        (Some("disabled"), OwnerState::Enabled) => EventKind::OwnerReinstated,
        _ => return None,
    };
    Some(NewEvent {
        id: Uuid::new_v4(),
        kind,
        at: now.changed_at,
        token_id: None,
        owner_issuer: now.issuer.clone(),
        owner_id: now.user_id.clone(),
        actor: Actor::system(),
        data: json!({
            "owner": { "issuer": now.issuer, "user_id": now.user_id },
            "state": now.state.as_str(),
            "reason": "owner_sync",
        }),
    })
}

/// `token.rotated` (about the old token, naming its successor) and
/// `token.created` (the successor, naming the old one).
pub(super) fn rotation_events(
    old: &TokenRecord,
    new: &TokenRecord,
    cause: &Cause,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let old = TokenRecord {
        revoked_at: Some(now),
        ..old.clone()
    };
    vec![
        token_event(
            EventKind::TokenRotated,
            &old,
            cause,
            now,
            json!({ "successor": token_json(new) }),
        ),
        token_event(
            EventKind::TokenCreated,
            new,
            cause,
            now,
            json!({ "rotated_from": old.id }),
        ),
    ]
}

/// `token.reuse_detected` (about the presented token, listing the chain)
/// and `token.revoked` for each token the chain revocation revoked now.
pub(super) fn reuse_events(
    presented: Uuid,
    chain: &[TokenRecord],
    fresh: &[TokenRecord],
    cause: &Cause,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let mut out = Vec::with_capacity(fresh.len() + 1);
    if let Some(p) = chain.iter().find(|r| r.id == presented) {
        let ids: Vec<Uuid> = chain.iter().map(|r| r.id).collect();
        out.push(token_event(
            EventKind::TokenReuseDetected,
            p,
            cause,
            now,
            json!({ "chain": ids }),
        ));
    }
    out.extend(revoked_events(fresh, cause, now));
    out
}

/// `token.leaked`, and `token.revoked` when the report revoked it now.
pub(super) fn leak_events(
    rec: &TokenRecord,
    fresh: bool,
    cause: &Cause,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let mut out = vec![token_event(
        EventKind::TokenLeaked,
        rec,
        cause,
        now,
        json!({ "already_revoked": !fresh }),
    )];
    if fresh {
        out.extend(revoked_events(std::slice::from_ref(rec), cause, now));
    }
    out
}

/// `token.new_ip`: token `r` was used from `network`, where it had not
/// been used before. The actor is the token itself, from that address.
pub fn new_ip_event(r: &TokenRecord, u: &super::Usage, network: &str) -> NewEvent {
    let cause = Cause {
        actor: Actor {
            kind: ActorKind::Pat,
            subject: r.user_id.clone(),
            issuer: r.user_issuer.clone(),
            token_id: Some(r.id),
            client_addr: u.ip.map(|ip| ip.to_canonical().to_string()),
        },
        reason: "usage",
    };
    token_event(
        EventKind::TokenNewIp,
        r,
        &cause,
        u.at,
        json!({ "network": network, "user_agent": u.user_agent.as_deref() }),
    )
}

/// A webhook as the fan-out sees it: its key and which events it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFilter {
    /// Stable key of the webhook (its `name`, else a hash of its URL).
    pub key: String,
    /// Event names, `*` (all) or `prefix.*`.
    pub events: Vec<String>,
}

impl HookFilter {
    /// Does this webhook want `event`?
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| {
            e == "*"
                || e == event
                || e.strip_suffix(".*")
                    .is_some_and(|p| event.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
        })
    }
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; retried until `notify.delivery.max_age`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up (dead-lettered) after `max_age`.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// A delivery claimed by one replica (leased until `lease_until`), with
/// the event it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// `x-portcullis-delivery`: the same on every attempt.
    pub id: Uuid,
    pub webhook: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub event: EventRecord,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered { status: u16 },
    /// Failed; try again at `next_attempt_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
    /// Failed past `max_age`: dead-lettered.
    Dead { status: Option<u16>, error: String },
}

/// A delivery as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub webhook: String,
    pub event_id: Uuid,
    pub event: String,
    pub token_id: Option<Uuid>,
    pub state: DeliveryState,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// The replica that made the last attempt (its lease owner name).
    pub replica: Option<String>,
    /// Store order; the listing's cursor.
    #[serde(skip)]
    pub seq: i64,
}

/// Filters of [`Store::deliveries`](super::Store::deliveries), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub state: Option<DeliveryState>,
    pub webhook: Option<String>,
    /// The cursor: only deliveries after this (event `seq`, webhook) in
    /// the listing's order.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// Filters of [`Store::events`](super::Store::events), newest first. The
/// party filters are OR-ed: an event matches when its owner or its actor
/// is `party`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// (issuer, `sub`): events about this user's tokens or made by them.
    pub party: Option<(String, String)>,
    pub token_id: Option<Uuid>,
    pub event: Option<String>,
    /// Only events with `seq` below this (the cursor).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// Pending and dead deliveries (the `/metrics` gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub dead: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_filters_match() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), Value::from(k.as_str()));
        }
        let f = HookFilter {
            key: "k".into(),
            events: vec!["token.*".into(), "owner.suspended".into()],
        };
        assert!(f.wants("token.created"));
        assert!(f.wants("owner.suspended"));
        assert!(!f.wants("owner.reinstated"));
        assert!(!f.wants("tokenx.created"));
        let all = HookFilter {
            key: "k".into(),
            events: vec!["*".into()],
        };
        assert!(all.wants("owner.reinstated"));
    }
}
