-- Postgres dialect; same version as sqlite/0004_token_owner_issuer.sql.
-- A token's owner is (user_issuer, user_id): the same `sub` at two issuers
-- is two users. Rows from before this migration have '' (unknown issuer);
-- start-up gives them the issuer when exactly one is configured, and until
-- then they match no caller (see Store::claim_unowned).
ALTER TABLE personal_access_tokens ADD COLUMN user_issuer text NOT NULL DEFAULT '';
CREATE INDEX personal_access_tokens_owner_idx ON personal_access_tokens (user_issuer, user_id);
