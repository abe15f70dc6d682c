//! SQLite backend: one connection in WAL mode behind a `std::sync::Mutex`,
//! used only inside `spawn_blocking` (the lock is never held across `.await`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    DenyEntry, DenyKind, HashVersion, MIGRATIONS, NewToken, Result, StoreError, TokenHash,
    TokenKind, TokenRecord, TokenStore, sort_newest_first,
};

const COLS: &str = "id, user_id, username, name, description, token_hash, display_hint, scopes, \
                    created_at, expires_at, last_used_at, revoked_at, rotated_from, kind, jti, \
                    user_issuer, hash_version";

pub(super) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub(super) async fn open(path: PathBuf, busy: Duration) -> Result<SqliteStore> {
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("create {}: {e}", dir.display()))
                })?;
            }
            let conn = Connection::open(&path).map_err(map_err)?;
            conn.busy_timeout(busy).map_err(map_err)?;
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(map_err)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(map_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite open task: {e}")))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Other("sqlite connection mutex poisoned".into()))?;
            f(&mut guard).map_err(map_err)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite task: {e}")))?
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => {
                StoreError::Conflict("unique constraint violated".into())
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        },
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        _ => StoreError::Other(e.to_string()),
    }
}

/// A `token_hash` column value as a hash.
fn hash32(h: Vec<u8>) -> Result<TokenHash> {
    h.try_into()
        .map_err(|_| StoreError::Other("token_hash is not 32 bytes".into()))
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn conv<E: std::error::Error + Send + Sync + 'static>(
    idx: usize,
    ty: Type,
    e: E,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, Box::new(e))
}

fn from_ts(idx: usize, v: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| {
        conv(
            idx,
            Type::Integer,
            StoreError::Other("timestamp out of range".into()),
        )
    })
}

fn opt_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    row.get::<_, Option<i64>>(idx)?
        .map(|v| from_ts(idx, v))
        .transpose()
}

fn uuid_at(idx: usize, s: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| conv(idx, Type::Text, e))
}

fn record(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let hash: Vec<u8> = row.get(5)?;
    let token_hash: TokenHash = hash.try_into().map_err(|_| {
        conv(
            5,
            Type::Blob,
            StoreError::Other("token_hash is not 32 bytes".into()),
        )
    })?;
    let scopes: String = row.get(7)?;
    let kind: String = row.get(13)?;
    Ok(TokenRecord {
        id: uuid_at(0, &row.get::<_, String>(0)?)?,
        user_id: row.get(1)?,
        username: row.get(2)?,
        name: row.get(3)?,
        description: row.get(4)?,
        token_hash,
        display_hint: row.get(6)?,
        scopes: serde_json::from_str(&scopes).map_err(|e| conv(7, Type::Text, e))?,
        created_at: from_ts(8, row.get(8)?)?,
        expires_at: from_ts(9, row.get(9)?)?,
        last_used_at: opt_ts(row, 10)?,
        revoked_at: opt_ts(row, 11)?,
        rotated_from: row
            .get::<_, Option<String>>(12)?
            .map(|s| uuid_at(12, &s))
            .transpose()?,
        kind: TokenKind::parse(&kind).ok_or_else(|| {
            conv(
                13,
                Type::Text,
                StoreError::Other("unknown token kind".into()),
            )
        })?,
        jti: row.get(14)?,
        user_issuer: row.get(15)?,
        hash_version: HashVersion::from_i16(row.get(16)?).ok_or_else(|| {
            conv(
                16,
                Type::Integer,
                StoreError::Other("unknown hash_version".into()),
            )
        })?,
    })
}

fn query_records(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Vec<TokenRecord>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(p, record)?;
    rows.collect()
}

fn insert_token(conn: &Connection, t: &NewToken) -> rusqlite::Result<TokenRecord> {
    let scopes = serde_json::to_string(&t.scopes).map_err(|e| conv(7, Type::Text, e))?;
    let sql = format!(
        "INSERT INTO personal_access_tokens ({COLS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, ?11, ?12, ?13, ?14, ?15) RETURNING {COLS}"
    );
    conn.prepare_cached(&sql)?.query_row(
        params![
            t.id.to_string(),
            t.user_id,
            t.username,
            t.name,
            t.description,
            &t.token_hash[..],
            t.display_hint,
            scopes,
            ts(t.created_at),
            ts(t.expires_at),
            t.rotated_from.map(|u| u.to_string()),
            t.kind.as_str(),
            t.jti,
            t.user_issuer,
            t.hash_version.as_i16(),
        ],
        record,
    )
}

