//! What a cached PAT lookup keeps: the parts of a [`TokenRecord`] a Check
//! reads, nothing else.
//!
//! A full record also carries the token's name, description, display hint,
//! hash, jti, rotation link and last-use fields, none of which a Check
//! looks at; kept for every cached PAT they cost about half a kilobyte each
//! (benches/BENCHMARKS.md, "Memory with full caches").

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{TokenKind, TokenRecord};

/// A PAT as the validator caches it and a Check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatGrant {
    /// The PAT's id (`x-auth-token-id`).
    pub id: Uuid,
    /// Owner's `sub`.
    pub user_id: Box<str>,
    /// Owner's username; empty when unknown.
    pub username: Box<str>,
    /// Owner's issuer; empty for an unowned (pre-0004) row.
    pub user_issuer: Box<str>,
    /// Scopes the PAT grants.
    pub scopes: Box<[Box<str>]>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Revoked when read.
    pub revoked: bool,
    pub kind: TokenKind,
}

impl From<TokenRecord> for PatGrant {
    fn from(r: TokenRecord) -> Self {
        PatGrant {
            id: r.id,
            user_id: r.user_id.into(),
            username: r.username.into(),
            user_issuer: r.user_issuer.into(),
            scopes: r.scopes.into_iter().map(String::into_boxed_str).collect(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked: r.revoked_at.is_some(),
            kind: r.kind,
        }
    }
}

impl PatGrant {
    /// The scopes as owned strings (an [`crate::identity::Identity`]'s form).
    pub fn scope_strings(&self) -> Vec<String> {
        self.scopes.iter().map(|s| s.to_string()).collect()
    }
}
