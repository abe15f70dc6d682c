//! The store's data types: token rows, deny-list rows, their column enums,
//! and [`StoreError`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

/// SHA-256 of a token (see `pat::format::hash`).
pub type TokenHash = [u8; 32];

/// How a row's `token_hash` was computed (`hash_version` column, migration
/// 0003; see `pat::hasher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashVersion {
    /// SHA-256 of the token: rows from before 0003, JWT-kind PATs, and
    /// opaque PATs created without `pat.hash_key`.
    #[default]
    Sha256,
    /// HMAC-SHA256(`pat.hash_key`, token).
    Hmac,
}

impl HashVersion {
    /// Column value.
    pub fn as_i16(self) -> i16 {
        match self {
            HashVersion::Sha256 => 1,
            HashVersion::Hmac => 2,
        }
    }

    /// Parses a column value.
    pub fn from_i16(v: i16) -> Option<Self> {
        match v {
            1 => Some(HashVersion::Sha256),
            2 => Some(HashVersion::Hmac),
            _ => None,
        }
    }
}

/// Store failures. Display never includes a raw token (the store never sees one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Connection failure, pool exhaustion or timeout: answer 503.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or state conflict (duplicate hash/jti, rotating a revoked token).
    #[error("token store conflict: {0}")]
    Conflict(String),
    /// The referenced token does not exist.
    #[error("token not found")]
    NotFound,
    /// Anything else (bad data, SQL error).
    #[error("token store error: {0}")]
    Other(String),
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How a token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// `<prefix><body><checksum>`, looked up by hash.
    #[default]
    Opaque,
    /// A self-contained JWT, tracked by `jti`.
    Jwt,
}

impl TokenKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Opaque => "opaque",
            TokenKind::Jwt => "jwt",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "opaque" => Some(TokenKind::Opaque),
            "jwt" => Some(TokenKind::Jwt),
            _ => None,
        }
    }
}

/// Deny-list entry kind for revoked JWTs (not `authz::DenyKind`, the kind
/// of a Check denial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenylistKind {
    /// A single JWT by its `jti` claim.
    Jti,
    /// Every JWT of a session by its `sid` claim.
    Sid,
}

impl DenylistKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenylistKind::Jti => "jti",
            DenylistKind::Sid => "sid",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(DenylistKind::Jti),
            "sid" => Some(DenylistKind::Sid),
            _ => None,
        }
    }
}

/// A JWT deny-list row, for loading and resyncing in-memory deny sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyEntry {
    pub kind: DenylistKind,
    pub value: String,
    pub expires_at: DateTime<Utc>,
    /// When the entry was written or its expiry last extended (the resync watermark).
    pub changed_at: DateTime<Utc>,
}

/// What a back-channel logout mark names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogoutKind {
    /// A session (`sid`): every token carrying it is refused.
    Sid,
    /// A subject (`sub`): its tokens issued at or before `not_before` are refused.
    Sub,
}

impl LogoutKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogoutKind::Sid => "sid",
            LogoutKind::Sub => "sub",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sid" => Some(LogoutKind::Sid),
            "sub" => Some(LogoutKind::Sub),
            _ => None,
        }
    }
}

/// A `logout_marks` row: what one back-channel logout refuses, per issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutMark {
    /// The issuer whose tokens it refuses (the logout token's `iss`).
    pub issuer: String,
    pub kind: LogoutKind,
    /// The `sid` or `sub`.
    pub value: String,
    /// `sub` marks: tokens issued (`iat`) at or before this are refused.
    pub not_before: DateTime<Utc>,
    /// Kept until then (logout + `issuers[].max_token_lifetime`).
    pub expires_at: DateTime<Utc>,
    /// When written or last extended (the resync watermark).
    pub changed_at: DateTime<Utc>,
}

/// A PAT owner's state in Keycloak (`pat.owner_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerState {
    Enabled,
    /// Their PATs are refused (401 `owner disabled`) until re-enabled.
    Disabled,
    /// Gone from Keycloak: their PATs are revoked.
    Deleted,
}

impl OwnerState {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerState::Enabled => "enabled",
            OwnerState::Disabled => "disabled",
            OwnerState::Deleted => "deleted",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(OwnerState::Enabled),
            "disabled" => Some(OwnerState::Disabled),
            "deleted" => Some(OwnerState::Deleted),
            _ => None,
        }
    }
}

