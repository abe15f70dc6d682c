//! Keyset pages for the resync loop's reads.
//!
//! The resync loop reads what changed since its watermarks. One unbounded
//! query per source is bounded by `store.timeout` like any call, so after a
//! bulk change (100k PATs created at once) it timed out on every pass and
//! the watermark never moved. Each read is now a page of at most `limit`
//! rows strictly after a [`Keyset`] position, in the source's
//! `(timestamp, key)` order, so every call stays small whatever the backlog.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

use super::{DenyEntry, LogoutMark, OwnerRecord, Result, Store, TokenHash};

/// A position in `(at, key)` order: a page holds the rows strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset<K> {
    pub at: DateTime<Utc>,
    pub key: K,
}

impl<K: Default> Keyset<K> {
    /// The start of the rows with a timestamp strictly after `at`, for the
    /// first page of a read: both backends store microseconds, so that is
    /// the next microsecond with the key's smallest value (the nil uuid,
    /// empty strings).
    pub fn after(at: DateTime<Utc>) -> Self {
        Keyset {
            at: at.trunc_subsecs(6) + TimeDelta::microseconds(1),
            key: K::default(),
        }
    }
}

/// Key of a PAT row: its id.
pub type PatKeyset = Keyset<Uuid>;
/// Key of a deny-list entry: `(kind, value)`.
pub type DenyKeyset = Keyset<(String, String)>;
/// Key of a logout mark: `(issuer, kind, value)`.
pub type LogoutKeyset = Keyset<(String, String, String)>;
/// Key of a PAT owner: `(issuer, user_id)`.
pub type OwnerKeyset = Keyset<(String, String)>;

/// A PAT row as the resync loop reads it: id, hash and the timestamp the
/// read is ordered by (`created_at` or `revoked_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashAt {
    pub id: Uuid,
    pub hash: TokenHash,
    pub at: DateTime<Utc>,
}

impl HashAt {
    pub fn keyset(&self) -> PatKeyset {
        Keyset {
            at: self.at,
            key: self.id,
        }
    }
}

impl DenyEntry {
    pub fn keyset(&self) -> DenyKeyset {
        Keyset {
            at: self.changed_at,
            key: (self.kind.as_str().to_owned(), self.value.clone()),
        }
    }
}

impl LogoutMark {
    pub fn keyset(&self) -> LogoutKeyset {
        Keyset {
            at: self.changed_at,
            key: (
                self.issuer.clone(),
                self.kind.as_str().to_owned(),
                self.value.clone(),
            ),
        }
    }
}

impl OwnerRecord {
    pub fn keyset(&self) -> OwnerKeyset {
        Keyset {
            at: self.changed_at,
            key: (self.issuer.clone(), self.user_id.clone()),
        }
    }
}

/// The resync loop's reads, one page per call (each bounded by
/// `store.timeout` on its own).
impl Store {
    /// Up to `limit` revoked tokens after `after` in `(revoked_at, id)`
    /// order, for cross-replica cache resync.
    pub async fn revoked_since(&self, after: &PatKeyset, limit: u32) -> Result<Vec<HashAt>> {
        self.call(self.backend.revoked_since(after, limit)).await
    }

    /// Up to `limit` tokens neither revoked nor expired at `now` with an id
    /// above `after` (nil for the first page), by id: a page of the
    /// known-hash set's full load (`pat::known`).
    pub async fn active_hashes(
        &self,
        after: Uuid,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(Uuid, TokenHash)>> {
        self.call(self.backend.active_hashes(after, now, limit))
            .await
    }

    /// Up to `limit` tokens still active at `now`, after `after` in
    /// `(created_at, id)` order.
    pub async fn created_since(
        &self,
        after: &PatKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HashAt>> {
        self.call(self.backend.created_since(after, now, limit))
            .await
    }

    /// Up to `limit` deny-list entries unexpired at `now`, after `after` in
    /// `(created_at, kind, value)` order (`created_at`: write or last
    /// extension).
    pub async fn jwt_denied_since(
        &self,
        after: &DenyKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DenyEntry>> {
        self.call(self.backend.jwt_denied_since(after, now, limit))
            .await
    }

    /// Up to `limit` logout marks unexpired at `now`, after `after` in
    /// `(created_at, issuer, kind, value)` order.
    pub async fn logout_marks_since(
        &self,
        after: &LogoutKeyset,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LogoutMark>> {
        self.call(self.backend.logout_marks_since(after, now, limit))
            .await
    }

    /// Up to `limit` owners after `after` in `(changed_at, issuer,
    /// user_id)` order.
    pub async fn owners_changed_since(
        &self,
        after: &OwnerKeyset,
        limit: u32,
    ) -> Result<Vec<OwnerRecord>> {
        self.call(self.backend.owners_changed_since(after, limit))
            .await
    }
}
