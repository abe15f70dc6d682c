//! SQLite: reading the outbox (`token_events`), fanning events out to
//! webhook deliveries, leasing and finishing deliveries, expiry notices.
//! SQLite has one writer at a time, so a claim in an IMMEDIATE transaction
//! is the lease (no `SKIP LOCKED` needed): two processes on one file never
//! claim the same row.

use chrono::{DateTime, Utc};
use rusqlite::{Row, TransactionBehavior, params};
use serde_json::json;
use uuid::Uuid;

use super::super::events::{
    AttemptOutcome, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord, DeliveryState,
    EventKind, EventQuery, EventRecord, HookFilter, token_event,
};
use super::super::row::COLS;
use super::super::{Actor, ActorKind, Cause, Result, StoreError};
use super::writes::insert_event;
use super::{SqliteStore, from_ts, query_records, ts, uuid_at};

/// The columns of an event row, in the order [`event`] reads them.
const EVENT_COLS: &str = "e.seq, e.id, e.event, e.at, e.token_id, e.owner_issuer, e.owner_id, \
     e.actor_kind, e.actor_subject, e.actor_issuer, e.actor_token_id, e.client_addr, e.data";

fn opt_uuid(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Uuid>> {
    r.get::<_, Option<String>>(i)?
        .map(|s| uuid_at(i, &s))
        .transpose()
}

fn event(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let data: String = r.get(12)?;
    Ok(EventRecord {
        seq: r.get(0)?,
        id: uuid_at(1, &r.get::<_, String>(1)?)?,
        event: r.get(2)?,
        at: from_ts(3, r.get(3)?)?,
        token_id: opt_uuid(r, 4)?,
        owner_issuer: r.get(5)?,
        owner_id: r.get(6)?,
        actor: Actor {
            kind: ActorKind::parse(&r.get::<_, String>(7)?),
            subject: r.get(8)?,
            issuer: r.get(9)?,
            token_id: opt_uuid(r, 10)?,
            client_addr: r.get(11)?,
        },
        data: serde_json::from_str(&data).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

fn delivery(r: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let state: String = r.get(5)?;
    Ok(DeliveryRecord {
        id: uuid_at(0, &r.get::<_, String>(0)?)?,
        webhook: r.get(1)?,
        event_id: uuid_at(2, &r.get::<_, String>(2)?)?,
        event: r.get(3)?,
        token_id: opt_uuid(r, 4)?,
        state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Dead),
        attempts: r.get(6)?,
        created_at: from_ts(7, r.get(7)?)?,
        next_attempt_at: from_ts(8, r.get(8)?)?,
        finished_at: r
            .get::<_, Option<i64>>(9)?
            .map(|v| from_ts(9, v))
            .transpose()?,
        last_status: r.get(10)?,
        last_error: r.get(11)?,
        seq: r.get(12)?,
        replica: r.get(13)?,
    })
}

fn json_list(v: &[String]) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(e.to_string()))
}

impl SqliteStore {
    /// Per-webhook fan-out (see migration 9): each of `hooks` is advanced
    /// from its own cursor, created at its first sighting (the events
    /// written since `since`). The IMMEDIATE transaction makes this the only
    /// writer, so every event up to `MAX(seq)` is committed.
    pub(super) async fn fan_out_sql(
        &self,
        hooks: Vec<HookFilter>,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let high: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM token_events", [], |r| {
                    r.get(0)
                })?;
            let mut most = 0;
            for h in &hooks {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO webhook_cursors (webhook, last_seq) \
                     VALUES (?1, (SELECT COALESCE(MAX(seq), 0) FROM token_events \
                                  WHERE at < ?2 AND seq <= ?3))",
                )?
                .execute(params![h.key, ts(since), high])?;
                let last: i64 = tx
                    .prepare_cached("SELECT last_seq FROM webhook_cursors WHERE webhook = ?1")?
                    .query_row([&h.key], |r| r.get(0))?;
                let due: Vec<(i64, String)> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT seq, event FROM token_events WHERE seq > ?1 AND seq <= ?2 \
                         ORDER BY seq LIMIT ?3",
                    )?;
                    let rows =
                        stmt.query_map(params![last, high, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                for (seq, _) in due.iter().filter(|(_, name)| h.wants(name)) {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO webhook_deliveries \
                         (id, event_seq, webhook, state, attempts, created_at, next_attempt_at) \
                         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)",
                    )?
                    .execute(params![
                        Uuid::new_v4().to_string(),
                        seq,
                        h.key,
                        ts(now)
                    ])?;
                }
                let upto = match due.last() {
                    Some((seq, _)) if due.len() == limit as usize => *seq,
                    _ => high,
                };
                tx.prepare_cached(
                    "UPDATE webhook_cursors SET last_seq = ?2 WHERE webhook = ?1 AND last_seq < ?2",
                )?
                .execute(params![h.key, upto])?;
                most = most.max(due.len());
            }
            tx.commit()?;
            Ok(most)
        })
        .await
    }

    pub(super) async fn claim_sql(
        &self,
        owner: String,
        hooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let keys = json_list(hooks)?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed: Vec<(String, String, i32, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "UPDATE webhook_deliveries SET lease_owner = ?1, lease_until = ?2, \
                     attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM webhook_deliveries \
                       WHERE state = 'pending' AND next_attempt_at <= ?3 \
                         AND (lease_until IS NULL OR lease_until <= ?3) \
                         AND webhook IN (SELECT value FROM json_each(?4)) \
                       ORDER BY next_attempt_at LIMIT ?5) \
                     RETURNING id, webhook, attempts, event_seq",
                )?;
                let rows = stmt
                    .query_map(params![owner, ts(lease_until), ts(now), keys, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(claimed.len());
            for (id, webhook, attempts, seq) in claimed {
                let ev = tx
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM token_events e WHERE e.seq = ?1"
                    ))?
                    .query_row([seq], event)?;
                out.push(ClaimedDelivery {
                    id: uuid_at(0, &id)?,
                    webhook,
                    attempts,
                    event: ev,
                });
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub(super) async fn finish_sql(
        &self,
        id: Uuid,
        owner: String,
        outcome: AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.run(move |c| {
            let (state, next, status, error) = match outcome {
                AttemptOutcome::Delivered { status } => ("delivered", None, Some(status), None),
                AttemptOutcome::Retry {
                    status,
                    error,
                    next_attempt_at,
                } => ("pending", Some(ts(next_attempt_at)), status, Some(error)),
                AttemptOutcome::Dead { status, error } => ("dead", None, status, Some(error)),
            };
            let finished = (state != "pending").then(|| ts(now));
            // A 2xx recorded after the max_age sweep dead-lettered the delivery
            // (its lease ran out while the outcome was on its way) still wins:
            // the receiver has the event, so it must never be listed as dead.
            c.prepare_cached(
                "UPDATE webhook_deliveries SET state = ?3, \
                 next_attempt_at = COALESCE(?4, next_attempt_at), finished_at = ?5, \
                 last_status = ?6, last_error = ?7, lease_until = NULL \
                 WHERE id = ?1 AND lease_owner = ?2 \
                   AND (state = 'pending' OR (state = 'dead' AND ?3 = 'delivered'))",
            )?
            .execute(params![
                id.to_string(),
                owner,
                state,
                next,
                finished,
                status,
                error
            ])
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn expire_deliveries_sql(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE webhook_deliveries SET state = 'dead', finished_at = ?2, \
                 last_error = COALESCE(last_error || '; ', '') || \
                   'not delivered within notify.delivery.max_age', \
                 lease_until = NULL \
                 WHERE state = 'pending' AND (lease_until IS NULL OR lease_until <= ?2) \
                   AND event_seq IN (SELECT seq FROM token_events WHERE at < ?1)",
            )?
            .execute(params![ts(older_than), ts(now)])
            .map(|n| n as u64)
        })
        .await
    }

    pub(super) async fn deliveries_sql(&self, q: DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        self.run(move |c| {
            let (before_seq, before_hook) = q.before.unzip();
            let mut stmt = c.prepare_cached(
                "SELECT d.id, d.webhook, e.id, e.event, e.token_id, d.state, d.attempts, \
                 d.created_at, d.next_attempt_at, d.finished_at, d.last_status, d.last_error, \
                 d.event_seq, d.lease_owner \
                 FROM webhook_deliveries d JOIN token_events e ON e.seq = d.event_seq \
                 WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.webhook = ?2) \
                   AND (?3 IS NULL OR d.event_seq < ?3 OR (d.event_seq = ?3 AND d.webhook > ?4)) \
                 ORDER BY d.event_seq DESC, d.webhook LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    q.state.map(DeliveryState::as_str),
                    q.webhook,
                    before_seq,
                    before_hook,
                    q.limit
                ],
                delivery,
            )?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn delivery_counts_sql(&self) -> Result<DeliveryCounts> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT state, COUNT(*) FROM webhook_deliveries \
                 WHERE state IN ('pending', 'dead') GROUP BY state",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = DeliveryCounts::default();
            for row in rows {
                let (state, n) = row?;
                let n = n.max(0).unsigned_abs();
                match state.as_str() {
                    "pending" => out.pending = n,
                    _ => out.dead = n,
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn events_sql(&self, q: EventQuery) -> Result<Vec<EventRecord>> {
        self.run(move |c| {
            let (issuer, sub) = q.party.unzip();
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM token_events e \
                 WHERE (?1 IS NULL OR (e.owner_issuer = ?1 AND e.owner_id = ?2) \
                        OR (e.actor_issuer = ?1 AND e.actor_subject = ?2)) \
                   AND (?3 IS NULL OR e.token_id = ?3) AND (?4 IS NULL OR e.event = ?4) \
                   AND (?5 IS NULL OR e.seq < ?5) \
                 ORDER BY e.seq DESC LIMIT ?6"
            ))?;
            let rows = stmt.query_map(
                params![
                    issuer,
                    sub,
                    q.token_id.map(|u| u.to_string()),
                    q.event,
                    q.before_seq,
                    q.limit
                ],
                event,
            )?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn purge_events_sql(&self, before: DateTime<Utc>) -> Result<u64> {
        self.run(move |c| {
            c.prepare_cached("DELETE FROM token_events WHERE at < ?1")?
                .execute([ts(before)])
                .map(|n| n as u64)
        })
        .await
    }

    pub(super) async fn expiry_notices_sql(
        &self,
        now: DateTime<Utc>,
        mut thresholds: Vec<i64>,
    ) -> Result<usize> {
        // Most urgent first: a token inside several windows (portcullis was
        // down) gets only the nearest notice.
        thresholds.sort_unstable();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cause = Cause::system("expiry");
            let mut n = 0;
            for t in thresholds.iter().copied().filter(|t| *t > 0) {
                let micros = t.saturating_mul(1_000_000);
                let recs = query_records(
                    &tx,
                    &format!(
                        "UPDATE personal_access_tokens SET expiry_notice = ?2 \
                         WHERE revoked_at IS NULL AND expires_at > ?1 AND expires_at <= ?1 + ?3 \
                           AND created_at < expires_at - ?3 \
                           AND (expiry_notice IS NULL OR expiry_notice > ?2) RETURNING {COLS}"
                    ),
                    params![ts(now), t, micros],
                )?;
                for r in &recs {
                    let left = (r.expires_at - now).num_seconds();
                    let ev = token_event(
                        EventKind::TokenExpiring,
                        r,
                        &cause,
                        now,
                        json!({ "threshold_seconds": t, "expires_in_seconds": left }),
                    );
                    insert_event(&tx, &ev)?;
                }
                n += recs.len();
            }
            let expired = query_records(
                &tx,
                &format!(
                    "UPDATE personal_access_tokens SET expiry_notice = 0 \
                     WHERE revoked_at IS NULL AND expires_at <= ?1 \
                       AND (expiry_notice IS NULL OR expiry_notice > 0) RETURNING {COLS}"
                ),
                params![ts(now)],
            )?;
            for r in &expired {
                let ev = token_event(EventKind::TokenExpired, r, &cause, now, json!(null));
                insert_event(&tx, &ev)?;
            }
            tx.commit()?;
            Ok(n + expired.len())
        })
        .await
    }
}
