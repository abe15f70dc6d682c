-- Postgres dialect; same version as sqlite/0003_token_hash_version.sql.
-- How token_hash was computed: 1 = SHA-256 of the token (every row before
-- this migration), 2 = HMAC-SHA256(pat.hash_key, token).
ALTER TABLE personal_access_tokens
    ADD COLUMN hash_version smallint NOT NULL DEFAULT 1 CHECK (hash_version IN (1, 2));
