//! SQLite: rotation chains (`rotated_from` links).

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use uuid::Uuid;

use super::super::Result;
use super::super::row;
use super::{SqliteStore, micros};

impl SqliteStore {
    pub(super) async fn chain_origin_sql(&self, id: Uuid) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = self
            .run(move |c| {
                c.prepare_cached(&row::chain_origin_sql('?'))?
                    .query_row([id.to_string()], |r| r.get(0))
                    .optional()
                    .map(Option::flatten)
            })
            .await?;
        at.map(micros).transpose()
    }
}
