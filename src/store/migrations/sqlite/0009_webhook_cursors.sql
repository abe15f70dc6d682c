-- SQLite dialect; same version as postgres/0009_webhook_cursors.sql.
-- Per-webhook fan-out cursors. Before this, one replica fanned an event out
-- for the webhooks in ITS config and marked the event done for all: during
-- a rolling deploy adding a webhook, old replicas fanned out without it and
-- its events were lost. Now each webhook has its own position: only a
-- replica that knows the webhook creates its deliveries and advances it.
-- A webhook seen for the first time starts at the events written since the
-- replica that first saw it started (not the whole retention).
CREATE TABLE webhook_cursors (
    webhook  TEXT    PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
-- Webhooks that already have deliveries continue where the old scheme
-- stopped: before the first event not fanned out yet.
INSERT INTO webhook_cursors (webhook, last_seq)
SELECT webhook,
       COALESCE((SELECT MIN(seq) - 1 FROM token_events WHERE fanned_out = 0),
                (SELECT COALESCE(MAX(seq), 0) FROM token_events))
  FROM webhook_deliveries GROUP BY webhook;
