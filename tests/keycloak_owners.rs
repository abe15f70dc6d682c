//! PATs follow their owner (`pat.owner_sync`) with the real Keycloak 26:
//! a service account with `view-users` reads the owners every second, and
//! each change shows through Check within one sync interval (plus the pass
//! itself): a role removed cuts the PAT's scopes, a disabled user's PAT is
//! refused until re-enabled, a deleted user's PAT is revoked, and while
//! Keycloak cannot be reached every owner keeps their last known state.
//!
//! The sync reaches Keycloak through a TCP relay this test can cut (the
//! run's Keycloak is shared, so it is not stopped); tokens and the admin
//! fixture go to Keycloak directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use portcullis::server::Running;
use portcullis_testkit::check::{Req, assert_invalid_token, check, code, serve_yaml, wait_ready};
use portcullis_testkit::cluster::READY;
use portcullis_testkit::real_keycloak::{RealKeycloak, SHIPPED_SECRET};
use portcullis_testkit::store_suite;
use portcullis_testkit::wait::eventually;
use reqwest::Method;
use serde_json::json;
use tokio::sync::watch;

const SYNC_CLIENT: &str = "portcullis-owner-sync";
/// One sync interval (1 s, below), plus the pass itself on a busy machine.
const WITHIN: Duration = Duration::from_secs(3);

/// A TCP relay to Keycloak that can be cut (open connections too).
struct Relay {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue; // dropped: connection refused, in effect
                }
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = rx.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// The service-account client, with realm-management `view-users`. One
/// caller at a time: the two tests of this binary run at once, and Keycloak
/// answers two concurrent grants of the same role with 400 ("Could not add
/// user role or group mappings!"), where one after the other both succeed.
async fn sync_client(kc: &RealKeycloak) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let (st, v) = kc
        .admin(
            Method::POST,
            "/clients",
            Some(json!({
                "clientId": SYNC_CLIENT, "secret": SHIPPED_SECRET, "publicClient": false,
                "serviceAccountsEnabled": true, "standardFlowEnabled": false,
                "directAccessGrantsEnabled": false,
            })),
        )
        .await;
    assert!(st == 201 || st == 409, "create {SYNC_CLIENT}: {st} {v}");
    let id = kc.client_uuid(SYNC_CLIENT).await;
    let (_, sa) = kc
        .admin(
            Method::GET,
            &format!("/clients/{id}/service-account-user"),
            None,
        )
        .await;
    let rm = kc.client_uuid("realm-management").await;
    let (_, role) = kc
        .admin(
            Method::GET,
            &format!("/clients/{rm}/roles/view-users"),
            None,
        )
        .await;
    let path = format!(
        "/users/{}/role-mappings/clients/{rm}",
        sa["id"].as_str().unwrap()
    );
    let (st, v) = kc.admin(Method::POST, &path, Some(json!([role]))).await;
    assert!((200..300).contains(&st), "grant view-users: {st} {v}");
}

/// A fresh user holding `role`; returns its id (`sub`).
async fn user(kc: &RealKeycloak, role: &str) -> String {
    let name = format!("owner-{}", uuid::Uuid::new_v4().simple());
    let (st, v) = kc
        .admin(
            Method::POST,
            "/users",
            Some(json!({"username": name, "enabled": true})),
        )
        .await;
    assert_eq!(st, 201, "create user: {v}");
    let id = kc.user_id(&name).await.unwrap();
    set_role(kc, &id, role, true).await;
    id
}

async fn set_role(kc: &RealKeycloak, id: &str, role: &str, on: bool) {
    let (_, rep) = kc.admin(Method::GET, &format!("/roles/{role}"), None).await;
    let method = if on { Method::POST } else { Method::DELETE };
    let path = format!("/users/{id}/role-mappings/realm");
    let (st, v) = kc.admin(method, &path, Some(json!([rep]))).await;
    assert!((200..300).contains(&st), "role {role} {on}: {st} {v}");
}

