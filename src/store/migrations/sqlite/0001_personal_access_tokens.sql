-- SQLite dialect. Conventions (see store/mod.rs):
--   uuids: lowercase hyphenated TEXT; timestamps: INTEGER unix microseconds (UTC);
--   scopes: JSON array TEXT; token_hash: 32-byte BLOB (SHA-256 of the token).
CREATE TABLE personal_access_tokens (
    id           TEXT    PRIMARY KEY NOT NULL,
    user_id      TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    description  TEXT,
    token_hash   BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    display_hint TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    rotated_from TEXT,
    kind         TEXT    NOT NULL DEFAULT 'opaque' CHECK (kind IN ('opaque', 'jwt')),
    jti          TEXT
);
CREATE INDEX personal_access_tokens_user_id_idx ON personal_access_tokens (user_id);
CREATE UNIQUE INDEX personal_access_tokens_jti_idx ON personal_access_tokens (jti);
CREATE INDEX personal_access_tokens_rotated_from_idx ON personal_access_tokens (rotated_from);
CREATE INDEX personal_access_tokens_revoked_at_idx ON personal_access_tokens (revoked_at);
