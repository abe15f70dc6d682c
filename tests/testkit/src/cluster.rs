//! Two (or more) in-process replicas sharing one Postgres and one Redis,
//! each started by the test so it can kill them, plus a Keycloak stand-in.

use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::server::Running;
use portcullis::store::Store;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::check::{code, serve_yaml_env, wait_ready};
use crate::keycloak::FakeKeycloak;
use crate::pg::TempPostgres;
use crate::redis_server::TempRedis;
use crate::wait::{ASAP, eventually, eventually_every};

/// How long a replica may take to become ready.
pub const READY: Duration = Duration::from_secs(10);

pub struct Cluster {
    pub pg: TempPostgres,
    pub redis: TempRedis,
    pub kc: FakeKeycloak,
    pub a: Running,
    pub b: Running,
    pub yaml: String,
    pub resync: Duration,
    /// The loader's environment of every replica (secrets the config names).
    pub env: Vec<(String, String)>,
    dirs: Vec<tempfile::TempDir>,
}

/// The replicas' config: Keycloak issuer (scopes from the `scope` claim),
/// Postgres store, Redis bus.
pub fn yaml(kc: &FakeKeycloak, pg: &str, redis: &str, resync: &str, extra: &str) -> String {
    yaml_with(kc, pg, redis, resync, "", extra)
}

/// [`yaml`] with `issuer_extra` (indented keys) added to the issuer entry.
/// `{issuer}` in `issuer_extra` or `extra` stands for the stand-in's issuer.
pub fn yaml_with(
    kc: &FakeKeycloak,
    pg: &str,
    redis: &str,
    resync: &str,
    issuer_extra: &str,
    extra: &str,
) -> String {
    format!(
        "issuers:\n  - issuer: {iss}\n    audiences: [portcullis]\n    algorithms: [RS256]\n{issuer_extra}\
         policy:\n  default: authenticated\n\
         store:\n  kind: postgres\n  url: {pg}\n  timeout: 300ms\n\
         revocation:\n  kind: redis\n  redis_url: {redis}\n  resync_interval: {resync}\n{extra}",
        iss = kc.issuer()
    )
    .replace("{issuer}", &kc.issuer())
}

impl Cluster {
    /// Starts Postgres, Redis, Keycloak and replicas A and B; waits until
    /// both are ready and subscribed to the bus.
    pub async fn start(resync: &str, extra: &str) -> Cluster {
        Cluster::start_with(resync, "", extra).await
    }

    /// [`Cluster::start`] with `issuer_extra` in the issuer entry (see [`yaml_with`]).
    pub async fn start_with(resync: &str, issuer_extra: &str, extra: &str) -> Cluster {
        Cluster::start_env(resync, issuer_extra, extra, &[]).await
    }

    /// [`Cluster::start_with`] with an environment for the config loader
    /// (e.g. the webhook secrets `notify.webhooks` names).
    pub async fn start_env(
        resync: &str,
        issuer_extra: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Cluster {
        let pg = TempPostgres::start().await;
        let redis = TempRedis::start().await;
        let kc = FakeKeycloak::start().await;
        let yaml = yaml_with(&kc, &pg.url, &redis.url, resync, issuer_extra, extra);
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = serve_yaml_env(&yaml, da.path(), false, env).await;
        let b = serve_yaml_env(&yaml, db.path(), false, env).await;
        let c = Cluster {
            pg,
            redis,
            kc,
            a,
            b,
            yaml,
            resync: humantime::parse_duration(resync).unwrap(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dirs: vec![da, db],
        };
        wait_ready(&c.a, READY).await;
        wait_ready(&c.b, READY).await;
        c.wait_subscribed().await;
        c
    }

    /// Another replica with the same config.
    pub async fn replica(&mut self) -> Running {
        let d = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = serve_yaml_env(&self.yaml, d.path(), false, &env).await;
        self.dirs.push(d);
        wait_ready(&r, READY).await;
        r
    }

    pub fn store(&self) -> Store {
        self.a.engine.load().pats().store().clone()
    }

    /// Until A and B are subscribed to the bus (10 s at most).
    pub async fn wait_subscribed(&self) {
        eventually(Duration::from_secs(10), "replicas subscribed", async || {
            let (a, b) = (
                self.a.revoker.bus().is_subscribed(),
                self.b.revoker.bus().is_subscribed(),
            );
            if a && b { Ok(()) } else { Err((a, b)) }
        })
        .await
    }
}

/// Calls Check until it is not an allow, as fast as possible; returns how
/// long that took (from `since`) and the denial. Panics once `deadline` has
/// passed since `since`.
pub async fn wait_denied(
    client: &mut AuthorizationClient<Channel>,
    req: &CheckRequest,
    since: Instant,
    deadline: Duration,
) -> (Duration, CheckResponse) {
    let what = format!("revocation propagated ({deadline:?} from the revoke)");
    let left = deadline.saturating_sub(since.elapsed());
    let resp = eventually_every(left, ASAP, &what, || {
        let mut client = client.clone();
        async move {
            let resp = client
                .check(req.clone())
                .await
                .expect("Check must never return a gRPC error")
                .into_inner();
            if code(&resp) != 0 {
                Ok(resp)
            } else {
                Err(resp)
            }
        }
    })
    .await;
    (since.elapsed(), resp)
}

/// Calls Check until it allows (polling every 10 ms); panics at `deadline`.
pub async fn wait_allowed(
    client: &mut AuthorizationClient<Channel>,
    req: &CheckRequest,
    deadline: Duration,
) -> CheckResponse {
    eventually(deadline, "allowed", || {
        let mut client = client.clone();
        async move {
            let resp = client.check(req.clone()).await.unwrap().into_inner();
            if code(&resp) == 0 {
                Ok(resp)
            } else {
                Err(resp)
            }
        }
    })
    .await
}

/// p-th percentile (0–100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}
