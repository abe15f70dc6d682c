-- SQLite dialect; same version as postgres/0011_sync_leases.sql.
-- Leases on periodic work one replica at a time should do (the PAT owner
-- sync of an issuer: `owner_sync:<issuer>`). A replica takes or renews a
-- lease while it is free, run out, or already its own; a replica that dies
-- leaves a lease that runs out, and another takes over.
CREATE TABLE sync_leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
);
