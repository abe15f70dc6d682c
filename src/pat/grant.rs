//! What a cached PAT lookup keeps: the parts of a [`TokenRecord`] a Check
//! reads, nothing else.
//!
//! A full record also carries the token's name, description, display hint,
//! hash, jti, rotation link and last-use fields, none of which a Check
//! looks at; kept for every cached PAT they cost about half a kilobyte each
//! (benches/BENCHMARKS.md, "Memory with full caches").

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::identity::{Interner, Scopes};
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
    /// Owner's issuer; empty for an unowned (pre-0004) row. Shared
    /// between the cached PATs of one issuer.
    pub user_issuer: Arc<str>,
    /// Scopes the PAT grants. Shared between cached PATs with the same
    /// scopes, and handed to the Check's identity as is.
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Revoked when read.
    pub revoked: bool,
    pub kind: TokenKind,
}

/// What cached grants share: scope sets and owner issuers.
#[derive(Debug, Default)]
pub struct GrantParts {
    scopes: Interner<[String]>,
    issuers: Interner<str>,
}

impl PatGrant {
    /// The grant of `r`, its scopes and issuer shared through `parts`.
    pub fn new(r: TokenRecord, parts: &GrantParts) -> Self {
        PatGrant {
            id: r.id,
            user_id: r.user_id.into(),
            username: r.username.into(),
            user_issuer: parts.issuers.intern(r.user_issuer),
            scopes: parts.scopes.intern(r.scopes),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked: r.revoked_at.is_some(),
            kind: r.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HashVersion;

    fn record(user: &str, issuer: &str, scopes: &[&str]) -> TokenRecord {
        let now = Utc::now();
        TokenRecord {
            id: Uuid::new_v4(),
            user_id: user.into(),
            username: user.into(),
            name: "n".into(),
            description: Some("d".into()),
            token_hash: [7; 32],
            display_hint: "pat_…".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            created_at: now,
            expires_at: now,
            last_used_at: None,
            revoked_at: None,
            rotated_from: None,
            kind: TokenKind::Opaque,
            jti: None,
            user_issuer: issuer.into(),
            hash_version: HashVersion::Sha256,
            last_used_ip: None,
            last_used_user_agent: None,
        }
    }

    #[test]
    fn grants_share_equal_scopes_and_issuers_and_keep_their_own() {
        let parts = GrantParts::default();
        let a = PatGrant::new(record("u1", "https://a", &["x:read", "y:write"]), &parts);
        let b = PatGrant::new(record("u2", "https://a", &["x:read", "y:write"]), &parts);
        let c = PatGrant::new(record("u3", "https://b", &["x:read"]), &parts);
        assert!(Arc::ptr_eq(&a.scopes, &b.scopes));
        assert!(Arc::ptr_eq(&a.user_issuer, &b.user_issuer));
        assert_eq!((&*a.user_id, &*b.user_id), ("u1", "u2"));
        assert_eq!(&*c.scopes, ["x:read".to_string()]);
        assert_eq!(&*c.user_issuer, "https://b");
        // Order is part of a set's identity: never merged with another order.
        let d = PatGrant::new(record("u4", "https://a", &["y:write", "x:read"]), &parts);
        assert!(!Arc::ptr_eq(&a.scopes, &d.scopes));
        assert_eq!(&*d.scopes, ["y:write".to_string(), "x:read".to_string()]);
    }
}
