//! Postgres: reading the outbox (`token_events`), fanning events out to
//! webhook deliveries, leasing and finishing deliveries, expiry notices.
//! Replicas share the tables: the fan-out and the claim take their rows
//! with `SELECT … FOR UPDATE SKIP LOCKED`, so concurrent replicas split
//! the work instead of doing it twice, and a claimed delivery carries a
//! lease (`lease_owner`, `lease_until`) that outlives one attempt. Leases
//! are set and compared on the database's clock (`now()`), so replicas'
//! clock skew cannot shorten or stretch them.

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_postgres::Row;
use uuid::Uuid;

use super::super::events::{
    AttemptOutcome, ClaimedDelivery, DeliveryCounts, DeliveryQuery, DeliveryRecord, DeliveryState,
    EventKind, EventQuery, EventRecord, HookFilter, token_event,
};
use super::super::row::COLS;
use super::super::{Actor, ActorKind, Cause, Result, StoreError};
use super::writes::insert_event;
use super::{PgStore, col, pg_err, record};

/// The columns of an event row, in the order [`event`] reads them.
const EVENT_COLS: &str = "e.seq, e.id, e.event, e.at, e.token_id, e.owner_issuer, e.owner_id, \
     e.actor_kind, e.actor_subject, e.actor_issuer, e.actor_token_id, e.client_addr, e.data";

fn event(r: &Row) -> Result<EventRecord> {
    Ok(EventRecord {
        seq: col(r, 0)?,
        id: col(r, 1)?,
        event: col(r, 2)?,
        at: col(r, 3)?,
        token_id: col(r, 4)?,
        owner_issuer: col(r, 5)?,
        owner_id: col(r, 6)?,
        actor: Actor {
            kind: ActorKind::parse(&col::<String>(r, 7)?),
            subject: col(r, 8)?,
            issuer: col(r, 9)?,
            token_id: col(r, 10)?,
            client_addr: col(r, 11)?,
        },
        data: col(r, 12)?,
    })
}

fn delivery(r: &Row) -> Result<DeliveryRecord> {
    let state: String = col(r, 5)?;
    Ok(DeliveryRecord {
        id: col(r, 0)?,
        webhook: col(r, 1)?,
        event_id: col(r, 2)?,
        event: col(r, 3)?,
        token_id: col(r, 4)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Other("unknown delivery state".into()))?,
        attempts: col(r, 6)?,
        created_at: col(r, 7)?,
        next_attempt_at: col(r, 8)?,
        finished_at: col(r, 9)?,
        last_status: col(r, 10)?,
        last_error: col(r, 11)?,
        seq: col(r, 12)?,
        replica: col(r, 13)?,
    })
}

/// The advisory lock event writers hold shared for their transaction and
/// fan-out takes exclusively to find the committed high-water mark.
pub(super) const FAN_OUT_BARRIER: i64 = 0x706f_7274_6f75_7401;

