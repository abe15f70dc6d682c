//! The token row mapping both backends share: the columns of a
//! `personal_access_tokens` row and their order, the values an insert binds,
//! and how a row becomes a [`TokenRecord`]. Adding a column touches this file
//! (and a migration); `sqlite` and `postgres` only say how their dialect
//! stores each column type (see the table in `store/mod.rs`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    DenyEntry, DenylistKind, HashVersion, LogoutKind, LogoutMark, NewToken, OwnerRecord,
    OwnerState, Result, StoreError, TokenHash, TokenKind, TokenRecord,
};

/// Every column of a token row, in the order [`decode`] reads them and
/// [`insert_values`] binds them.
pub(super) const COLS: &str = "id, user_id, username, name, description, token_hash, display_hint, scopes, \
                    created_at, expires_at, last_used_at, revoked_at, rotated_from, kind, jti, \
                    user_issuer, hash_version, last_used_ip, last_used_user_agent";

/// Number of columns in [`COLS`].
pub(super) const NCOLS: usize = 19;

/// The columns of a `jwt_denylist` row, in the order [`deny_entry`] takes them.
pub(super) const DENY_COLS: &str = "kind, value, expires_at, created_at";

/// The columns of a `logout_marks` row, in the order [`logout_mark`] takes them.
pub(super) const LOGOUT_COLS: &str = "issuer, kind, value, not_before, expires_at, created_at";

/// The upsert of a logout mark (placeholders `{p}1`…`{p}6` in
/// [`LOGOUT_COLS`] order): keeps the later `not_before` and `expires_at`,
/// and moves `created_at` when either grows, so resync sees the change.
pub(super) fn logout_upsert_sql(p: char, max: &str) -> String {
    format!(
        "INSERT INTO logout_marks ({LOGOUT_COLS}) VALUES ({p}1, {p}2, {p}3, {p}4, {p}5, {p}6) \
         ON CONFLICT (issuer, kind, value) DO UPDATE SET \
         created_at = CASE WHEN EXCLUDED.expires_at > logout_marks.expires_at \
                            OR EXCLUDED.not_before > logout_marks.not_before \
                      THEN EXCLUDED.created_at ELSE logout_marks.created_at END, \
         not_before = {max}(logout_marks.not_before, EXCLUDED.not_before), \
         expires_at = {max}(logout_marks.expires_at, EXCLUDED.expires_at)"
    )
}

/// `created_at` of the first token of `{p}1`'s rotation chain (following
/// `rotated_from` back); NULL when the token does not exist.
pub(super) fn chain_origin_sql(p: char) -> String {
    format!(
        "WITH RECURSIVE up(id, prev, created_at) AS ( \
           SELECT id, rotated_from, created_at FROM personal_access_tokens WHERE id = {p}1 \
           UNION \
           SELECT t.id, t.rotated_from, t.created_at FROM personal_access_tokens t \
           JOIN up ON t.id = up.prev) \
         SELECT MIN(created_at) FROM up"
    )
}

/// The columns of a `pat_owners` row, in the order [`owner`] takes them.
pub(super) const OWNER_COLS: &str = "issuer, user_id, state, scopes, synced_at, changed_at";

/// The upsert of an owner (placeholders `{p}1`…`{p}6` in [`OWNER_COLS`]
/// order; `distinct` is the dialect's null-safe "differs"). `changed_at`
/// moves only when the state or the scopes differ; it is returned.
pub(super) fn owner_upsert_sql(p: char, distinct: &str) -> String {
    format!(
        "INSERT INTO pat_owners ({OWNER_COLS}) VALUES ({p}1, {p}2, {p}3, {p}4, {p}5, {p}6) \
         ON CONFLICT (issuer, user_id) DO UPDATE SET \
         changed_at = CASE WHEN pat_owners.state {distinct} EXCLUDED.state \
                             OR pat_owners.scopes {distinct} EXCLUDED.scopes \
                      THEN EXCLUDED.changed_at ELSE pat_owners.changed_at END, \
         state = EXCLUDED.state, scopes = EXCLUDED.scopes, synced_at = EXCLUDED.synced_at \
         RETURNING changed_at"
    )
}

/// Owners of unrevoked, unexpired PATs of issuer `{p}1` at `{p}2`.
pub(super) fn active_owners_sql(p: char) -> String {
    format!(
        "SELECT DISTINCT user_id FROM personal_access_tokens \
         WHERE user_issuer = {p}1 AND revoked_at IS NULL AND expires_at > {p}2 ORDER BY user_id"
    )
}

/// A row selected as [`OWNER_COLS`] as an [`OwnerRecord`].
pub(super) fn owner(
    (issuer, user_id, state): (String, String, String),
    scopes: Option<Vec<String>>,
    synced_at: DateTime<Utc>,
    changed_at: DateTime<Utc>,
) -> Result<OwnerRecord> {
    Ok(OwnerRecord {
        issuer,
        user_id,
        state: OwnerState::parse(&state)
            .ok_or_else(|| StoreError::Other("unknown owner state".into()))?,
        scopes,
        synced_at,
        changed_at,
    })
}

