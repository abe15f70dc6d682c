//! Table-driven tests for the policy module.

use super::*;

mod matching;
mod normalize;
mod scope_checks;
mod validation;

/// Deserialise a `policy:` document the way the real config loader does (figment YAML).
pub(super) fn yaml(src: &str) -> Result<PolicyConfig, String> {
    use figment::providers::{Format, Yaml};
    figment::Figment::from(Yaml::string(src))
        .extract_inner("policy")
        .map_err(|e| e.to_string())
}

pub(super) fn policy(src: &str) -> Policy {
    let cfg = yaml(src).expect("yaml");
    Policy::compile(&cfg).unwrap_or_else(|e| panic!("compile: {e}"))
}

/// Route name, `<none>` or `<bad>`.
pub(super) fn matched(p: &Policy, host: &str, method: &str, path: &str) -> String {
    match p.match_request(host, method, path) {
        RouteMatch::Route(r) => r.name.clone(),
        RouteMatch::NoRoute => "<none>".into(),
        RouteMatch::BadPath(_) => "<bad>".into(),
    }
}

pub(super) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}
