//! The harness the `store_*` test files share: each case is an
//! `async fn(Store)`, and [`store_suite!`] runs it against SQLite (a temp dir)
//! and real Postgres.
//!
//! Postgres: `PORTCULLIS_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth); each test
//! creates a fresh `portcullis_test_<random>` database and drops it at the
//! end. If that server is unreachable, each test starts its own throwaway
//! server with [`crate::pg`] instead.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use portcullis::pat::format;
use portcullis::store::{NewToken, Store, StoreConfig, StoreKind, TokenKind};
use uuid::Uuid;

use crate::pg;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Now, at the microsecond precision both backends store.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// A fresh opaque token of `user` at `https://idp.example`: the raw token
/// and the row to insert.
pub fn token(user: &str, expires_in: TimeDelta) -> (String, NewToken) {
    let raw = format::generate("pat_");
    let n = now();
    let t = NewToken {
        id: Uuid::new_v4(),
        user_id: user.into(),
        user_issuer: "https://idp.example".into(),
        username: format!("{user}-name"),
        name: "test token".into(),
        description: Some("desc".into()),
        token_hash: format::hash(&raw),
        display_hint: format::display_hint("pat_", &raw),
        scopes: vec!["uploads:read".into(), "uploads:*".into()],
        created_at: n,
        expires_at: n + expires_in,
        rotated_from: None,
        kind: TokenKind::Opaque,
        jti: None,
        hash_version: Default::default(),
    };
    (raw, t)
}

pub async fn setup(store: &Store) {
    store.migrate().await.expect("migrate");
}

/// Runs `f` on a SQLite store in a temp dir.
pub async fn run_sqlite<F, Fut>(f: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        timeout: TIMEOUT,
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, dir.path())
        .await
        .expect("connect sqlite");
    assert!(dir.path().join("portcullis.db").exists());
    f(store).await;
}

async fn admin(url: &str) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// Runs `f` on a Postgres store in a fresh database, dropped afterwards
/// (also when `f` panics; the panic is passed on).
pub async fn run_pg<F, Fut>(f: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = std::env::var("PORTCULLIS_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let mut _temp = None;
    let (client, base) = match admin(&admin_url).await {
        Some(c) => (c, admin_url),
        None => {
            let t = pg::TempPostgres::start().await;
            let url = t.url.clone();
            _temp = Some(t);
            (admin(&url).await.expect("connect temp postgres"), url)
        }
    };
    let db = format!("portcullis_test_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("url has a database path");
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(format!("{prefix}/{db}")),
        timeout: TIMEOUT,
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect postgres");
    let result = tokio::spawn(f(store)).await;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .expect("drop test database");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `store_suite!(case, …)` in a test file whose root declares each
/// `async fn case(store: Store)` and imports [`run_sqlite`] and [`run_pg`]:
/// makes tests `sqlite::case` and `postgres::case`.
#[macro_export]
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_sqlite(super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_pg(super::$name).await
                }
            )*
        }
    };
}