#[async_trait::async_trait]
impl TokenStore for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<Vec<u32>> {
        self.run(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )?;
            let mut applied = Vec::new();
            for &(version, name, sql, _) in MIGRATIONS {
                let done: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                    [version],
                    |r| r.get(0),
                )?;
                if done {
                    continue;
                }
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![version, name, ts(Utc::now())],
                )?;
                applied.push(version);
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.run(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn insert(&self, token: NewToken) -> Result<TokenRecord> {
        self.run(move |c| insert_token(c, &token)).await
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>> {
        let hash = *hash;
        self.run(move |c| {
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE token_hash = ?1");
            c.prepare_cached(&sql)?
                .query_row([&hash[..]], record)
                .optional()
        })
        .await
    }

    async fn find_by_jti(&self, jti: &str) -> Result<Option<TokenRecord>> {
        let jti = jti.to_owned();
        self.run(move |c| {
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE jti = ?1");
            c.prepare_cached(&sql)?.query_row([jti], record).optional()
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<TokenRecord>> {
        self.run(move |c| {
            let sql = format!("SELECT {COLS} FROM personal_access_tokens WHERE id = ?1");
            c.prepare_cached(&sql)?
                .query_row([id.to_string()], record)
                .optional()
        })
        .await
    }

    async fn list_for_user(&self, issuer: &str, user_id: &str) -> Result<Vec<TokenRecord>> {
        let owner = (issuer.to_owned(), user_id.to_owned());
        let mut v = self
            .run(move |c| {
                let sql = format!(
                    "SELECT {COLS} FROM personal_access_tokens WHERE user_issuer = ?1 AND user_id = ?2"
                );
                query_records(c, &sql, params![owner.0, owner.1])
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    async fn count_active(&self, issuer: &str, user_id: &str, now: DateTime<Utc>) -> Result<u64> {
        let owner = (issuer.to_owned(), user_id.to_owned());
        self.run(move |c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM personal_access_tokens \
                 WHERE user_issuer = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
            )?
            .query_row(params![owner.0, owner.1, ts(now)], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0).unsigned_abs())
        })
        .await
    }

    async fn claim_unowned(&self, issuer: &str) -> Result<u64> {
        let issuer = issuer.to_owned();
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE personal_access_tokens SET user_issuer = ?1 WHERE user_issuer = ''",
            )?
            .execute([issuer])
            .map(|n| n as u64)
        })
        .await
    }

    async fn revoke(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<TokenRecord>> {
        self.run(move |c| {
            let sql = format!(
                "UPDATE personal_access_tokens SET revoked_at = COALESCE(revoked_at, ?2) \
                 WHERE id = ?1 RETURNING {COLS}"
            );
            c.prepare_cached(&sql)?
                .query_row(params![id.to_string(), ts(now)], record)
                .optional()
        })
        .await
    }

    async fn revoke_all_for_user(
        &self,
        issuer: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>> {
        let owner = (issuer.to_owned(), user_id.to_owned());
        let mut v = self
            .run(move |c| {
                let sql = format!(
                    "UPDATE personal_access_tokens SET revoked_at = ?3 \
                     WHERE user_issuer = ?1 AND user_id = ?2 AND revoked_at IS NULL RETURNING {COLS}"
                );
                query_records(c, &sql, params![owner.0, owner.1, ts(now)])
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    async fn rotate(&self, old_id: Uuid, new: NewToken, now: DateTime<Utc>) -> Result<TokenRecord> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old: Option<(String, String, Option<i64>)> = tx
                .query_row(
                    "SELECT user_issuer, user_id, revoked_at FROM personal_access_tokens WHERE id = ?1",
                    [old_id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match old {
                // The owner is (issuer, sub): the same sub at another issuer is another user.
                Some((iss, user, _)) if iss != new.user_issuer || user != new.user_id => {
                    return Ok(Err(StoreError::NotFound));
                }
                None => return Ok(Err(StoreError::NotFound)),
                Some((_, _, Some(_))) => {
                    return Ok(Err(StoreError::Conflict("token already revoked".into())));
                }
                Some((_, _, None)) => {}
            }
            tx.execute(
                "UPDATE personal_access_tokens SET revoked_at = ?2 WHERE id = ?1",
                params![old_id.to_string(), ts(now)],
            )?;
            let new = NewToken {
                rotated_from: Some(old_id),
                ..new
            };
            let rec = insert_token(&tx, &new)?;
            tx.commit()?;
            Ok(Ok(rec))
        })
        .await?
    }

    async fn revoke_chain(&self, id: Uuid, now: DateTime<Utc>) -> Result<Vec<TokenRecord>> {
        let mut v = self
            .run(move |c| {
                let sql = format!(
                    "WITH RECURSIVE chain(id, prev) AS ( \
                       SELECT id, rotated_from FROM personal_access_tokens WHERE id = ?1 \
                       UNION \
                       SELECT t.id, t.rotated_from FROM personal_access_tokens t \
                       JOIN chain c ON t.rotated_from = c.id OR t.id = c.prev) \
                     UPDATE personal_access_tokens SET revoked_at = COALESCE(revoked_at, ?2) \
                     WHERE id IN (SELECT id FROM chain) RETURNING {COLS}"
                );
                query_records(c, &sql, params![id.to_string(), ts(now)])
            })
            .await?;
        sort_newest_first(&mut v);
        Ok(v)
    }

    async fn touch_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<u64> {
        let json: Vec<(String, i64)> = batch
            .iter()
            .map(|(id, at)| (id.to_string(), ts(*at)))
            .collect();
        let json = serde_json::to_string(&json).map_err(|e| StoreError::Other(e.to_string()))?;
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE personal_access_tokens AS t SET last_used_at = u.at \
                 FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at \
                       FROM json_each(?1)) AS u \
                 WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
            )?
            .execute([json])
            .map(|n| n as u64)
        })
        .await
    }

    async fn deny_jwt(
        &self,
        kind: DenyKind,
        value: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let value = value.to_owned();
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO jwt_denylist (kind, value, expires_at, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (kind, value) DO UPDATE SET \
                 created_at = CASE WHEN excluded.expires_at > expires_at THEN excluded.created_at ELSE created_at END, \
                 expires_at = MAX(expires_at, excluded.expires_at)",
            )?
            .execute(params![kind.as_str(), value, ts(expires_at), ts(now)])
            .map(|_| ())
        })
        .await
    }

    async fn is_jwt_denied(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (jti, sid) = (jti.map(str::to_owned), sid.map(str::to_owned));
        self.run(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jwt_denylist WHERE expires_at > ?3 AND \
                 ((kind = 'jti' AND value = ?1) OR (kind = 'sid' AND value = ?2)))",
            )?
            .query_row(params![jti, sid, ts(now)], |r| r.get(0))
        })
        .await
    }

    async fn purge_jwt_denylist(&self, now: DateTime<Utc>) -> Result<u64> {
        self.run(move |c| {
            c.prepare_cached("DELETE FROM jwt_denylist WHERE expires_at <= ?1")?
                .execute([ts(now)])
                .map(|n| n as u64)
        })
        .await
    }

    async fn upgrade_hash(
        &self,
        id: Uuid,
        old: &TokenHash,
        new: &TokenHash,
    ) -> Result<Option<TokenRecord>> {
        let (old, new) = (*old, *new);
        self.run(move |c| {
            let sql = format!(
                "UPDATE personal_access_tokens SET token_hash = ?3, hash_version = 2 \
                 WHERE id = ?1 AND token_hash = ?2 AND hash_version = 1 RETURNING {COLS}"
            );
            c.prepare_cached(&sql)?
                .query_row(params![id.to_string(), &old[..], &new[..]], record)
                .optional()
        })
        .await
    }

    async fn active_hashes(&self, now: DateTime<Utc>) -> Result<Vec<TokenHash>> {
        let rows: Vec<Vec<u8>> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT token_hash FROM personal_access_tokens \
                     WHERE revoked_at IS NULL AND expires_at > ?1",
                )?;
                let rows = stmt.query_map([ts(now)], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        rows.into_iter().map(hash32).collect()
    }

    async fn created_since(
        &self,
        watermark: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(TokenHash, DateTime<Utc>)>> {
        let rows: Vec<(Vec<u8>, i64)> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT token_hash, created_at FROM personal_access_tokens \
                     WHERE created_at > ?1 AND revoked_at IS NULL AND expires_at > ?2 \
                     ORDER BY created_at, id",
                )?;
                let rows =
                    stmt.query_map([ts(watermark), ts(now)], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(h, at)| {
                let at = DateTime::from_timestamp_micros(at)
                    .ok_or_else(|| StoreError::Other("timestamp out of range".into()))?;
                Ok((hash32(h)?, at))
            })
            .collect()
    }

    async fn revoked_since(
        &self,
        watermark: DateTime<Utc>,
    ) -> Result<Vec<(TokenHash, DateTime<Utc>)>> {
        let rows: Vec<(Vec<u8>, i64)> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT token_hash, revoked_at FROM personal_access_tokens \
                     WHERE revoked_at > ?1 ORDER BY revoked_at, id",
                )?;
                let rows = stmt.query_map([ts(watermark)], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(h, at)| {
                let hash: TokenHash = h
                    .try_into()
                    .map_err(|_| StoreError::Other("token_hash is not 32 bytes".into()))?;
                let at = DateTime::from_timestamp_micros(at)
                    .ok_or_else(|| StoreError::Other("timestamp out of range".into()))?;
                Ok((hash, at))
            })
            .collect()
    }

    async fn jwt_denied_since(
        &self,
        watermark: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<DenyEntry>> {
        let rows: Vec<(String, String, i64, i64)> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT kind, value, expires_at, created_at FROM jwt_denylist \
                     WHERE created_at > ?1 AND expires_at > ?2 ORDER BY created_at, kind, value",
                )?;
                let rows = stmt.query_map([ts(watermark), ts(now)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
                rows.collect()
            })
            .await?;
        let at = |v: i64| {
            DateTime::from_timestamp_micros(v)
                .ok_or_else(|| StoreError::Other("timestamp out of range".into()))
        };
        rows.into_iter()
            .map(|(kind, value, exp, changed)| {
                Ok(DenyEntry {
                    kind: DenyKind::parse(&kind)
                        .ok_or_else(|| StoreError::Other("unknown deny-list kind".into()))?,
                    value,
                    expires_at: at(exp)?,
                    changed_at: at(changed)?,
                })
            })
            .collect()
    }
}
