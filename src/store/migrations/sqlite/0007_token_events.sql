-- SQLite dialect; same version as postgres/0007_token_events.sql.
-- Token events: the outbox of the webhooks and the audit trail in one
-- table, written in the same transaction as the change each describes
-- (store/events.rs). `seq` orders them (the audit cursor); `fanned_out`
-- says a replica has created this event's webhook deliveries. `data` is a
-- JSON object.
CREATE TABLE token_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    event          TEXT    NOT NULL,
    at             INTEGER NOT NULL,
    token_id       TEXT,
    owner_issuer   TEXT    NOT NULL,
    owner_id       TEXT    NOT NULL,
    actor_kind     TEXT    NOT NULL,
    actor_subject  TEXT    NOT NULL,
    actor_issuer   TEXT    NOT NULL,
    actor_token_id TEXT,
    client_addr    TEXT,
    data           TEXT    NOT NULL,
    fanned_out     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX token_events_owner_idx ON token_events (owner_issuer, owner_id, seq);
CREATE INDEX token_events_actor_idx ON token_events (actor_issuer, actor_subject, seq);
CREATE INDEX token_events_token_idx ON token_events (token_id, seq);
CREATE INDEX token_events_unfanned_idx ON token_events (seq) WHERE fanned_out = 0;
CREATE INDEX token_events_at_idx ON token_events (at);

-- One row per (event, webhook), leased by the process delivering it
-- (lease_owner, lease_until) inside an IMMEDIATE transaction (SQLite has
-- one writer at a time): a process killed mid-delivery leaves a lease that
-- runs out, and the next claim delivers again.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY NOT NULL,
    event_seq       INTEGER NOT NULL REFERENCES token_events (seq) ON DELETE CASCADE,
    webhook         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    finished_at     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    UNIQUE (event_seq, webhook)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_state_idx ON webhook_deliveries (state, event_seq);

-- Expiry notices sent for a token: the threshold (seconds before expiry) of
-- the last `token.expiring` notice, 0 once `token.expired` was sent, NULL
-- before any. Tokens already expired or revoked need none.
ALTER TABLE personal_access_tokens ADD COLUMN expiry_notice INTEGER;
UPDATE personal_access_tokens SET expiry_notice = 0
 WHERE revoked_at IS NOT NULL
    OR expires_at <= CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER);
CREATE INDEX personal_access_tokens_expires_at_idx ON personal_access_tokens (expires_at)
 WHERE revoked_at IS NULL;
