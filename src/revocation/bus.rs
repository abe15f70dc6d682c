//! The revocation bus: Redis pub/sub between replicas (`revocation.kind:
//! redis`), or nothing (`local`).
//!
//! One message per revoke call, one item per line:
//! - `pat:<64 hex>`: a PAT's SHA-256 hash; receivers mark it revoked;
//! - `new:<64 hex>`: a PAT created on the sender; receivers add its hash to
//!   their set of known hashes, which only lets it reach the store (it is
//!   still validated there), so a forged one costs one lookup, never an allow;
//! - `jti:<exp>:<value>` / `sid:<exp>:<value>`: a deny-list entry expiring
//!   at `<exp>` (Unix seconds);
//! - `logout:<sid|sub>:<exp>:<not_before>:<issuer>\t<value>`: a back-channel
//!   logout mark (see [`super::logout`]);
//! - `owner:<issuer>\t<sub>`: a PAT owner's synced state changed; receivers
//!   read it from the store (the message carries no state, so a forged one
//!   cannot re-enable an owner or widen scopes).
//!
//! Messages only ever make a replica stricter, so a forged or replayed one
//! can deny but never allow. Publishing uses a lazily connected
//! `ConnectionManager` under a short timeout; a failure is logged and left to
//! the resync loop (the store write already happened). Each replica
//! subscribes on a dedicated connection, pings it to notice a dead peer,
//! reconnects with backoff, and kicks an immediate resync after every
//! (re)subscribe, because messages sent while it was away are lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::denylist::JwtDenyList;
use super::{RevocationConfig, RevocationKind};
use crate::pat::{PatValidator, TokenHash};
use crate::store::{DenylistKind, LogoutKind, LogoutMark};

/// Upper bound on one publish (connect and one retry included).
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(300);
/// Connect and response bound of one publish attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(150);
/// Connect and subscribe bound for the subscriber connection.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber pings its connection.
const PING_EVERY: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest accepted `jti`/`sid` value.
pub const MAX_VALUE_LEN: usize = 512;

/// One revocation carried on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Pat(TokenHash),
    /// A created PAT's hash (enables a store lookup; never allows).
    New(TokenHash),
    Deny {
        kind: DenylistKind,
        value: String,
        expires_at: i64,
    },
    /// A back-channel logout mark.
    Logout(LogoutMark),
    /// A PAT owner (issuer, `sub`) whose state changed: read it from the store.
    Owner {
        issuer: String,
        user_id: String,
    },
}

impl Item {
    fn encode(&self, out: &mut String) {
        match self {
            Item::Pat(h) => {
                out.push_str("pat:");
                out.push_str(&hex::encode(h));
            }
            Item::New(h) => {
                out.push_str("new:");
                out.push_str(&hex::encode(h));
            }
            Item::Deny {
                kind,
                value,
                expires_at,
            } => {
                out.push_str(kind.as_str());
                out.push(':');
                out.push_str(&expires_at.to_string());
                out.push(':');
                out.push_str(value);
            }
            Item::Owner { issuer, user_id } => {
                out.push_str(&format!("owner:{issuer}\t{user_id}"));
            }
            Item::Logout(m) => {
                let (exp, nbf) = (m.expires_at.timestamp(), m.not_before.timestamp());
                let kind = m.kind.as_str();
                out.push_str(&format!(
                    "logout:{kind}:{exp}:{nbf}:{}\t{}",
                    m.issuer, m.value
                ));
            }
        }
    }

    fn decode_logout(rest: &str) -> Option<Item> {
        let (kind, rest) = rest.split_once(':')?;
        let (exp, rest) = rest.split_once(':')?;
        let (nbf, rest) = rest.split_once(':')?;
        let (issuer, value) = rest.split_once('\t')?;
        if !valid_value(value) || !valid_value(issuer) {
            return None;
        }
        let at = |s: &str| chrono::DateTime::from_timestamp(s.parse().ok()?, 0);
        Some(Item::Logout(LogoutMark {
            issuer: issuer.to_owned(),
            kind: LogoutKind::parse(kind)?,
            value: value.to_owned(),
            not_before: at(nbf)?,
            expires_at: at(exp)?,
            changed_at: chrono::Utc::now(),
        }))
    }

    fn decode(line: &str) -> Option<Item> {
        let (tag, rest) = line.split_once(':')?;
        if tag == "pat" || tag == "new" {
            let mut h = [0u8; 32];
            hex::decode_to_slice(rest, &mut h).ok()?;
            return Some(if tag == "pat" {
                Item::Pat(h)
            } else {
                Item::New(h)
            });
        }
        if tag == "logout" {
            return Item::decode_logout(rest);
        }
        if tag == "owner" {
            let (issuer, user_id) = rest.split_once('\t')?;
            if !valid_value(issuer) || !valid_value(user_id) {
                return None;
            }
            return Some(Item::Owner {
                issuer: issuer.to_owned(),
                user_id: user_id.to_owned(),
            });
        }
        let kind = DenylistKind::parse(tag)?;
        let (exp, value) = rest.split_once(':')?;
        if !valid_value(value) {
            return None;
        }
        Some(Item::Deny {
            kind,
            value: value.to_owned(),
            expires_at: exp.parse().ok()?,
        })
    }
}

