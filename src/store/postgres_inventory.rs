//! Postgres: the admin inventory (`GET /api/v1/admin/tokens`).

use super::super::row::COLS;
use super::super::{Result, TokenQuery, TokenRecord, TokenState};
use super::PgStore;

impl PgStore {
    pub(super) async fn tokens_sql(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM personal_access_tokens \
             WHERE ($1::text IS NULL \
                    OR ($1 = 'active' AND revoked_at IS NULL AND expires_at > $2) \
                    OR ($1 = 'revoked' AND revoked_at IS NOT NULL) \
                    OR ($1 = 'expired' AND revoked_at IS NULL AND expires_at <= $2)) \
               AND ($3::timestamptz IS NULL \
                    OR (revoked_at IS NULL AND expires_at > $2 AND expires_at <= $3)) \
               AND ($4::text IS NULL OR user_id = $4) AND ($5::text IS NULL OR user_issuer = $5) \
               AND ($6::text IS NULL OR strpos(lower(name), lower($6)) > 0) \
               AND ($7::timestamptz IS NULL OR last_used_at < $7) \
               AND ($8::timestamptz IS NULL OR created_at < $8 OR (created_at = $8 AND id < $9::uuid)) \
             ORDER BY created_at DESC, id DESC LIMIT $10"
        );
        let (after_at, after_id) = q.after.unzip();
        self.query_records(
            &sql,
            &[
                &q.state.map(TokenState::as_str),
                &q.now,
                &q.expiring_before,
                &q.user_id,
                &q.user_issuer,
                &q.name_contains,
                &q.last_used_before,
                &after_at,
                &after_id,
                &i64::from(q.limit),
            ],
        )
        .await
    }
}
