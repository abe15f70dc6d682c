//! The shipped portcullis config (`deploy/k8s/configmap.yaml`) against the
//! real Keycloak 26 running the shipped realm: only the Keycloak URL, the
//! store and Redis addresses and the secrets are overridden, the way an
//! operator would (environment, or the one hostname).

use std::collections::BTreeMap;

use portcullis::config::{Config, MapEnv};
use portcullis::server::{Running, ServeOptions, start};
use portcullis_testkit::check::{Req, allowed, check, denied, wait_ready};
use portcullis_testkit::pg::TempPostgres;
use portcullis_testkit::real_keycloak::{READY, RealKeycloak, SHIPPED_SECRET};
use portcullis_testkit::redis_server::TempRedis;

const SHIPPED_ISSUER: &str = "https://keycloak.example.org/realms/example";

fn shipped_config_yaml() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s/configmap.yaml");
    let text = std::fs::read_to_string(path).expect("read configmap");
    let cm: serde_json::Value = serde_norway::from_str(&text).expect("configmap is YAML");
    cm["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml")
        .to_owned()
}

struct Env {
    kc: RealKeycloak,
    srv: Running,
    _pg: TempPostgres,
    _redis: TempRedis,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let kc = RealKeycloak::get().await;
    let pg = TempPostgres::start().await;
    let redis = TempRedis::start().await;
    let yaml = shipped_config_yaml();
    assert!(yaml.contains(SHIPPED_ISSUER), "the shipped issuer moved");
    let yaml = yaml.replace(SHIPPED_ISSUER, &kc.issuer());
    let env = MapEnv(BTreeMap::from([
        ("PORTCULLIS__STORE__URL".to_owned(), pg.url.clone()),
        (
            "PORTCULLIS__REVOCATION__REDIS_URL".to_owned(),
            redis.url.clone(),
        ),
        (
            "PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET".to_owned(),
            SHIPPED_SECRET.to_owned(),
        ),
    ]));
    let mut cfg = Config::from_yaml_str(&yaml, &env).expect("shipped config loads");
    cfg.validate().expect("shipped config validates");
    let dir = tempfile::tempdir().unwrap();
    cfg.listen.grpc = "127.0.0.1:0".parse().unwrap();
    cfg.listen.http = "127.0.0.1:0".parse().unwrap();
    cfg.data_dir = dir.path().to_path_buf();
    let srv = start(ServeOptions {
        config: cfg,
        dev: false,
    })
    .await
    .expect("shipped config serves");
    wait_ready(&srv, READY).await;
    Env {
        kc,
        srv,
        _pg: pg,
        _redis: redis,
        _dir: dir,
    }
}

#[tokio::test]
async fn shipped_config_allows_logins_where_the_shipped_policy_says() {
    let e = env().await;
    let alice = e.kc.login("alice", "openid").await.access_token;
    let bob = e.kc.login("bob", "openid").await.access_token;
    let carol = e.kc.login("carol", "openid").await.access_token;
    let worker =
        e.kc.client_credentials("uploads-worker", SHIPPED_SECRET)
            .await
            .access_token;
    let at = |m: &str, tok: &str| Req::get("/api/v1/uploads/42").method(m).bearer(tok);

    // A login is a login (not a PAT): readers read.
    let (h, _) = allowed(&check(e.srv.grpc_addr, &at("GET", &alice)).await);
    assert_eq!(h["x-auth-method"], "jwt");
    assert_eq!(h["x-auth-username"], "alice");
    // Only writers write.
    let d = denied(&check(e.srv.grpc_addr, &at("DELETE", &alice)).await);
    assert_eq!((d.http, d.error()), (403, "insufficient_scope"), "{d:?}");
    allowed(&check(e.srv.grpc_addr, &at("DELETE", &bob)).await);
    // No uploads role: nothing.
    assert_eq!(
        denied(&check(e.srv.grpc_addr, &at("GET", &carol)).await).http,
        403
    );
    // The service account reads, and may not write (uploads-write accepts
    // jwt and pat only).
    let (h, _) = allowed(&check(e.srv.grpc_addr, &at("GET", &worker)).await);
    assert_eq!(h["x-auth-method"], "service_account");
    assert_eq!(
        denied(&check(e.srv.grpc_addr, &at("POST", &worker)).await).http,
        403
    );
    // Anything else under /api needs a login; /healthz is public; the rest
    // is denied by default.
    allowed(&check(e.srv.grpc_addr, &Req::get("/api/v2/other").bearer(&carol)).await);
    allowed(&check(e.srv.grpc_addr, &Req::get("/healthz")).await);
    assert_eq!(
        denied(&check(e.srv.grpc_addr, &Req::get("/elsewhere").bearer(&bob)).await).http,
        403
    );
}
