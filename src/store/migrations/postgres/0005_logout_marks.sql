-- Postgres dialect; same version as sqlite/0005_logout_marks.sql.
-- OpenID Connect Back-Channel Logout: a logged-out session (`kind = 'sid'`)
-- or subject (`kind = 'sub'`, tokens issued at or before `not_before`) of
-- one issuer, refused until `expires_at` (now + issuers[].max_token_lifetime).
-- `created_at` moves when an upsert extends a mark (the resync watermark).
CREATE TABLE logout_marks (
    issuer     text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('sid', 'sub')),
    value      text        NOT NULL,
    not_before timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, kind, value)
);
CREATE INDEX logout_marks_created_at_idx ON logout_marks (created_at);
CREATE INDEX logout_marks_expires_at_idx ON logout_marks (expires_at);
