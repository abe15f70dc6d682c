//! SQLite: the admin inventory (`GET /api/v1/admin/tokens`).

use rusqlite::params;

use super::super::row::COLS;
use super::super::{Result, TokenQuery, TokenRecord, TokenState};
use super::{SqliteStore, query_records, ts};

impl SqliteStore {
    pub(super) async fn tokens_sql(&self, q: TokenQuery) -> Result<Vec<TokenRecord>> {
        self.run(move |c| {
            let sql = format!(
                "SELECT {COLS} FROM personal_access_tokens \
                 WHERE (?1 IS NULL \
                        OR (?1 = 'active' AND revoked_at IS NULL AND expires_at > ?2) \
                        OR (?1 = 'revoked' AND revoked_at IS NOT NULL) \
                        OR (?1 = 'expired' AND revoked_at IS NULL AND expires_at <= ?2)) \
                   AND (?3 IS NULL OR (revoked_at IS NULL AND expires_at > ?2 AND expires_at <= ?3)) \
                   AND (?4 IS NULL OR user_id = ?4) AND (?5 IS NULL OR user_issuer = ?5) \
                   AND (?6 IS NULL OR instr(lower(name), lower(?6)) > 0) \
                   AND (?7 IS NULL OR last_used_at < ?7) \
                   AND (?8 IS NULL OR created_at < ?8 OR (created_at = ?8 AND id < ?9)) \
                 ORDER BY created_at DESC, id DESC LIMIT ?10"
            );
            let (after_at, after_id) = q.after.unzip();
            query_records(
                c,
                &sql,
                params![
                    q.state.map(TokenState::as_str),
                    ts(q.now),
                    q.expiring_before.map(ts),
                    q.user_id,
                    q.user_issuer,
                    q.name_contains,
                    q.last_used_before.map(ts),
                    after_at.map(ts),
                    after_id.map(|u| u.to_string()),
                    q.limit,
                ],
            )
        })
        .await
    }
}
