//! Postgres: the writes that change tokens or owners, each in one
//! transaction with the events it causes (`token_events`, the outbox).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::json;
use uuid::Uuid;

use super::super::events::{
    self, EventKind, NewEvent, leak_events, reuse_events, rotation_events, token_event,
};
use super::super::row::{self, COLS, sort_newest_first};
use super::super::{
    Cause, NewToken, OwnerRecord, Result, StoreError, TokenHash, TokenRecord, Usage, network_of,
};
use super::{PgStore, col, insert_token, pg_err, record};

/// Inserts `e` on `c` (inside the caller's transaction), holding the
/// fan-out barrier shared until that transaction ends, so that fan-out
/// never passes this event's `seq` before it is committed.
pub(super) async fn insert_event(c: &impl GenericClient, e: &NewEvent) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO token_events (id, event, at, token_id, owner_issuer, owner_id, actor_kind, \
             actor_subject, actor_issuer, actor_token_id, client_addr, data) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
             FROM (SELECT pg_advisory_xact_lock_shared($13)) AS fan_out_barrier",
        )
        .await
        .map_err(pg_err)?;
    c.execute(
        &stmt,
        &[
            &e.id,
            &e.kind.as_str(),
            &e.at,
            &e.token_id,
            &e.owner_issuer,
            &e.owner_id,
            &e.actor.kind.as_str(),
            &e.actor.subject,
            &e.actor.issuer,
            &e.actor.token_id,
            &e.actor.client_addr,
            &e.data,
            &super::outbox::FAN_OUT_BARRIER,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn insert_events(c: &impl GenericClient, evs: &[NewEvent]) -> Result<()> {
    for e in evs {
        insert_event(c, e).await?;
    }
    Ok(())
}

async fn records(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<TokenRecord>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
    let rows = c.query(&stmt, p).await.map_err(pg_err)?;
    rows.iter().map(record).collect()
}

impl PgStore {
    pub(super) async fn insert_sql(&self, t: &NewToken, cause: &Cause) -> Result<TokenRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let rec = insert_token(&tx, t).await?;
        let ev = token_event(
            EventKind::TokenCreated,
            &rec,
            cause,
            rec.created_at,
            json!(null),
        );
        insert_event(&tx, &ev).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(rec)
    }

    pub(super) async fn revoke_sql(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Option<TokenRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = $1 FOR UPDATE");
        let Some(before) = records(&tx, &sql, &[&id]).await?.into_iter().next() else {
            return Ok(None);
        };
        if before.revoked_at.is_some() {
            return Ok(Some(before)); // idempotent: no second event
        }
        let sql = format!(
            "UPDATE personal_access_tokens SET revoked_at = $2 WHERE id = $1 RETURNING {COLS}"
        );
        let recs = records(&tx, &sql, &[&id, &now]).await?;
        insert_events(&tx, &events::revoked_events(&recs, cause, now)).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(recs.into_iter().next())
    }

    pub(super) async fn revoke_all_sql(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let sql = format!(
            "UPDATE personal_access_tokens SET revoked_at = $3 \
             WHERE user_issuer = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING {COLS}"
        );
        let mut v = records(&tx, &sql, &[&issuer, &user_id, &now]).await?;
        insert_events(&tx, &events::revoked_events(&v, cause, now)).await?;
        tx.commit().await.map_err(pg_err)?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    pub(super) async fn rotate_sql(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<TokenRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = $1 FOR UPDATE");
        let Some(old) = records(&tx, &sql, &[&old_id]).await?.into_iter().next() else {
            return Err(StoreError::NotFound);
        };
        // The owner is (issuer, sub): the same sub at another issuer is another user.
        if old.user_id != new.user_id || old.user_issuer != new.user_issuer {
            return Err(StoreError::NotFound);
        }
        if old.revoked_at.is_some() {
            return Err(StoreError::Conflict("token already revoked".into()));
        }
        tx.execute(
            "UPDATE personal_access_tokens SET revoked_at = $2 WHERE id = $1",
            &[&old_id, &now],
        )
        .await
        .map_err(pg_err)?;
        let t = NewToken {
            rotated_from: Some(old_id),
            ..new
        };
        let rec = insert_token(&tx, &t).await?;
        insert_events(&tx, &rotation_events(&old, &rec, cause, now)).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(rec)
    }

    pub(super) async fn revoke_chain_sql(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let chain_ids = "WITH RECURSIVE chain(id, prev) AS ( \
               SELECT id, rotated_from FROM personal_access_tokens WHERE id = $1 \
               UNION \
               SELECT t.id, t.rotated_from FROM personal_access_tokens t \
               JOIN chain c ON t.rotated_from = c.id OR t.id = c.prev)";
        let fresh = records(
            &tx,
            &format!(
                "{chain_ids} UPDATE personal_access_tokens SET revoked_at = $2 \
                 WHERE id IN (SELECT id FROM chain) AND revoked_at IS NULL RETURNING {COLS}"
            ),
            &[&id, &now],
        )
        .await?;
        let mut chain = records(
            &tx,
            &format!(
                "{chain_ids} SELECT {COLS} FROM personal_access_tokens WHERE id IN (SELECT id FROM chain)"
            ),
            &[&id],
        )
        .await?;
        insert_events(&tx, &reuse_events(id, &chain, &fresh, cause, now)).await?;
        tx.commit().await.map_err(pg_err)?;
        sort_newest_first(&mut chain);
        Ok(chain)
    }

    pub(super) async fn revoke_hashes_sql(
        &self,
        hashes: &[TokenHash],
        now: DateTime<Utc>,
        cause: &Cause,
    ) -> Result<Vec<TokenRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let select =
            format!("SELECT {COLS} FROM personal_access_tokens WHERE token_hash = $1 FOR UPDATE");
        let mut found = Vec::new();
        // The same statements for every hash, found or not (timing).
        for h in hashes {
            let before = records(&tx, &select, &[&&h[..]]).await?;
            tx.execute(
                "UPDATE personal_access_tokens SET revoked_at = COALESCE(revoked_at, $2) \
                 WHERE token_hash = $1",
                &[&&h[..], &now],
            )
            .await
            .map_err(pg_err)?;
            found.extend(before);
        }
        let mut out = Vec::with_capacity(found.len());
        for before in found {
            let fresh = before.revoked_at.is_none();
            let rec = TokenRecord {
                revoked_at: before.revoked_at.or(Some(now)),
                ..before
            };
            insert_events(&tx, &leak_events(&rec, fresh, cause, now)).await?;
            out.push(rec);
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    pub(super) async fn put_owner_events_sql(&self, o: &OwnerRecord) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let prev: Option<String> = tx
            .query_opt(
                "SELECT state FROM pat_owners WHERE issuer = $1 AND user_id = $2 FOR UPDATE",
                &[&o.issuer, &o.user_id],
            )
            .await
            .map_err(pg_err)?
            .map(|r| col(&r, 0))
            .transpose()?;
        let stmt = tx
            .prepare_cached(&row::owner_upsert_sql('$', "IS DISTINCT FROM"))
            .await
            .map_err(pg_err)?;
        let r = tx
            .query_one(
                &stmt,
                &[
                    &o.issuer,
                    &o.user_id,
                    &o.state.as_str(),
                    &o.scopes,
                    &o.synced_at,
                    &o.changed_at,
                ],
            )
            .await
            .map_err(pg_err)?;
        // timestamptz keeps microseconds.
        let changed_at: DateTime<Utc> = col(&r, 0)?;
        let changed = changed_at.timestamp_micros() == o.changed_at.timestamp_micros();
        if changed && let Some(ev) = events::owner_event(prev.as_deref(), o) {
            insert_event(&tx, &ev).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(changed)
    }

    pub(super) async fn touch_usage_sql(&self, batch: &[Usage], new_ip: bool) -> Result<u64> {
        let ids: Vec<Uuid> = batch.iter().map(|u| u.id).collect();
        let ats: Vec<DateTime<Utc>> = batch.iter().map(|u| u.at).collect();
        let ips: Vec<Option<String>> = batch
            .iter()
            .map(|u| u.ip.map(|ip| ip.to_canonical().to_string()))
            .collect();
        let uas: Vec<Option<&str>> = batch.iter().map(|u| u.user_agent.as_deref()).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "UPDATE personal_access_tokens AS t SET last_used_at = u.at, \
                 last_used_ip = COALESCE(u.ip, t.last_used_ip), \
                 last_used_user_agent = COALESCE(u.ua, t.last_used_user_agent) \
                 FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS u(id, at, ip, ua) \
                 WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
            )
            .await
            .map_err(pg_err)?;
        let n = tx
            .execute(&stmt, &[&ids, &ats, &ips, &uas])
            .await
            .map_err(pg_err)?;
        if new_ip {
            for u in batch {
                let Some(ip) = u.ip else { continue };
                let net = network_of(ip);
                let added = tx
                    .execute(
                        "INSERT INTO token_networks (token_id, network, first_seen) \
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&u.id, &net, &u.at],
                    )
                    .await
                    .map_err(pg_err)?;
                let known: i64 = col(
                    &tx.query_one(
                        "SELECT COUNT(*) FROM token_networks WHERE token_id = $1",
                        &[&u.id],
                    )
                    .await
                    .map_err(pg_err)?,
                    0,
                )?;
                if added == 1 && known > 1 {
                    let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = $1");
                    if let Some(rec) = records(&tx, &sql, &[&u.id]).await?.into_iter().next() {
                        insert_event(&tx, &events::new_ip_event(&rec, u, &net)).await?;
                    }
                }
            }
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(n)
    }
}