/// One insert value, tagged with the column type it goes to, so each backend
/// can bind it in its own representation (e.g. SQLite stores uuids as text).
pub(super) enum Param<'a> {
    Uuid(Uuid),
    OptUuid(Option<Uuid>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
    Scopes(&'a [String]),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
    SmallInt(i16),
}

/// The values of a new row, one per column of [`COLS`], in order.
pub(super) fn insert_values(t: &NewToken) -> [Param<'_>; NCOLS] {
    [
        Param::Uuid(t.id),
        Param::Text(&t.user_id),
        Param::Text(&t.username),
        Param::Text(&t.name),
        Param::OptText(t.description.as_deref()),
        Param::Bytes(&t.token_hash),
        Param::Text(&t.display_hint),
        Param::Scopes(&t.scopes),
        Param::Time(t.created_at),
        Param::Time(t.expires_at),
        Param::OptTime(None), // last_used_at: never used yet
        Param::OptTime(None), // revoked_at: not revoked yet
        Param::OptUuid(t.rotated_from),
        Param::Text(t.kind.as_str()),
        Param::OptText(t.jti.as_deref()),
        Param::Text(&t.user_issuer),
        Param::SmallInt(t.hash_version.as_i16()),
        Param::OptText(None), // last_used_ip: never used yet
        Param::OptText(None), // last_used_user_agent
    ]
}

/// `INSERT` of every column, returning the row; `placeholder` is the
/// dialect's numbered-parameter sign (`?` for SQLite, `$` for Postgres).
pub(super) fn insert_sql(placeholder: char) -> String {
    let values: Vec<String> = (1..=NCOLS).map(|i| format!("{placeholder}{i}")).collect();
    format!(
        "INSERT INTO personal_access_tokens ({COLS}) VALUES ({}) RETURNING {COLS}",
        values.join(", ")
    )
}

/// Typed reads of one result row by column index, implemented by each
/// backend's row type in its own error type; [`decode`] is written once
/// against it.
pub(super) trait Columns {
    type Error;
    fn uuid(&self, i: usize) -> Result<Uuid, Self::Error>;
    fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, Self::Error>;
    fn scopes(&self, i: usize) -> Result<Vec<String>, Self::Error>;
    fn time(&self, i: usize) -> Result<DateTime<Utc>, Self::Error>;
    fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>, Self::Error>;
    fn small_int(&self, i: usize) -> Result<i16, Self::Error>;
    /// Column `i` was read but its value is not valid for its field.
    fn invalid(&self, i: usize, what: &'static str) -> Self::Error;
}

/// A row selected as [`COLS`] as a [`TokenRecord`].
pub(super) fn decode<R: Columns + ?Sized>(row: &R) -> Result<TokenRecord, R::Error> {
    Ok(TokenRecord {
        id: row.uuid(0)?,
        user_id: row.text(1)?,
        username: row.text(2)?,
        name: row.text(3)?,
        description: row.opt_text(4)?,
        token_hash: row
            .bytes(5)?
            .try_into()
            .map_err(|_| row.invalid(5, "token_hash is not 32 bytes"))?,
        display_hint: row.text(6)?,
        scopes: row.scopes(7)?,
        created_at: row.time(8)?,
        expires_at: row.time(9)?,
        last_used_at: row.opt_time(10)?,
        revoked_at: row.opt_time(11)?,
        rotated_from: row.opt_uuid(12)?,
        kind: TokenKind::parse(&row.text(13)?)
            .ok_or_else(|| row.invalid(13, "unknown token kind"))?,
        jti: row.opt_text(14)?,
        user_issuer: row.text(15)?,
        hash_version: HashVersion::from_i16(row.small_int(16)?)
            .ok_or_else(|| row.invalid(16, "unknown hash_version"))?,
        last_used_ip: row.opt_text(17)?,
        last_used_user_agent: row.opt_text(18)?,
    })
}

/// A `token_hash` column value as a hash.
pub(super) fn hash32(h: Vec<u8>) -> Result<TokenHash> {
    h.try_into()
        .map_err(|_| StoreError::Other("token_hash is not 32 bytes".into()))
}

/// A row selected as [`DENY_COLS`] as a [`DenyEntry`].
pub(super) fn deny_entry(
    kind: &str,
    value: String,
    expires_at: DateTime<Utc>,
    changed_at: DateTime<Utc>,
) -> Result<DenyEntry> {
    Ok(DenyEntry {
        kind: DenylistKind::parse(kind)
            .ok_or_else(|| StoreError::Other("unknown deny-list kind".into()))?,
        value,
        expires_at,
        changed_at,
    })
}

/// A row selected as [`LOGOUT_COLS`] as a [`LogoutMark`].
pub(super) fn logout_mark(
    (issuer, kind, value): (String, String, String),
    not_before: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    changed_at: DateTime<Utc>,
) -> Result<LogoutMark> {
    Ok(LogoutMark {
        issuer,
        kind: LogoutKind::parse(&kind)
            .ok_or_else(|| StoreError::Other("unknown logout mark kind".into()))?,
        value,
        not_before,
        expires_at,
        changed_at,
    })
}

/// Sorts a chain/list the same way on both backends: newest first.
pub(super) fn sort_newest_first(v: &mut [TokenRecord]) {
    v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_list_insert_values_and_placeholders_agree() {
        assert_eq!(COLS.split(',').count(), NCOLS);
        let sql = insert_sql('$');
        assert!(sql.contains(&format!("${NCOLS})")), "{sql}");
        assert!(!sql.contains(&format!("${}", NCOLS + 1)), "{sql}");
    }
}
