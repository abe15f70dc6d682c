//! Postgres errors as [`StoreError`]s: which failures mean "unavailable"
//! (fail closed with a 503, retry later) and which are conflicts or bugs.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use super::StoreError;

pub(super) fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(format!("postgres pool: {other}")),
    }
}

pub(super) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(format!(
                "unique constraint {} violated",
                db.constraint().unwrap_or("?")
            ));
        }
        // Class 08 (connection), 53 (resources), 57 (operator intervention: shutdown).
        let class = &code.code()[..2];
        if matches!(class, "08" | "53" | "57") {
            return StoreError::Unavailable(format!("postgres {}: {}", code.code(), db.message()));
        }
        return StoreError::Other(format!("postgres {}: {}", code.code(), db.message()));
    }
    // No SQLSTATE: I/O, closed connection, protocol, or a timeout.
    StoreError::Unavailable(format!("postgres: {e}"))
}
