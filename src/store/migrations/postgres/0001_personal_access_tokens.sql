-- Postgres dialect; same version as sqlite/0001_personal_access_tokens.sql.
CREATE TABLE personal_access_tokens (
    id           uuid        PRIMARY KEY,
    user_id      text        NOT NULL,
    username     text        NOT NULL,
    name         text        NOT NULL,
    description  text,
    token_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    display_hint text        NOT NULL,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    rotated_from uuid,
    kind         text        NOT NULL DEFAULT 'opaque' CHECK (kind IN ('opaque', 'jwt')),
    jti          text
);
CREATE INDEX personal_access_tokens_user_id_idx ON personal_access_tokens (user_id);
CREATE UNIQUE INDEX personal_access_tokens_jti_idx ON personal_access_tokens (jti);
CREATE INDEX personal_access_tokens_rotated_from_idx ON personal_access_tokens (rotated_from);
CREATE INDEX personal_access_tokens_revoked_at_idx ON personal_access_tokens (revoked_at);