/// A `jti`/`sid` value the bus (and the CLI) accept: non-empty, bounded,
/// no control characters.
pub fn valid_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_VALUE_LEN && !v.chars().any(char::is_control)
}

/// Encodes items as one message.
pub fn encode(items: &[Item]) -> String {
    let mut s = String::new();
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        it.encode(&mut s);
    }
    s
}

/// Decodes a message; malformed lines are skipped.
pub fn decode(msg: &str) -> Vec<Item> {
    msg.lines().filter_map(Item::decode).collect()
}

/// Applies received items to this replica's caches.
pub async fn apply(items: &[Item], pats: &PatValidator, deny: &JwtDenyList) {
    let now = crate::jwt::unix_now();
    for it in items {
        match it {
            Item::Pat(h) => pats.mark_revoked(h).await,
            Item::New(h) => pats.note_created(h),
            Item::Deny {
                kind,
                value,
                expires_at,
            } => deny.insert(*kind, value, *expires_at, now),
            Item::Logout(m) => deny.logout().apply(std::slice::from_ref(m), now),
            Item::Owner { issuer, user_id } => refresh_owner(pats, issuer, user_id).await,
        }
    }
}

/// Reads one owner's state from the store into this replica's owner
/// states (only for the issuer `pat.owner_sync` follows). A store failure
/// is left to the resync loop.
async fn refresh_owner(pats: &PatValidator, issuer: &str, user_id: &str) {
    if pats.owner_sync_issuer() != Some(issuer) {
        return;
    }
    match pats.store().owner(issuer, user_id).await {
        Ok(Some(rec)) => pats.owners().apply(std::slice::from_ref(&rec)),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "owner refresh from the bus: store unavailable"),
    }
}

/// Publisher side of the bus. Cheap to clone.
#[derive(Clone, Default)]
pub struct Bus {
    redis: Option<Arc<RedisBus>>,
}

struct RedisBus {
    client: redis::Client,
    publisher: ConnectionManager,
    channel: String,
    /// The subscriber connection is up.
    subscribed: AtomicBool,
    /// Messages received by the subscriber.
    received: AtomicU64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.redis {
            None => f.write_str("Bus(local)"),
            Some(r) => write!(f, "Bus(redis, channel {})", r.channel),
        }
    }
}

impl Bus {
    /// In-process only.
    pub fn local() -> Bus {
        Bus::default()
    }

    /// Builds the bus for `revocation:`. Never touches the network (Redis
    /// may be down at start); must run inside a Tokio runtime.
    pub fn from_config(cfg: &RevocationConfig) -> anyhow::Result<Bus> {
        if cfg.kind == RevocationKind::Local {
            return Ok(Bus::local());
        }
        let url = cfg.redis_url.as_deref().unwrap_or_default();
        // Never echo the URL: it may carry a password.
        let client = redis::Client::open(url)
            .map_err(|_| anyhow::anyhow!("revocation.redis_url: not a valid Redis URL"))?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(ATTEMPT_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(50));
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg)
            .map_err(|e| anyhow::anyhow!("revocation: building the Redis connection: {e}"))?;
        Ok(Bus {
            redis: Some(Arc::new(RedisBus {
                client,
                publisher,
                channel: cfg.channel.clone(),
                subscribed: AtomicBool::new(false),
                received: AtomicU64::new(0),
            })),
        })
    }

    /// True for `kind: redis`.
    pub fn is_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// This replica's subscriber connection is up (metrics, tests).
    pub fn is_subscribed(&self) -> bool {
        self.redis
            .as_ref()
            .is_some_and(|r| r.subscribed.load(Ordering::Acquire))
    }

    /// Messages this replica received from the bus (metrics, tests).
    pub fn received(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.received.load(Ordering::Relaxed))
    }

    /// Publishes `items` (bounded by a short timeout). Errors are logged:
    /// the store already holds the revocation and resync will carry it.
    pub async fn publish(&self, items: &[Item]) {
        let Some(r) = &self.redis else { return };
        if items.is_empty() {
            return;
        }
        let msg = encode(items);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&r.channel).arg(&msg);
        // The command in flight when a connection breaks errors while the
        // manager reconnects: one retry, all within PUBLISH_TIMEOUT.
        let fut = async {
            let mut conn = r.publisher.clone();
            match cmd.query_async::<i64>(&mut conn).await {
                Ok(n) => Ok(n),
                Err(_) => cmd.query_async::<i64>(&mut conn).await,
            }
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, fut).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                items = items.len(),
                "revocation publish to Redis failed; replicas will see it on their next resync"
            ),
            Err(_) => tracing::warn!(
                items = items.len(),
                "revocation publish to Redis timed out; replicas will see it on their next resync"
            ),
        }
    }

    /// The subscriber task for this replica, if the bus is Redis.
    pub fn subscriber(
        &self,
        pats: Arc<PatValidator>,
        deny: Arc<JwtDenyList>,
        kick: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let r = self.redis.clone()?;
        Some(subscribe_loop(r, pats, deny, kick, shutdown))
    }
}