async fn set_enabled(kc: &RealKeycloak, id: &str, enabled: bool) {
    let (st, v) = kc
        .admin(
            Method::PUT,
            &format!("/users/{id}"),
            Some(json!({"enabled": enabled})),
        )
        .await;
    assert!((200..300).contains(&st), "enabled {enabled}: {st} {v}");
}

fn config(kc: &RealKeycloak, relay: SocketAddr) -> String {
    format!(
        r#"
issuers:
  - issuer: {iss}
    audiences: [portcullis]
    scopes:
      from: ["claim:scope", "realm_roles"]
      map:
        uploads-reader: ["uploads:read"]
        uploads-writer: ["uploads:read", "uploads:write"]
pat:
  owner_sync:
    issuer: {iss}
    interval: 1s
    max_staleness: 2s
    client_id: {SYNC_CLIENT}
    client_secret: {SHIPPED_SECRET}
    keycloak_url: http://{relay}
policy:
  default: deny
  routes:
    - name: uploads-write
      match: {{ methods: [POST], path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:write"] }}
    - name: uploads
      match: {{ path: {{ prefix: /api/v1/uploads }} }}
      require: {{ all_of: ["uploads:read"] }}
"#,
        iss = kc.issuer()
    )
}

/// An opaque PAT of `sub` with read and write, straight into the store.
async fn pat(srv: &Running, kc: &RealKeycloak, sub: &str) -> String {
    let (raw, mut row) = store_suite::token(sub, TimeDelta::hours(1));
    row.user_issuer = kc.issuer();
    row.scopes = vec!["uploads:read".into(), "uploads:write".into()];
    let rec = srv.engine.load().pats().store().insert(row).await.unwrap();
    srv.revoker.announce_created(&rec).await;
    raw
}

/// Check's gRPC code for `method` on the uploads route.
async fn status(srv: &Running, token: &str, method: &str) -> i32 {
    code(
        &check(
            srv.grpc_addr,
            &Req::get("/api/v1/uploads/1").method(method).bearer(token),
        )
        .await,
    )
}

/// Until `method` gets `want` (gRPC code); returns how long that took.
async fn until(srv: &Running, token: &str, method: &str, want: i32, what: &str) -> Duration {
    let t0 = Instant::now();
    eventually(WITHIN, what, async || {
        match status(srv, token, method).await {
            c if c == want => Ok(()),
            c => Err(c),
        }
    })
    .await;
    t0.elapsed()
}

async fn metrics(srv: &Running) -> String {
    let url = format!("http://{}/metrics", srv.http_addr);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn staleness(metrics: &str) -> i64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_owner_sync_staleness_seconds "))
        .expect("staleness gauge");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

struct Env {
    kc: RealKeycloak,
    relay: Relay,
    srv: Running,
    /// Two writers (`uploads-writer`) and their PATs.
    dora: (String, String),
    erin: (String, String),
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let kc = RealKeycloak::get().await;
    sync_client(&kc).await;
    let kc_addr: SocketAddr = kc.base.trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(kc_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_yaml(&config(&kc, relay.addr), dir.path(), false).await;
    wait_ready(&srv, READY).await;
    let (dora, erin) = (
        user(&kc, "uploads-writer").await,
        user(&kc, "uploads-writer").await,
    );
    let (dora_pat, erin_pat) = (pat(&srv, &kc, &dora).await, pat(&srv, &kc, &erin).await);
    Env {
        kc,
        relay,
        srv,
        dora: (dora, dora_pat),
        erin: (erin, erin_pat),
        _dir: dir,
    }
}

/// A role removed: the PAT loses what the role gave.
async fn removing_a_role_cuts_the_pats_scopes(e: &Env) {
    let (dora, pat) = (&e.dora.0, &e.dora.1);
    until(&e.srv, pat, "POST", 0, "writer may write").await;
    set_role(&e.kc, dora, "uploads-reader", true).await;
    set_role(&e.kc, dora, "uploads-writer", false).await;
    let t = until(&e.srv, pat, "POST", 7, "write scope gone").await;
    eprintln!("role removed → PAT write refused after {t:?}");
    assert_eq!(status(&e.srv, pat, "GET").await, 0, "read stays");
}

/// Disabled: suspended (401 owner disabled); re-enabled: works again.
async fn disabling_suspends_and_enabling_restores(e: &Env) {
    let (dora, pat) = (&e.dora.0, &e.dora.1);
    set_enabled(&e.kc, dora, false).await;
    let t = until(&e.srv, pat, "GET", 16, "owner disabled").await;
    eprintln!("user disabled → PAT refused after {t:?}");
    let resp = check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(pat)).await;
    assert_invalid_token(&resp, "owner disabled");
    set_enabled(&e.kc, dora, true).await;
    let t = until(&e.srv, pat, "GET", 0, "owner re-enabled").await;
    eprintln!("user re-enabled → PAT works after {t:?}");
}

/// Keycloak unreachable during syncs: last known state kept, staleness
/// grows; once it answers, the change made meanwhile lands.
async fn an_outage_keeps_the_last_known_state(e: &Env) {
    let (dora, pat) = (&e.dora.0, &e.dora.1);
    e.relay.set(false);
    set_enabled(&e.kc, dora, false).await;
    let m = eventually(Duration::from_secs(6), "staleness past 2 s", async || {
        let m = metrics(&e.srv).await;
        if staleness(&m) >= 2 {
            Ok(m)
        } else {
            Err(staleness(&m))
        }
    })
    .await;
    assert!(
        m.contains(r#"portcullis_owner_sync_runs_total{outcome="error"}"#),
        "{m}"
    );
    assert_eq!(
        status(&e.srv, pat, "GET").await,
        0,
        "not suspended by an outage"
    );
    assert_eq!(
        status(&e.srv, &e.erin.1, "POST").await,
        0,
        "scopes kept by an outage"
    );
    e.relay.set(true);
    until(&e.srv, pat, "GET", 16, "the change made during the outage").await;
    // The gauge is set when the pass that applied it ends.
    eventually(
        WITHIN,
        "staleness back under 2 s",
        async || match staleness(&metrics(&e.srv).await) {
            s if s < 2 => Ok(()),
            s => Err(s),
        },
    )
    .await;
}

/// Deleted: the PAT is revoked.
async fn deleting_revokes_the_pat(e: &Env) {
    let (erin, pat) = (&e.erin.0, &e.erin.1);
    let (st, v) =
        e.kc.admin(Method::DELETE, &format!("/users/{erin}"), None)
            .await;
    assert!((200..300).contains(&st), "delete: {st} {v}");
    let t = until(&e.srv, pat, "GET", 16, "deleted owner's PAT refused").await;
    eprintln!("user deleted → PAT refused after {t:?}");
    let store = e.srv.engine.load().pats().store().clone();
    let rows = store.list_for_user(&e.kc.issuer(), erin).await.unwrap();
    assert!(
        rows.iter().all(|r| r.revoked_at.is_some()),
        "revoked in the store"
    );
    let resp = check(e.srv.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(pat)).await;
    assert_invalid_token(&resp, "token revoked");
}

/// One test, in order: the sync and the realm are shared state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pats_follow_their_owner() {
    let e = env().await;
    removing_a_role_cuts_the_pats_scopes(&e).await;
    disabling_suspends_and_enabling_restores(&e).await;
    an_outage_keeps_the_last_known_state(&e).await;
    deleting_revokes_the_pat(&e).await;
    let _ =
        e.kc.admin(Method::DELETE, &format!("/users/{}", e.dora.0), None)
            .await;
}

/// Two replicas' owner syncs on one Postgres: only the leaseholder reads
/// Keycloak (the other's path to Keycloak is cut and it still stands by);
/// the other sees the results in the store; when the holder dies without
/// giving the lease up, the other takes over once the lease runs out on
/// the database's clock, and picks up a change made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_syncs_and_another_takes_over_when_its_lease_runs_out() {
    use std::sync::Arc;

    use portcullis::owners::{OwnerSync, Pass};
    use portcullis::pat::{OwnerSyncConfig, PatConfig, PatValidator};
    use portcullis::revocation::Revoker;
    use portcullis::store::OwnerState;

    store_suite::run_pg(|store| async move {
        store_suite::setup(&store).await;
        let kc = RealKeycloak::get().await;
        sync_client(&kc).await;
        let kc_addr: SocketAddr = kc.base.trim_start_matches("http://").parse().unwrap();
        let (relay_a, relay_b) = (Relay::start(kc_addr).await, Relay::start(kc_addr).await);
        let sub = user(&kc, "uploads-reader").await;
        let (_, mut row) = store_suite::token(&sub, TimeDelta::hours(1));
        row.user_issuer = kc.issuer();
        store.insert(row).await.unwrap();
        let replica = |relay: SocketAddr| {
            let cfg = OwnerSyncConfig {
                issuer: kc.issuer(),
                interval: Duration::from_secs(1),
                client_id: SYNC_CLIENT.into(),
                client_secret: Some(SHIPPED_SECRET.into()),
                max_staleness: Duration::from_secs(60),
                keycloak_url: Some(format!("http://{relay}")),
                lease: Some(Duration::from_secs(2)),
            };
            let pats = Arc::new(PatValidator::new(store.clone(), &PatConfig::default()));
            let revoker = Revoker::new(pats.clone());
            OwnerSync::new(cfg, Default::default(), pats, revoker).unwrap()
        };
        let (mut a, mut b) = (replica(relay_a.addr), replica(relay_b.addr));
        let state = async || {
            let o = store.owner(&kc.issuer(), &sub).await.unwrap();
            o.map(|o| o.state)
        };

        assert_eq!(a.once().await.unwrap(), Pass::Synced(1));
        assert_eq!(state().await, Some(OwnerState::Enabled));
        // B cannot reach Keycloak: a pass that read it would fail.
        relay_b.set(false);
        assert_eq!(b.once().await.unwrap(), Pass::Standby);
        set_enabled(&kc, &sub, false).await;
        assert_eq!(a.once().await.unwrap(), Pass::Synced(1), "a renews");
        assert_eq!(b.once().await.unwrap(), Pass::Standby);
        assert_eq!(state().await, Some(OwnerState::Disabled), "b reads it here");

        // A dies holding the lease; a change lands in Keycloak meanwhile.
        drop(a);
        relay_a.set(false);
        relay_b.set(true);
        set_enabled(&kc, &sub, true).await;
        let t0 = std::time::Instant::now();
        let shared = Arc::new(tokio::sync::Mutex::new(b));
        let changed = eventually(Duration::from_secs(10), "b takes over", || {
            let b = shared.clone();
            async move {
                match b.lock().await.once().await.unwrap() {
                    Pass::Synced(n) => Ok(n),
                    Pass::Standby => Err("a's lease still runs"),
                }
            }
        })
        .await;
        let b = shared.lock().await;
        eprintln!(
            "leaseholder died → the other replica synced after {:?}",
            t0.elapsed()
        );
        assert_eq!(changed, 1);
        assert_eq!(state().await, Some(OwnerState::Enabled));

        // A replica shutting down gives its lease up: the next takes it at once.
        b.release().await;
        let mut c = replica(relay_b.addr);
        assert_eq!(c.once().await.unwrap(), Pass::Synced(0));
        let _ = kc
            .admin(Method::DELETE, &format!("/users/{sub}"), None)
            .await;
    })
    .await;
}
