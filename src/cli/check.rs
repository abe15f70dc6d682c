//! `portcullis check`: run one request through the real engine and print
//! the decision, the matched route, required and granted scopes.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

use super::ConfigArgs;
use crate::authz::Decision;
use crate::authz::request::RequestView;
use crate::pat::PatValidator;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request path (may include a query string).
    #[arg(long)]
    pub path: String,
    /// Host (`:authority`).
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Bearer token (JWT or PAT). Omit to check an anonymous request.
    #[arg(long)]
    pub token: Option<String>,
    /// Envoy context extension `key=value` (repeatable), e.g. portcullis.route=uploads.
    #[arg(long = "context", value_parser = parse_kv)]
    pub context: Vec<(String, String)>,
}

/// A `--context` value without `=`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not key=value")]
struct NotKeyValue(String);

fn parse_kv(s: &str) -> Result<(String, String), NotKeyValue> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| NotKeyValue(s.to_owned()))
}

pub async fn run(a: CheckArgs) -> anyhow::Result<i32> {
    let cfg = a.cfg.load()?;
    if let Err(errs) = cfg.validate() {
        for e in errs {
            eprintln!("  {e}");
        }
        anyhow::bail!("invalid configuration");
    }
    let dev = if a.cfg.dev {
        Some(crate::dev::DevIssuer::load_existing(&cfg.data_dir, None)?)
    } else {
        None
    };
    let store = Store::connect(&cfg.store, &cfg.data_dir)
        .await
        .context("opening the token store")?;
    let pats = Arc::new(PatValidator::new(store, &cfg.pat));
    let engine = crate::authz::Engine::build(cfg.engine(), dev.as_ref(), pats)?;
    // Only a JWT needs keys; fetch them once (the only network call).
    if a.token
        .as_deref()
        .is_some_and(|t| !t.starts_with(&cfg.pat.prefix))
    {
        for km in engine.verifier().key_managers() {
            if let Err(e) = km.refresh().await {
                eprintln!("warning: keys for {}: {e}", km.issuer());
            }
        }
    }
    let req = crate::authz::CheckInput::from_request(&build_request(&a));
    let view = RequestView::new(&req);
    let route = engine.explain(&view);
    let decision = engine.decide(&view).await.decision;
    println!("route:       {}", route.route);
    println!(
        "requires:    all_of=[{}] any_of=[{}]",
        route.all_of.join(" "),
        route.any_of.join(" ")
    );
    println!("credentials: {}", route.credentials.join(", "));
    let code = match &decision {
        Decision::Allow(id) => {
            println!(
                "caller:      {} ({}), scopes=[{}]",
                id.subject,
                id.kind,
                id.scopes.join(" ")
            );
            println!("decision:    ALLOW");
            0
        }
        Decision::AllowAnonymous => {
            println!("decision:    ALLOW (public route, no credential)");
            0
        }
        Decision::Deny(d) => {
            println!(
                "decision:    DENY {} {}: {}",
                d.kind.http_status(),
                d.error.unwrap_or("-"),
                d.description
            );
            1
        }
    };
    Ok(code)
}

fn build_request(a: &CheckArgs) -> CheckRequest {
    let mut headers = HashMap::new();
    if let Some(t) = &a.token {
        headers.insert("authorization".to_owned(), format!("Bearer {t}"));
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: a.method.to_ascii_uppercase(),
                    host: a.host.clone(),
                    path: a.path.clone(),
                    headers,
                    ..Default::default()
                }),
            }),
            context_extensions: a.context.iter().cloned().collect(),
            ..Default::default()
        }),
    }
}
