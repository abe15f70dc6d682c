//! Check without gRPC or listeners: an [`Engine`] built from YAML, called
//! through [`CheckService::respond`] (the handler the gRPC service runs).
//! Policy and JWT table tests use it; a few end-to-end tests keep proving
//! the gRPC and Envoy wiring.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::CheckResponse;
use portcullis::authz::{CheckService, Engine};
use portcullis::config::{Config, MapEnv};
use portcullis::dev::DevIssuer;
use portcullis::pat::PatValidator;
use portcullis::store::Store;

use crate::check::Req;

/// A Check handler over an in-process engine.
pub struct InProcess {
    pub engine: Arc<ArcSwap<Engine>>,
    svc: CheckService,
    /// The built-in issuer when built with `dev`; its keys are fixed.
    pub dev: Option<DevIssuer>,
}

impl InProcess {
    /// Builds the engine `serve` would build from `yaml`: SQLite (migrated)
    /// in `data_dir`, the dev issuer (`dev`) with `--dev` defaults, and
    /// every remote issuer's keys fetched once before returning.
    pub async fn from_yaml(yaml: &str, data_dir: &Path, dev: bool) -> InProcess {
        let mut cfg = Config::from_yaml_str(yaml, &MapEnv::default()).expect("test config parses");
        cfg.data_dir = data_dir.to_path_buf();
        if dev {
            cfg.apply_dev_defaults(!yaml.trim().is_empty());
        }
        if let Err(errs) = cfg.validate() {
            panic!("test config is invalid: {errs:?}");
        }
        // No resync loop runs here, so the deny list and logout marks are
        // never loaded and every JWT Check asks SQLite: with the default
        // 100 ms limit, a loaded CI machine turned some of those into 503s.
        if cfg.store.timeout == portcullis::store::StoreConfig::default().timeout {
            cfg.store.timeout = std::time::Duration::from_secs(2);
        }
        let store = Store::connect(&cfg.store, data_dir)
            .await
            .expect("store opens");
        store.migrate().await.expect("store migrates");
        let dev = dev.then(|| {
            let d =
                DevIssuer::load_or_create(data_dir, "http://dev.portcullis.test/realms/dev".into())
                    .expect("dev issuer");
            // As `serve --dev` does, so `dev-token` and `check --dev` agree.
            d.remember_issuer(data_dir).expect("dev issuer remembered");
            d
        });
        let pats = Arc::new(PatValidator::new(store, &cfg.pat));
        let engine = Engine::build(cfg.engine(), dev.as_ref(), pats).expect("engine builds");
        for km in engine.verifier().key_managers() {
            km.refresh().await.expect("issuer keys load");
        }
        let engine = Arc::new(ArcSwap::from_pointee(engine));
        InProcess {
            svc: CheckService::new(engine.clone()),
            engine,
            dev,
        }
    }

    /// One Check, as Envoy would get it back.
    pub async fn check(&self, req: &Req) -> CheckResponse {
        self.svc.respond(&req.build()).await.1
    }

    /// The token store behind the engine.
    pub fn store(&self) -> Store {
        self.engine.load().pats().store().clone()
    }
}

/// A PAT created through the product's own creation rules (default `pat:`
/// settings, expiry by default): the raw token and its record.
pub async fn create_pat(
    store: &Store,
    user: &str,
    username: &str,
    issuer: &str,
    scopes: &[&str],
) -> (String, portcullis::store::TokenRecord) {
    portcullis::pat::create(
        store,
        &portcullis::pat::PatConfig::default(),
        portcullis::pat::CreateRequest {
            user_id: user.into(),
            user_issuer: issuer.into(),
            username: username.into(),
            name: "test".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        chrono::Utc::now(),
    )
    .await
    .expect("create PAT")
}
