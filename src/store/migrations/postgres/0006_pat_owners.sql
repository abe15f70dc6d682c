-- Postgres dialect; same version as sqlite/0006_pat_owners.sql.
-- PAT owners as Keycloak last reported them (pat.owner_sync): enabled,
-- disabled (their PATs are suspended) or deleted (revoked), and their
-- current scopes from roles (NULL: not restricted).
-- `changed_at` moves only when state or scopes change (the resync watermark);
-- `synced_at` on every successful read.
CREATE TABLE pat_owners (
    issuer     text        NOT NULL,
    user_id    text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('enabled', 'disabled', 'deleted')),
    scopes     text[],
    synced_at  timestamptz NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, user_id)
);
CREATE INDEX pat_owners_changed_at_idx ON pat_owners (changed_at);
