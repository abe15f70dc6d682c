//! SQLite: how a row's columns read (the [`Columns`] mapping the token row
//! shares with Postgres).

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::Type;
use uuid::Uuid;

use super::super::StoreError;
use super::super::row::Columns;
use super::{conv, from_ts, uuid_at};

/// SQLite column types: uuids as TEXT, scopes as a JSON TEXT array,
/// timestamps as INTEGER unix microseconds.
impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn uuid(&self, i: usize) -> rusqlite::Result<Uuid> {
        uuid_at(i, &self.get::<_, String>(i)?)
    }

    fn opt_uuid(&self, i: usize) -> rusqlite::Result<Option<Uuid>> {
        self.get::<_, Option<String>>(i)?
            .map(|s| uuid_at(i, &s))
            .transpose()
    }

    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }

    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }

    fn bytes(&self, i: usize) -> rusqlite::Result<Vec<u8>> {
        self.get(i)
    }

    fn scopes(&self, i: usize) -> rusqlite::Result<Vec<String>> {
        let json: String = self.get(i)?;
        serde_json::from_str(&json).map_err(|e| conv(i, Type::Text, e))
    }

    fn time(&self, i: usize) -> rusqlite::Result<DateTime<Utc>> {
        from_ts(i, self.get(i)?)
    }

    fn opt_time(&self, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
        self.get::<_, Option<i64>>(i)?
            .map(|v| from_ts(i, v))
            .transpose()
    }

    fn small_int(&self, i: usize) -> rusqlite::Result<i16> {
        self.get(i)
    }

    fn invalid(&self, i: usize, what: &'static str) -> rusqlite::Error {
        let ty = self.get_ref(i).map_or(Type::Null, |v| v.data_type());
        conv(i, ty, StoreError::Other(what.into()))
    }
}
