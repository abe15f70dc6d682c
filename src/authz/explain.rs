//! `portcullis check`'s explanation: which route a request lands on and
//! what it requires, without a credential.

use super::engine::{CTX_REQUIRED_SCOPES, Engine, Target};
use super::request::RequestView;
use crate::identity::CredentialKind;
use crate::policy::{self, DefaultAction};

/// What the policy says about a request, for `portcullis check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteExplanation {
    /// The matched route's name, `(default: deny|authenticated)`, or why none.
    pub route: String,
    /// All-of scopes (route plus `portcullis.required_scopes`).
    pub all_of: Vec<String>,
    /// Any-of scopes.
    pub any_of: Vec<String>,
    /// Credential kinds accepted.
    pub credentials: Vec<&'static str>,
}

impl Engine {
    /// Explains which route a request lands on and what it requires.
    pub fn explain(&self, req: &RequestView<'_>) -> RouteExplanation {
        let extra = req
            .context(CTX_REQUIRED_SCOPES)
            .and_then(|s| policy::parse_required_scopes(s).ok())
            .unwrap_or_default();
        match self.target(req) {
            Ok(Target::Route(r)) => RouteExplanation {
                route: r.name.clone(),
                all_of: policy::ScopeRequirements {
                    any_of: &[],
                    ..r.requirements(&extra)
                }
                .named(),
                any_of: r.any_of.clone(),
                credentials: r.accepted_kinds().map(|k| k.as_str()).collect(),
            },
            Ok(Target::Default(d)) => RouteExplanation {
                route: format!(
                    "(no route; policy.default = {})",
                    match d {
                        DefaultAction::Deny => "deny",
                        DefaultAction::Authenticated => "authenticated",
                    }
                ),
                all_of: extra,
                any_of: Vec::new(),
                credentials: CredentialKind::ALL.iter().map(|k| k.as_str()).collect(),
            },
            Err(d) => RouteExplanation {
                route: format!("(none: {})", d.description),
                all_of: extra,
                any_of: Vec::new(),
                credentials: Vec::new(),
            },
        }
    }
}
