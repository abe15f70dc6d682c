//! SQLite: the writes that change tokens or owners, each in one IMMEDIATE
//! transaction with the events it causes (`token_events`, the outbox).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::json;
use uuid::Uuid;

use super::super::events::{
    self, EventKind, NewEvent, leak_events, reuse_events, rotation_events, token_event,
};
use super::super::row::{self, COLS, sort_newest_first};
use super::super::{
    Cause, NewToken, OwnerRecord, Result, StoreError, TokenHash, TokenRecord, Usage, network_of,
};
use super::{SqliteStore, insert_token, query_records, record, ts};

fn to_sql_err(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Inserts `e` on `c` (inside the caller's transaction).
pub(super) fn insert_event(c: &Connection, e: &NewEvent) -> rusqlite::Result<()> {
    let data = serde_json::to_string(&e.data).map_err(to_sql_err)?;
    c.prepare_cached(
        "INSERT INTO token_events (id, event, at, token_id, owner_issuer, owner_id, actor_kind, \
         actor_subject, actor_issuer, actor_token_id, client_addr, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        e.id.to_string(),
        e.kind.as_str(),
        ts(e.at),
        e.token_id.map(|u| u.to_string()),
        e.owner_issuer,
        e.owner_id,
        e.actor.kind.as_str(),
        e.actor.subject,
        e.actor.issuer,
        e.actor.token_id.map(|u| u.to_string()),
        e.actor.client_addr,
        data,
    ])?;
    Ok(())
}

fn insert_events(c: &Connection, evs: &[NewEvent]) -> rusqlite::Result<()> {
    evs.iter().try_for_each(|e| insert_event(c, e))
}

fn immediate(c: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

impl SqliteStore {
    pub(super) async fn insert_sql(&self, t: NewToken, cause: Cause) -> Result<TokenRecord> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let rec = insert_token(&tx, &t)?;
            let ev = token_event(
                EventKind::TokenCreated,
                &rec,
                &cause,
                rec.created_at,
                json!(null),
            );
            insert_event(&tx, &ev)?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    pub(super) async fn revoke_sql(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: Cause,
    ) -> Result<Option<TokenRecord>> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = ?1");
            let Some(before) = tx
                .prepare_cached(&sql)?
                .query_row([id.to_string()], record)
                .optional()?
            else {
                return Ok(None);
            };
            if before.revoked_at.is_some() {
                return Ok(Some(before)); // idempotent: no second event
            }
            let sql = format!(
                "UPDATE personal_access_tokens SET revoked_at = ?2 WHERE id = ?1 RETURNING {COLS}"
            );
            let rec = tx
                .prepare_cached(&sql)?
                .query_row(params![id.to_string(), ts(now)], record)?;
            insert_events(
                &tx,
                &events::revoked_events(std::slice::from_ref(&rec), &cause, now),
            )?;
            tx.commit()?;
            Ok(Some(rec))
        })
        .await
    }

    pub(super) async fn revoke_all_sql(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
        cause: Cause,
    ) -> Result<Vec<TokenRecord>> {
        let owner = (issuer.to_owned(), user_id.to_owned());
        let mut v = self
            .run(move |c| {
                let tx = immediate(c)?;
                let sql = format!(
                    "UPDATE personal_access_tokens SET revoked_at = ?3 \
                     WHERE user_issuer = ?1 AND user_id = ?2 AND revoked_at IS NULL RETURNING {COLS}"
                );
                let recs = query_records(&tx, &sql, params![owner.0, owner.1, ts(now)])?;
                insert_events(&tx, &events::revoked_events(&recs, &cause, now))?;
                tx.commit()?;
                Ok(recs)
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    pub(super) async fn rotate_sql(
        &self,
        old_id: Uuid,
        new: NewToken,
        now: DateTime<Utc>,
        cause: Cause,
    ) -> Result<TokenRecord> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = ?1");
            let old = tx
                .prepare_cached(&sql)?
                .query_row([old_id.to_string()], record)
                .optional()?;
            let old = match old {
                // The owner is (issuer, sub): the same sub at another issuer is another user.
                Some(o) if o.user_issuer != new.user_issuer || o.user_id != new.user_id => {
                    return Ok(Err(StoreError::NotFound));
                }
                None => return Ok(Err(StoreError::NotFound)),
                Some(o) if o.revoked_at.is_some() => {
                    return Ok(Err(StoreError::Conflict("token already revoked".into())));
                }
                Some(o) => o,
            };
            tx.execute(
                "UPDATE personal_access_tokens SET revoked_at = ?2 WHERE id = ?1",
                params![old_id.to_string(), ts(now)],
            )?;
            let new = NewToken {
                rotated_from: Some(old_id),
                ..new
            };
            let rec = insert_token(&tx, &new)?;
            insert_events(&tx, &rotation_events(&old, &rec, &cause, now))?;
            tx.commit()?;
            Ok(Ok(rec))
        })
        .await?
    }

    pub(super) async fn revoke_chain_sql(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        cause: Cause,
    ) -> Result<Vec<TokenRecord>> {
        let mut v = self
            .run(move |c| {
                let tx = immediate(c)?;
                let chain_ids = "WITH RECURSIVE chain(id, prev) AS ( \
                       SELECT id, rotated_from FROM personal_access_tokens WHERE id = ?1 \
                       UNION \
                       SELECT t.id, t.rotated_from FROM personal_access_tokens t \
                       JOIN chain c ON t.rotated_from = c.id OR t.id = c.prev)";
                let fresh = query_records(
                    &tx,
                    &format!(
                        "{chain_ids} UPDATE personal_access_tokens SET revoked_at = ?2 \
                         WHERE id IN (SELECT id FROM chain) AND revoked_at IS NULL RETURNING {COLS}"
                    ),
                    params![id.to_string(), ts(now)],
                )?;
                let chain = query_records(
                    &tx,
                    &format!(
                        "{chain_ids} SELECT {COLS} FROM personal_access_tokens \
                         WHERE id IN (SELECT id FROM chain)"
                    ),
                    params![id.to_string()],
                )?;
                insert_events(&tx, &reuse_events(id, &chain, &fresh, &cause, now))?;
                tx.commit()?;
                Ok(chain)
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    pub(super) async fn revoke_hashes_sql(
        &self,
        hashes: Vec<TokenHash>,
        now: DateTime<Utc>,
        cause: Cause,
    ) -> Result<Vec<TokenRecord>> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE token_hash = ?1");
            let mut found = Vec::new();
            // The same statements for every hash, found or not (timing).
            for h in &hashes {
                let before = tx
                    .prepare_cached(&sql)?
                    .query_row([&h[..]], record)
                    .optional()?;
                tx.prepare_cached(
                    "UPDATE personal_access_tokens SET revoked_at = COALESCE(revoked_at, ?2) \
                     WHERE token_hash = ?1",
                )?
                .execute(params![&h[..], ts(now)])?;
                found.extend(before);
            }
            let mut out = Vec::with_capacity(found.len());
            for before in found {
                let fresh = before.revoked_at.is_none();
                let rec = TokenRecord {
                    revoked_at: before.revoked_at.or(Some(now)),
                    ..before
                };
                insert_events(&tx, &leak_events(&rec, fresh, &cause, now))?;
                out.push(rec);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub(super) async fn put_owner_events_sql(&self, o: &OwnerRecord) -> Result<bool> {
        let o = o.clone();
        let scopes = o
            .scopes
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        self.run(move |c| {
            let tx = immediate(c)?;
            let prev: Option<String> = tx
                .query_row(
                    "SELECT state FROM pat_owners WHERE issuer = ?1 AND user_id = ?2",
                    params![o.issuer, o.user_id],
                    |r| r.get(0),
                )
                .optional()?;
            let changed: i64 = tx
                .prepare_cached(&row::owner_upsert_sql('?', "IS NOT"))?
                .query_row(
                    params![
                        o.issuer,
                        o.user_id,
                        o.state.as_str(),
                        scopes,
                        ts(o.synced_at),
                        ts(o.changed_at)
                    ],
                    |r| r.get(0),
                )?;
            let changed = changed == ts(o.changed_at);
            if changed && let Some(ev) = events::owner_event(prev.as_deref(), &o) {
                insert_event(&tx, &ev)?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    pub(super) async fn touch_usage_sql(&self, batch: Vec<Usage>, new_ip: bool) -> Result<u64> {
        let rows: Vec<(String, i64, Option<String>, Option<&str>)> = batch
            .iter()
            .map(|u| {
                let ip = u.ip.map(|ip| ip.to_canonical().to_string());
                (u.id.to_string(), ts(u.at), ip, u.user_agent.as_deref())
            })
            .collect();
        let json = serde_json::to_string(&rows).map_err(|e| StoreError::Other(e.to_string()))?;
        self.run(move |c| {
            let tx = immediate(c)?;
            let n = tx
                .prepare_cached(
                    "UPDATE personal_access_tokens AS t SET last_used_at = u.at, \
                     last_used_ip = COALESCE(u.ip, t.last_used_ip), \
                     last_used_user_agent = COALESCE(u.ua, t.last_used_user_agent) \
                     FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at, \
                                  json_extract(value, '$[2]') AS ip, json_extract(value, '$[3]') AS ua \
                           FROM json_each(?1)) AS u \
                     WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
                )?
                .execute([json])?;
            if new_ip {
                for u in batch.iter().filter(|u| u.ip.is_some()) {
                    let Some(ip) = u.ip else { continue };
                    let net = network_of(ip);
                    let added = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO token_networks (token_id, network, first_seen) \
                             VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![u.id.to_string(), net, ts(u.at)])?;
                    let known: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM token_networks WHERE token_id = ?1",
                        [u.id.to_string()],
                        |r| r.get(0),
                    )?;
                    if added == 1 && known > 1 {
                        let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = ?1");
                        if let Some(rec) = tx
                            .prepare_cached(&sql)?
                            .query_row([u.id.to_string()], record)
                            .optional()?
                        {
                            insert_event(&tx, &events::new_ip_event(&rec, u, &net))?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}