async fn subscribe_loop(
    r: Arc<RedisBus>,
    pats: Arc<PatValidator>,
    deny: Arc<JwtDenyList>,
    kick: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    // Warn on the first failure after start or after being connected.
    let mut was_up = true;
    loop {
        let conn = async {
            let mut ps = r.client.get_async_pubsub().await?;
            ps.subscribe(&r.channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let res = tokio::select! {
            _ = shutdown.cancelled() => return,
            res = tokio::time::timeout(SUBSCRIBE_TIMEOUT, conn) => res,
        };
        match res {
            Ok(Ok(ps)) => {
                tracing::info!(channel = %r.channel, "subscribed to the revocation bus");
                backoff = BACKOFF_MIN;
                was_up = true;
                r.subscribed.store(true, Ordering::Release);
                // Anything published while we were away is lost: resync now.
                kick.notify_one();
                let stopped = serve(ps, &r, &pats, &deny, &shutdown).await;
                r.subscribed.store(false, Ordering::Release);
                if stopped {
                    return;
                }
                tracing::warn!("revocation bus connection lost; reconnecting");
            }
            Ok(Err(e)) if was_up => {
                was_up = false;
                tracing::warn!(error = %e, "revocation bus: cannot reach Redis; retrying");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "revocation bus: Redis still unreachable"),
            Err(_) if was_up => {
                was_up = false;
                tracing::warn!("revocation bus: Redis connect timed out; retrying");
            }
            Err(_) => tracing::debug!("revocation bus: Redis connect timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Consumes messages until the connection fails (false) or shutdown (true).
async fn serve(
    ps: redis::aio::PubSub,
    r: &RedisBus,
    pats: &PatValidator,
    deny: &JwtDenyList,
    shutdown: &CancellationToken,
) -> bool {
    let (mut sink, mut stream) = ps.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return true,
            msg = stream.next() => {
                let Some(msg) = msg else { return false };
                r.received.fetch_add(1, Ordering::Relaxed);
                match std::str::from_utf8(msg.get_payload_bytes()) {
                    Ok(text) => apply(&decode(text), pats, deny).await,
                    Err(_) => tracing::debug!("revocation bus: ignoring a non-UTF-8 message"),
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(PING_EVERY, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_skip_garbage() {
        let items = vec![
            Item::Pat([7u8; 32]),
            Item::Deny {
                kind: DenylistKind::Jti,
                value: "a:b:c".into(),
                expires_at: 1_900_000_000,
            },
            Item::Deny {
                kind: DenylistKind::Sid,
                value: "s-1".into(),
                expires_at: 5,
            },
        ];
        let msg = encode(&items);
        assert_eq!(decode(&msg), items);
        let at = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let logout = LogoutMark {
            issuer: "https://kc/realms/a:b".into(),
            kind: LogoutKind::Sub,
            value: "u:1".into(),
            not_before: at(100),
            expires_at: at(200),
            changed_at: at(0),
        };
        let decoded = decode(&encode(&[Item::Logout(logout.clone())]));
        match decoded.as_slice() {
            [Item::Logout(m)] => {
                assert_eq!(
                    (&m.issuer, m.kind, &m.value),
                    (&logout.issuer, logout.kind, &logout.value)
                );
                assert_eq!((m.not_before, m.expires_at), (at(100), at(200)));
            }
            other => panic!("{other:?}"),
        }
        assert!(decode("logout:sid:1:2:no-tab").is_empty());
        let owner = Item::Owner {
            issuer: "https://kc/realms/a".into(),
            user_id: "u-1".into(),
        };
        assert_eq!(decode(&encode(std::slice::from_ref(&owner))), vec![owner]);
        assert!(decode("owner:no-tab").is_empty());
        assert!(decode("logout:xyz:1:2:i\tv").is_empty());
        let noisy = format!("{msg}\nnope\npat:zz\njti:x:v\nsid:1:\nfoo:1:2");
        assert_eq!(decode(&noisy), items);
        assert!(!valid_value("a\nb"));
        assert!(!valid_value(&"x".repeat(MAX_VALUE_LEN + 1)));
    }
}
