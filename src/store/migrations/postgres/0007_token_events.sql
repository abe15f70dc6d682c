-- Postgres dialect; same version as sqlite/0007_token_events.sql.
-- Token events: the outbox of the webhooks and the audit trail in one
-- table, written in the same transaction as the change each describes
-- (store/events.rs). `seq` orders them (the audit cursor); `fanned_out`
-- says a replica has created this event's webhook deliveries.
CREATE TABLE token_events (
    seq            bigserial   PRIMARY KEY,
    id             uuid        NOT NULL UNIQUE,
    event          text        NOT NULL,
    at             timestamptz NOT NULL,
    token_id       uuid,
    owner_issuer   text        NOT NULL,
    owner_id       text        NOT NULL,
    actor_kind     text        NOT NULL,
    actor_subject  text        NOT NULL,
    actor_issuer   text        NOT NULL,
    actor_token_id uuid,
    client_addr    text,
    data           jsonb       NOT NULL,
    fanned_out     boolean     NOT NULL DEFAULT false
);
CREATE INDEX token_events_owner_idx ON token_events (owner_issuer, owner_id, seq);
CREATE INDEX token_events_actor_idx ON token_events (actor_issuer, actor_subject, seq);
CREATE INDEX token_events_token_idx ON token_events (token_id, seq);
CREATE INDEX token_events_unfanned_idx ON token_events (seq) WHERE NOT fanned_out;
CREATE INDEX token_events_at_idx ON token_events (at);

-- One row per (event, webhook). A replica claims due rows with
-- SELECT … FOR UPDATE SKIP LOCKED and leases them (lease_owner,
-- lease_until): a replica killed mid-delivery leaves a lease that runs out,
-- and another replica (or the same one restarted) delivers again.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    event_seq       bigint      NOT NULL REFERENCES token_events (seq) ON DELETE CASCADE,
    webhook         text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    lease_owner     text,
    lease_until     timestamptz,
    finished_at     timestamptz,
    last_status     integer,
    last_error      text,
    UNIQUE (event_seq, webhook)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_state_idx ON webhook_deliveries (state, event_seq);

-- Expiry notices sent for a token: the threshold (seconds before expiry) of
-- the last `token.expiring` notice, 0 once `token.expired` was sent, NULL
-- before any. Tokens already expired or revoked need none.
ALTER TABLE personal_access_tokens ADD COLUMN expiry_notice bigint;
UPDATE personal_access_tokens SET expiry_notice = 0
 WHERE revoked_at IS NOT NULL OR expires_at <= now();
CREATE INDEX personal_access_tokens_expires_at_idx ON personal_access_tokens (expires_at)
 WHERE revoked_at IS NULL;