/// A `pat_owners` row: one PAT owner as Keycloak last reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub issuer: String,
    pub user_id: String,
    pub state: OwnerState,
    /// Their current scopes (from roles); `None`: not restricted.
    pub scopes: Option<Vec<String>>,
    /// Last successful read from Keycloak.
    pub synced_at: DateTime<Utc>,
    /// Last change of `state` or `scopes` (the resync watermark).
    pub changed_at: DateTime<Utc>,
}

/// A stored token (never the raw token: only its hash).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    /// Owner's `sub`.
    pub user_id: String,
    pub username: String,
    pub name: String,
    pub description: Option<String>,
    pub token_hash: TokenHash,
    pub display_hint: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rotated_from: Option<Uuid>,
    pub kind: TokenKind,
    pub jti: Option<String>,
    /// Owner's issuer (`iss`); the owner is (`user_issuer`, `user_id`).
    /// Empty for rows older than migration 4 not yet claimed at start-up:
    /// such a row belongs to no caller (see [`Store::claim_unowned`](super::Store::claim_unowned)).
    pub user_issuer: String,
    /// How `token_hash` was computed.
    pub hash_version: HashVersion,
    /// The client address of the last use (as Envoy reported it).
    pub last_used_ip: Option<String>,
    /// The `User-Agent` of the last use.
    pub last_used_user_agent: Option<String>,
}

impl TokenRecord {
    /// Not revoked and not expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

fn short_hash(h: &TokenHash) -> String {
    hex::encode(&h[..4])
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("name", &self.name)
            .field("description", &self.description)
            .field(
                "token_hash",
                &format_args!("{}…", short_hash(&self.token_hash)),
            )
            .field("display_hint", &self.display_hint)
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &self.revoked_at)
            .field("rotated_from", &self.rotated_from)
            .field("kind", &self.kind)
            .field("jti", &self.jti)
            .field("user_issuer", &self.user_issuer)
            .field("hash_version", &self.hash_version)
            .field("last_used_ip", &self.last_used_ip)
            .field("last_used_user_agent", &self.last_used_user_agent)
            .finish()
    }
}

/// One token's latest use, written by a `last_used_at` flush
/// ([`Store::touch_usage`](super::Store::touch_usage)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The client address Envoy reported, when it reported one.
    pub ip: Option<std::net::IpAddr>,
    /// The `User-Agent` header, when sent.
    pub user_agent: Option<std::sync::Arc<str>>,
}

/// The network a `token.new_ip` compares: the /24 of an IPv4 address, the
/// /48 of an IPv6 one (an IPv4-mapped IPv6 address counts as IPv4).
pub fn network_of(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{net}/48")
        }
    }
}

/// A token's state at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenState {
    /// Neither revoked nor expired.
    Active,
    Revoked,
    /// Expired without being revoked.
    Expired,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Revoked => "revoked",
            TokenState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<TokenState> {
        match s {
            "active" => Some(TokenState::Active),
            "revoked" => Some(TokenState::Revoked),
            "expired" => Some(TokenState::Expired),
            _ => None,
        }
    }
}

/// Filters of the admin inventory ([`Store::tokens`](super::Store::tokens)),
/// newest first (`created_at`, then `id`). Every filter given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuery {
    /// The moment states and expiry windows are judged at.
    pub now: DateTime<Utc>,
    pub state: Option<TokenState>,
    /// Active tokens expiring at or before this.
    pub expiring_before: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
    pub user_issuer: Option<String>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Tokens last used before this (never-used tokens do not match).
    pub last_used_before: Option<DateTime<Utc>>,
    /// The cursor: only tokens after this (`created_at`, `id`) in the order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
}

/// A token to insert.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: Uuid,
    pub user_id: String,
    pub username: String,
    pub name: String,
    pub description: Option<String>,
    pub token_hash: TokenHash,
    pub display_hint: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Ignored by [`Store::rotate`](super::Store::rotate), which sets it to the old id.
    pub rotated_from: Option<Uuid>,
    pub kind: TokenKind,
    pub jti: Option<String>,
    /// Owner's issuer (`iss`).
    pub user_issuer: String,
    /// How `token_hash` was computed.
    pub hash_version: HashVersion,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("user_issuer", &self.user_issuer)
            .field("name", &self.name)
            .field(
                "token_hash",
                &format_args!("{}…", short_hash(&self.token_hash)),
            )
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("rotated_from", &self.rotated_from)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}
