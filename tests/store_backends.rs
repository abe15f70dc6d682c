//! Backend-specific store behaviour: Postgres down or restarted, SQLite's
//! explicit path, `store:` config validation, `TokenRecord`'s `Debug`.

use std::time::{Duration, Instant};

use chrono::Utc;
use portcullis::pat::{PatConfig, PatValidator, format};
use portcullis::store::{Store, StoreConfig, StoreError, StoreKind, TokenKind, TokenRecord};
use portcullis_testkit::store_suite::{secs, token};
use portcullis_testkit::{eventually, pg};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_down_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port"); // listener dropped: nothing listens there now
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(format!("postgres://postgres@127.0.0.1:{port}/portcullis")),
        ..StoreConfig::default() // 100ms timeout
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect is lazy");
    let v = PatValidator::new(store.clone(), &PatConfig::default());
    let raw = format::generate("pat_");
    for _ in 0..2 {
        let started = Instant::now();
        let r = v.validate(&raw).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(store.query_count(), 2, "errors are not cached");
    assert!(matches!(
        store.migrate().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_recovers() {
    let mut server = pg::TempPostgres::start().await;
    let (client, conn) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(one, 1);
    let cfg = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(server.url.clone()),
        timeout: Duration::from_millis(500),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let v = PatValidator::new(store.clone(), &PatConfig::default());
    let (raw, t) = token("u1", secs(3600));
    store.insert(t.clone()).await.expect("insert");
    assert!(matches!(v.validate(&raw).await, Ok(Ok(_))));

    server.stop();
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "server is down"
    );
    v.evict(&t.token_hash).await;
    let r = v.validate(&raw).await;
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "never Valid while down: {r:?}"
    );

    server.restart().await;
    eventually(Duration::from_secs(10), "recovered", async || {
        match v.validate(&raw).await {
            Ok(Ok(_)) => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn sqlite_explicit_path_and_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/tokens.db");
    let cfg = StoreConfig {
        path: Some(path.clone()),
        ..StoreConfig::default()
    };
    let store = Store::connect(&cfg, std::path::Path::new("/nonexistent"))
        .await
        .expect("connect");
    assert_eq!(store.backend_name(), "sqlite");
    store.migrate().await.expect("migrate");
    assert!(path.exists());
    let pg = StoreConfig {
        kind: StoreKind::Postgres,
        ..StoreConfig::default()
    };
    let err = Store::connect(&pg, dir.path()).await.expect_err("no url");
    assert!(err.to_string().contains("store.url"), "{err}");
}

#[test]
fn store_config_validation() {
    // The one problem of a config, as `key: message`.
    let only = |c: &StoreConfig| match c.validate().as_slice() {
        [e] => e.to_string(),
        other => panic!("expected one problem, got {other:?}"),
    };
    assert!(StoreConfig::default().validate().is_empty());
    let pg = StoreConfig {
        kind: StoreKind::Postgres,
        ..Default::default()
    };
    assert!(only(&pg).starts_with("store.url:"));
    let pg = StoreConfig {
        url: Some("postgres://u:secret@h/db".into()),
        ..pg
    };
    assert!(pg.validate().is_empty());
    let bad = StoreConfig {
        url: Some("postgres://u:secret@h:notaport/db".into()),
        ..pg
    };
    let msg = only(&bad);
    assert!(
        msg.starts_with("store.url:") && !msg.contains("secret"),
        "{msg}"
    );
    let zero = StoreConfig {
        pool_size: 0,
        ..Default::default()
    };
    assert!(only(&zero).starts_with("store.pool_size"));
    assert_eq!(
        StoreConfig::default().sqlite_path(std::path::Path::new("/d")),
        std::path::PathBuf::from("/d/portcullis.db")
    );
}

#[test]
fn token_record_debug_hides_hash() {
    let r = TokenRecord {
        id: Uuid::nil(),
        user_id: "u".into(),
        user_issuer: "https://idp.example".into(),
        username: "u".into(),
        name: "n".into(),
        description: None,
        token_hash: [0xab; 32],
        display_hint: "pat_abcd…".into(),
        scopes: vec![],
        created_at: Utc::now(),
        expires_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
        rotated_from: None,
        kind: TokenKind::Opaque,
        jti: None,
        hash_version: Default::default(),
        last_used_ip: None,
        last_used_user_agent: None,
    };
    let s = format!("{r:?}");
    assert!(
        s.contains("abababab…") && !s.contains(&"ab".repeat(9)),
        "{s}"
    );
}
