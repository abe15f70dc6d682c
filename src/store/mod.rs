//! Token store: personal access tokens, the JWT deny-list, back-channel
//! logout marks, PAT owners' synced state, and the token events (outbox
//! and audit trail, [`events`]) with their webhook deliveries, on SQLite
//! or Postgres.
//!
//! Both backends run the same versioned migrations ([`MIGRATIONS`]); the SQL
//! differs per dialect but versions move in lock-step. Column conventions:
//!
//! | column | Postgres | SQLite |
//! | --- | --- | --- |
//! | `id`, `rotated_from` | `uuid` | `TEXT` (lowercase hyphenated) |
//! | `token_hash` | `bytea` (32 bytes, unique) | `BLOB` (32 bytes, unique) |
//! | `scopes` | `text[]` | `TEXT` holding a JSON array of strings |
//! | timestamps | `timestamptz` | `INTEGER` unix microseconds, UTC |
//!
//! Every call through [`Store`] is bounded by `store.timeout`; a timeout or a
//! lost connection is [`StoreError::Unavailable`], which callers must turn
//! into a 503, never an allow.
//!
//! Layout: `records` holds the data types ([`TokenRecord`], [`NewToken`],
//! [`StoreError`], …), `backend` the [`TokenStore`] trait a backend
//! implements, `handle` the [`Store`] callers hold (timeouts, counters).
//! `row` is the token row mapping both backends share (column list, insert
//! values, decoder), so `sqlite` and `postgres` hold only their SQL. `page`
//! holds the resync loop's reads, keyset pages of bounded size
//! ([`Keyset`]; backends' SQL in `sqlite_resync.rs`/`postgres_resync.rs`
//! and next to each table's other queries).

mod backend;
mod config;
pub mod events;
mod handle;
mod handle_events;
mod known;
mod page;
mod postgres;
mod records;
mod row;
mod sqlite;

pub use backend::TokenStore;
pub use config::{StoreConfig, StoreKind, redact_url};
pub use events::{
    Actor, ActorKind, AttemptOutcome, Cause, ClaimedDelivery, DeliveryCounts, DeliveryQuery,
    DeliveryRecord, DeliveryState, EventKind, EventQuery, EventRecord, HookFilter, LogoutClaims,
    NewEvent,
};
pub use handle::Store;
pub use page::{DenyKeyset, HashAt, Keyset, LogoutKeyset, OwnerKeyset, PatKeyset};
pub use records::{
    DenyEntry, DenylistKind, HashVersion, LogoutKind, LogoutMark, NewToken, OwnerRecord,
    OwnerState, Result, StoreError, TokenHash, TokenKind, TokenQuery, TokenRecord, TokenState,
    Usage, network_of,
};

/// `(version, name, sqlite sql, postgres sql)`, applied in order.
pub const MIGRATIONS: &[(u32, &str, &str, &str)] = &[
    (
        1,
        "personal_access_tokens",
        include_str!("migrations/sqlite/0001_personal_access_tokens.sql"),
        include_str!("migrations/postgres/0001_personal_access_tokens.sql"),
    ),
    (
        2,
        "jwt_denylist",
        include_str!("migrations/sqlite/0002_jwt_denylist.sql"),
        include_str!("migrations/postgres/0002_jwt_denylist.sql"),
    ),
    (
        3,
        "token_hash_version",
        include_str!("migrations/sqlite/0003_token_hash_version.sql"),
        include_str!("migrations/postgres/0003_token_hash_version.sql"),
    ),
    (
        4,
        "token_owner_issuer",
        include_str!("migrations/sqlite/0004_token_owner_issuer.sql"),
        include_str!("migrations/postgres/0004_token_owner_issuer.sql"),
    ),
    (
        5,
        "logout_marks",
        include_str!("migrations/sqlite/0005_logout_marks.sql"),
        include_str!("migrations/postgres/0005_logout_marks.sql"),
    ),
    (
        6,
        "pat_owners",
        include_str!("migrations/sqlite/0006_pat_owners.sql"),
        include_str!("migrations/postgres/0006_pat_owners.sql"),
    ),
    (
        7,
        "token_events",
        include_str!("migrations/sqlite/0007_token_events.sql"),
        include_str!("migrations/postgres/0007_token_events.sql"),
    ),
    (
        8,
        "token_usage",
        include_str!("migrations/sqlite/0008_token_usage.sql"),
        include_str!("migrations/postgres/0008_token_usage.sql"),
    ),
    (
        9,
        "webhook_cursors",
        include_str!("migrations/sqlite/0009_webhook_cursors.sql"),
        include_str!("migrations/postgres/0009_webhook_cursors.sql"),
    ),
    (
        10,
        "resync_keysets",
        include_str!("migrations/sqlite/0010_resync_keysets.sql"),
        include_str!("migrations/postgres/0010_resync_keysets.sql"),
    ),
    (
        11,
        "sync_leases",
        include_str!("migrations/sqlite/0011_sync_leases.sql"),
        include_str!("migrations/postgres/0011_sync_leases.sql"),
    ),
];
