-- Postgres dialect; same version as sqlite/0008_token_usage.sql.
-- Where a token was last used from, written with last_used_at in the same
-- batched flush (pat::usage): the client address Envoy reported and the
-- User-Agent header.
ALTER TABLE personal_access_tokens ADD COLUMN last_used_ip text;
ALTER TABLE personal_access_tokens ADD COLUMN last_used_user_agent text;

-- The networks (/24 IPv4, /48 IPv6) each token was used from, for
-- `token.new_ip` (pat.new_ip_events): a use from a network not listed is new.
CREATE TABLE token_networks (
    token_id   uuid        NOT NULL,
    network    text        NOT NULL,
    first_seen timestamptz NOT NULL,
    PRIMARY KEY (token_id, network)
);
