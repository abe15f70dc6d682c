-- Postgres dialect; same version as sqlite/0002_jwt_denylist.sql.
CREATE TABLE jwt_denylist (
    kind       text        NOT NULL CHECK (kind IN ('jti', 'sid')),
    value      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX jwt_denylist_expires_at_idx ON jwt_denylist (expires_at);
