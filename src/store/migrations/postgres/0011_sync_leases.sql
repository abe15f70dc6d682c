-- Postgres dialect; same version as sqlite/0011_sync_leases.sql.
-- Leases on periodic work one replica at a time should do (the PAT owner
-- sync of an issuer: `owner_sync:<issuer>`). A replica takes or renews a
-- lease while it is free, run out, or already its own; a replica that dies
-- leaves a lease that runs out, and another takes over. `lease_until` is
-- set and compared on the database's clock (now()), never a replica's.
CREATE TABLE sync_leases (
    name        text        PRIMARY KEY,
    holder      text        NOT NULL,
    lease_until timestamptz NOT NULL
);