impl PgStore {
    /// Per-webhook fan-out (see migration 9): each of `hooks` is advanced
    /// from its own cursor, created at its first sighting (the events
    /// written since `since`), up to a high-water mark below which every
    /// event is committed (a `bigserial` is handed out before commit, so a
    /// later `seq` can be visible before an earlier one: event writers hold
    /// [`FAN_OUT_BARRIER`] shared, and taking it exclusively waits them out).
    /// Another replica advancing the same webhook is skipped (SKIP LOCKED).
    pub(super) async fn fan_out_sql(
        &self,
        hooks: &[HookFilter],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize> {
        let mut c = self.client().await?;
        let high: i64 = {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FAN_OUT_BARRIER])
                .await
                .map_err(pg_err)?;
            let r = tx
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM token_events", &[])
                .await
                .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            col(&r, 0)?
        };
        let keys: Vec<&str> = hooks.iter().map(|h| h.key.as_str()).collect();
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO webhook_cursors (webhook, last_seq) \
             SELECT k, (SELECT COALESCE(MAX(seq), 0) FROM token_events WHERE at < $2 AND seq <= $3) \
             FROM unnest($1::text[]) AS k ON CONFLICT DO NOTHING",
            &[&keys, &since, &high],
        )
        .await
        .map_err(pg_err)?;
        let cursors = tx
            .query(
                "SELECT webhook, last_seq FROM webhook_cursors WHERE webhook = ANY($1) \
                 FOR UPDATE SKIP LOCKED",
                &[&keys],
            )
            .await
            .map_err(pg_err)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO webhook_deliveries \
                 (id, event_seq, webhook, state, attempts, created_at, next_attempt_at) \
                 VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        let mut most = 0;
        for r in &cursors {
            let (key, last): (String, i64) = (col(r, 0)?, col(r, 1)?);
            let Some(h) = hooks.iter().find(|h| h.key == key) else {
                continue;
            };
            let due = tx
                .query(
                    "SELECT seq, event FROM token_events WHERE seq > $1 AND seq <= $2 \
                     ORDER BY seq LIMIT $3",
                    &[&last, &high, &i64::from(limit)],
                )
                .await
                .map_err(pg_err)?;
            let mut upto = high;
            for r in &due {
                let (seq, name): (i64, String) = (col(r, 0)?, col(r, 1)?);
                if h.wants(&name) {
                    tx.execute(&insert, &[&Uuid::new_v4(), &seq, &h.key, &now])
                        .await
                        .map_err(pg_err)?;
                }
                if due.len() == limit as usize {
                    upto = seq;
                }
            }
            tx.execute(
                "UPDATE webhook_cursors SET last_seq = $2 WHERE webhook = $1 AND last_seq < $2",
                &[&key, &upto],
            )
            .await
            .map_err(pg_err)?;
            most = most.max(due.len());
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(most)
    }

    pub(super) async fn claim_sql(
        &self,
        owner: &str,
        hooks: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        // Leases run on the database's clock, not the replicas': a lease
        // set by a replica whose clock is behind would look expired to the
        // others at once (a second delivery), one set by a replica ahead
        // would hold a crashed holder's delivery for as long. Only its
        // length comes from the caller; `now` still decides what is due.
        let lease_secs = (lease_until - now)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64());
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "UPDATE webhook_deliveries d SET lease_owner = $1, \
                 lease_until = now() + $2::float8 * interval '1 second', \
                 attempts = d.attempts + 1 \
                 FROM (SELECT id FROM webhook_deliveries \
                       WHERE state = 'pending' AND next_attempt_at <= $3 \
                         AND (lease_until IS NULL OR lease_until <= now()) AND webhook = ANY($4) \
                       ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) due \
                 WHERE d.id = due.id RETURNING d.id, d.webhook, d.attempts, d.event_seq",
            )
            .await
            .map_err(pg_err)?;
        let keys: Vec<&str> = hooks.iter().map(String::as_str).collect();
        let claimed = tx
            .query(
                &stmt,
                &[&owner, &lease_secs, &now, &keys, &i64::from(limit)],
            )
            .await
            .map_err(pg_err)?;
        let seqs: Vec<i64> = claimed.iter().map(|r| col(r, 3)).collect::<Result<_>>()?;
        let sql = format!("SELECT {EVENT_COLS} FROM token_events e WHERE e.seq = ANY($1)");
        let events = tx.query(&sql, &[&seqs]).await.map_err(pg_err)?;
        let events: Vec<EventRecord> = events.iter().map(event).collect::<Result<_>>()?;
        tx.commit().await.map_err(pg_err)?;
        let mut out = Vec::with_capacity(claimed.len());
        for r in &claimed {
            let seq: i64 = col(r, 3)?;
            let ev = events
                .iter()
                .find(|e| e.seq == seq)
                .cloned()
                .ok_or_else(|| StoreError::Other("claimed delivery without its event".into()))?;
            out.push(ClaimedDelivery {
                id: col(r, 0)?,
                webhook: col(r, 1)?,
                attempts: col(r, 2)?,
                event: ev,
            });
        }
        Ok(out)
    }

    pub(super) async fn finish_sql(
        &self,
        id: Uuid,
        owner: &str,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (state, next, status, error) = match outcome {
            AttemptOutcome::Delivered { status } => ("delivered", None, Some(*status), None),
            AttemptOutcome::Retry {
                status,
                error,
                next_attempt_at,
            } => (
                "pending",
                Some(*next_attempt_at),
                *status,
                Some(error.as_str()),
            ),
            AttemptOutcome::Dead { status, error } => ("dead", None, *status, Some(error.as_str())),
        };
        let finished = (state != "pending").then_some(now);
        let status = status.map(i32::from);
        let c = self.client().await?;
        // A 2xx recorded after the max_age sweep dead-lettered the delivery
        // (its lease ran out while the outcome was on its way) still wins:
        // the receiver has the event, so it must never be listed as dead.
        let n = c
            .execute(
                "UPDATE webhook_deliveries SET state = $3, \
                 next_attempt_at = COALESCE($4, next_attempt_at), finished_at = $5, \
                 last_status = $6, last_error = $7, lease_until = NULL \
                 WHERE id = $1 AND lease_owner = $2 \
                   AND (state = 'pending' OR (state = 'dead' AND $3 = 'delivered'))",
                &[&id, &owner, &state, &next, &finished, &status, &error],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    pub(super) async fn expire_deliveries_sql(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let c = self.client().await?;
        c.execute(
            "UPDATE webhook_deliveries SET state = 'dead', finished_at = $2, \
             last_error = COALESCE(last_error || '; ', '') || \
               'not delivered within notify.delivery.max_age', \
             lease_until = NULL \
             WHERE state = 'pending' AND (lease_until IS NULL OR lease_until <= now()) \
               AND event_seq IN (SELECT seq FROM token_events WHERE at < $1)",
            &[&older_than, &now],
        )
        .await
        .map_err(pg_err)
    }

    pub(super) async fn deliveries_sql(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRecord>> {
        let c = self.client().await?;
        let (before_seq, before_hook) = q.before.clone().unzip();
        let rows = c
            .query(
                "SELECT d.id, d.webhook, e.id, e.event, e.token_id, d.state, d.attempts, \
                 d.created_at, d.next_attempt_at, d.finished_at, d.last_status, d.last_error, \
                 d.event_seq, d.lease_owner \
                 FROM webhook_deliveries d JOIN token_events e ON e.seq = d.event_seq \
                 WHERE ($1::text IS NULL OR d.state = $1) AND ($2::text IS NULL OR d.webhook = $2) \
                   AND ($3::bigint IS NULL OR d.event_seq < $3 \
                        OR (d.event_seq = $3 AND d.webhook > $4)) \
                 ORDER BY d.event_seq DESC, d.webhook LIMIT $5",
                &[
                    &q.state.map(DeliveryState::as_str),
                    &q.webhook,
                    &before_seq,
                    &before_hook,
                    &i64::from(q.limit),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(delivery).collect()
    }

    pub(super) async fn delivery_counts_sql(&self) -> Result<DeliveryCounts> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT state, COUNT(*) FROM webhook_deliveries \
                 WHERE state IN ('pending', 'dead') GROUP BY state",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let mut out = DeliveryCounts::default();
        for r in &rows {
            let (state, n): (String, i64) = (col(r, 0)?, col(r, 1)?);
            let n = n.max(0).unsigned_abs();
            match state.as_str() {
                "pending" => out.pending = n,
                _ => out.dead = n,
            }
        }
        Ok(out)
    }

    pub(super) async fn events_sql(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        let c = self.client().await?;
        let (issuer, sub) = q.party.clone().unzip();
        let sql = format!(
            "SELECT {EVENT_COLS} FROM token_events e \
             WHERE ($1::text IS NULL OR (e.owner_issuer = $1 AND e.owner_id = $2) \
                    OR (e.actor_issuer = $1 AND e.actor_subject = $2)) \
               AND ($3::uuid IS NULL OR e.token_id = $3) AND ($4::text IS NULL OR e.event = $4) \
               AND ($5::bigint IS NULL OR e.seq < $5) \
             ORDER BY e.seq DESC LIMIT $6"
        );
        let rows = c
            .query(
                &sql,
                &[
                    &issuer,
                    &sub,
                    &q.token_id,
                    &q.event,
                    &q.before_seq,
                    &i64::from(q.limit),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(event).collect()
    }

    pub(super) async fn purge_events_sql(&self, before: DateTime<Utc>) -> Result<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM token_events WHERE at < $1", &[&before])
            .await
            .map_err(pg_err)
    }

    pub(super) async fn expiry_notices_sql(
        &self,
        now: DateTime<Utc>,
        thresholds: &[i64],
    ) -> Result<usize> {
        // Most urgent first: a token inside several windows (portcullis was
        // down) gets only the nearest notice.
        let mut thresholds: Vec<i64> = thresholds.iter().copied().filter(|t| *t > 0).collect();
        thresholds.sort_unstable();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let cause = Cause::system("expiry");
        let mut n = 0;
        let sql = format!(
            "UPDATE personal_access_tokens SET expiry_notice = $2::bigint \
             WHERE revoked_at IS NULL AND expires_at > $1 AND expires_at <= $3 \
               AND created_at < expires_at - ($2::bigint * interval '1 second') \
               AND (expiry_notice IS NULL OR expiry_notice > $2::bigint) RETURNING {COLS}"
        );
        for t in thresholds {
            let until = now + chrono::TimeDelta::seconds(t);
            let rows = tx.query(&sql, &[&now, &t, &until]).await.map_err(pg_err)?;
            for r in &rows {
                let rec = record(r)?;
                let left = (rec.expires_at - now).num_seconds();
                let ev = token_event(
                    EventKind::TokenExpiring,
                    &rec,
                    &cause,
                    now,
                    json!({ "threshold_seconds": t, "expires_in_seconds": left }),
                );
                insert_event(&tx, &ev).await?;
            }
            n += rows.len();
        }
        let sql = format!(
            "UPDATE personal_access_tokens SET expiry_notice = 0 \
             WHERE revoked_at IS NULL AND expires_at <= $1 \
               AND (expiry_notice IS NULL OR expiry_notice > 0) RETURNING {COLS}"
        );
        let rows = tx.query(&sql, &[&now]).await.map_err(pg_err)?;
        for r in &rows {
            let ev = token_event(
                EventKind::TokenExpired,
                &record(r)?,
                &cause,
                now,
                json!(null),
            );
            insert_event(&tx, &ev).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(n + rows.len())
    }
}
