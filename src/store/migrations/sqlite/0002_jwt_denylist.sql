-- SQLite dialect. Revoked JWTs by `jti` or Keycloak session id (`sid`),
-- kept until the JWT itself would have expired.
CREATE TABLE jwt_denylist (
    kind       TEXT    NOT NULL CHECK (kind IN ('jti', 'sid')),
    value      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX jwt_denylist_expires_at_idx ON jwt_denylist (expires_at);
