-- SQLite dialect; same version as postgres/0010_resync_keysets.sql.
-- The resync loop reads each source in keyset pages ordered by
-- (timestamp, key) (store/page.rs). These indexes serve those pages
-- directly; the single-column ones they replace are their prefixes.
CREATE INDEX personal_access_tokens_created_at_id_idx ON personal_access_tokens (created_at, id);
CREATE INDEX personal_access_tokens_revoked_at_id_idx ON personal_access_tokens (revoked_at, id);
DROP INDEX personal_access_tokens_revoked_at_idx;
CREATE INDEX jwt_denylist_created_at_key_idx ON jwt_denylist (created_at, kind, value);
CREATE INDEX logout_marks_created_at_key_idx ON logout_marks (created_at, issuer, kind, value);
DROP INDEX logout_marks_created_at_idx;
CREATE INDEX pat_owners_changed_at_key_idx ON pat_owners (changed_at, issuer, user_id);
DROP INDEX pat_owners_changed_at_idx;
