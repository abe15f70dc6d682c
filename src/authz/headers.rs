//! What an allow tells the upstream and Envoy about the caller: the identity
//! headers (`identity_headers` config) and the dynamic metadata.
//!
//! Both depend only on the identity (plus the route name in the metadata).
//! A configuration compiles its names once into a [`Template`]; each allow
//! writes the identity's values between them straight into the answer's
//! bytes (`authz::render`, `authz::reply`): nothing is kept per identity,
//! and no header is cloned, formatted or encoded as a message. The
//! template lives with the configuration, so a reload never serves stale
//! names.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::{Value, value::Kind};
use serde::{Deserialize, Serialize};

use super::render::{Template, claim_value, field_present};

use crate::config_error::ConfigError;
use crate::identity::Identity;

/// Default prefix of the identity headers.
pub const DEFAULT_PREFIX: &str = "x-auth-";

/// The `identity_headers:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeadersConfig {
    /// Prefix of the built-in headers (default `x-auth-`). Every client-sent
    /// header starting with it is removed.
    pub prefix: String,
    /// Built-in headers to set (default: all eight).
    pub set: Vec<IdentityField>,
    /// JWT claim → upstream header name (`groups: x-auth-groups`). A claim
    /// name is looked up as is, then as a dotted path (`org.tenant`).
    pub claims: BTreeMap<String, String>,
}

impl Default for IdentityHeadersConfig {
    fn default() -> Self {
        IdentityHeadersConfig {
            prefix: DEFAULT_PREFIX.to_owned(),
            set: IdentityField::ALL.to_vec(),
            claims: BTreeMap::new(),
        }
    }
}

/// A built-in identity header (`identity_headers.set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
    Subject,
    Issuer,
    Username,
    Email,
    Client,
    Scopes,
    Method,
    TokenId,
}

impl IdentityField {
    pub const ALL: [IdentityField; 8] = [
        IdentityField::Subject,
        IdentityField::Issuer,
        IdentityField::Username,
        IdentityField::Email,
        IdentityField::Client,
        IdentityField::Scopes,
        IdentityField::Method,
        IdentityField::TokenId,
    ];

    /// The header name after the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            IdentityField::Subject => "subject",
            IdentityField::Issuer => "issuer",
            IdentityField::Username => "username",
            IdentityField::Email => "email",
            IdentityField::Client => "client",
            IdentityField::Scopes => "scopes",
            IdentityField::Method => "method",
            IdentityField::TokenId => "token-id",
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the usual proxy ones), and
/// headers whose meaning an identity value must never take over.
const REFUSED: &[(&str, &str)] = &[
    ("connection", "a hop-by-hop header"),
    ("keep-alive", "a hop-by-hop header"),
    ("proxy-authenticate", "a hop-by-hop header"),
    ("proxy-authorization", "a hop-by-hop header"),
    ("proxy-connection", "a hop-by-hop header"),
    ("te", "a hop-by-hop header"),
    ("trailer", "a hop-by-hop header"),
    ("transfer-encoding", "a hop-by-hop header"),
    ("upgrade", "a hop-by-hop header"),
    ("host", "the request's authority"),
    ("content-length", "request framing"),
    ("authorization", "a credential header"),
    ("cookie", "a credential header"),
];

/// Why `name` cannot be an identity header, if it cannot.
pub fn header_name_problem(name: &str) -> Option<String> {
    if name.starts_with(':') {
        return Some(format!(
            "{name:?} is a pseudo-header; Envoy does not let a filter set it"
        ));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Some(format!(
            "{name:?} is not a valid header name; accepted: letters, digits and '-' (no '_', which CGI-style apps read as '-')"
        ));
    }
    let lower = name.to_ascii_lowercase();
    REFUSED
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, why)| format!("{name:?} is {why} and cannot carry an identity value"))
}

impl IdentityHeadersConfig {
    /// Every problem, keyed `identity_headers.…`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let p = &self.prefix;
        let ok_chars = p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if p.len() < 3 || !p.ends_with('-') || !ok_chars || p.starts_with('-') {
            errs.push(ConfigError::new(
                "identity_headers.prefix",
                format!("{p:?} is not accepted; accepted: letters, digits and '-', at least 3 characters, ending in '-' (default x-auth-)"),
            ));
        } else if p.eq_ignore_ascii_case("x-") || p.to_ascii_lowercase().starts_with("x-envoy-") {
            errs.push(ConfigError::new(
                "identity_headers.prefix",
                format!("{p:?} is too broad: every client header starting with it is removed; accepted: a prefix of your own, such as x-auth- or x-user-"),
            ));
        }
        let builtin: Vec<String> = IdentityField::ALL
            .iter()
            .map(|f| format!("{}{}", p.to_ascii_lowercase(), f.suffix()))
            .collect();
        let mut seen: Vec<String> = Vec::new();
        for (claim, header) in &self.claims {
            let key = format!("identity_headers.claims.{claim}");
            if claim.is_empty() {
                errs.push(ConfigError::new(
                    key.clone(),
                    "the claim name must not be empty",
                ));
            }
            if let Some(why) = header_name_problem(header) {
                errs.push(ConfigError::new(key, why));
                continue;
            }
            let lower = header.to_ascii_lowercase();
            if builtin.contains(&lower) {
                errs.push(ConfigError::new(
                    key,
                    format!("{header:?} is a built-in identity header; accepted: another name, e.g. {}groups", p.to_ascii_lowercase()),
                ));
            } else if seen.contains(&lower) {
                errs.push(ConfigError::new(
                    key,
                    format!("{header:?} is mapped from two claims; accepted: one claim per header"),
                ));
            } else {
                seen.push(lower);
            }
        }
        errs
    }
}

/// The compiled `identity_headers` section.
#[derive(Debug)]
pub struct IdentityHeaders {
    prefix: Box<str>,
    /// `{prefix}assertion`.
    assertion: Box<str>,
    fields: Vec<(IdentityField, Box<str>)>,
    /// (claim, header), header lower-cased.
    claims: Vec<(Arc<str>, Box<str>)>,
    /// The same names, encoded for [`super::reply`]; shared with answers
    /// in flight.
    template: Arc<Template>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders::compile(&IdentityHeadersConfig::default())
    }
}

impl IdentityHeaders {
    /// Compiles a validated config (names lower-cased).
    pub fn compile(cfg: &IdentityHeadersConfig) -> Self {
        let prefix = cfg.prefix.to_ascii_lowercase();
        let mut fields: Vec<(IdentityField, Box<str>)> = Vec::new();
        for f in IdentityField::ALL {
            if cfg.set.contains(&f) {
                fields.push((f, format!("{prefix}{}", f.suffix()).into()));
            }
        }
        let claims: Vec<(Arc<str>, Box<str>)> = cfg
            .claims
            .iter()
            .map(|(c, h)| (Arc::from(c.as_str()), h.to_ascii_lowercase().into()))
            .collect();
        IdentityHeaders {
            assertion: format!("{prefix}assertion").into(),
            prefix: prefix.into(),
            template: Arc::new(Template::new(&fields, &claims)),
            fields,
            claims,
        }
    }

    /// The signed assertion's header (`x-auth-assertion` by default).
    pub fn assertion_header(&self) -> &str {
        &self.assertion
    }

    /// The claims the JWT verifier must capture.
    pub fn claim_names(&self) -> Vec<Arc<str>> {
        self.claims.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Is `name` (as the client sent it) one of ours, so a client copy must go?
    pub fn owns(&self, name: impl AsRef<[u8]>) -> bool {
        let (name, p) = (name.as_ref(), self.prefix.as_bytes());
        name.get(..p.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(p))
            || self
                .claims
                .iter()
                .any(|(_, h)| h.as_bytes().eq_ignore_ascii_case(name))
    }

    /// The compiled template of the identity part of an allow.
    pub(super) fn template(&self) -> &Arc<Template> {
        &self.template
    }

    /// Is `name` (lower-case) among the headers an allow of `id` sets?
    /// Read from the identity by the same rules as [`Template::write`].
    pub(super) fn sets(&self, id: &Identity, name: &str) -> bool {
        if let Some((f, _)) = self.fields.iter().find(|(_, n)| **n == *name) {
            return field_present(id, *f);
        }
        self.claims
            .iter()
            .any(|(c, n)| **n == *name && claim_value(id, c).is_some())
    }
}

pub(super) fn string(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    }
}

pub use crate::jwt::claims::extract_claims;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml_claims: &[(&str, &str)]) -> IdentityHeadersConfig {
        IdentityHeadersConfig {
            claims: yaml_claims
                .iter()
                .map(|(c, h)| (c.to_string(), h.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn refuses_hop_by_hop_pseudo_invalid_and_builtin_names_naming_the_key() {
        for (header, needle) in [
            ("connection", "hop-by-hop"),
            ("Transfer-Encoding", "hop-by-hop"),
            ("upgrade", "hop-by-hop"),
            (":path", "pseudo-header"),
            (":authority", "pseudo-header"),
            ("x tenant", "not a valid header name"),
            ("x_tenant", "not a valid header name"),
            ("", "not a valid header name"),
            ("host", "authority"),
            ("authorization", "credential"),
            ("x-auth-subject", "built-in"),
        ] {
            let errs = cfg(&[("tenant", header)]).validate();
            assert_eq!(errs.len(), 1, "{header}: {errs:?}");
            assert_eq!(errs[0].key, "identity_headers.claims.tenant", "{header}");
            assert!(
                errs[0].message.contains(needle),
                "{header}: {}",
                errs[0].message
            );
        }
        assert!(
            cfg(&[("groups", "x-auth-groups"), ("tenant", "X-Tenant")])
                .validate()
                .is_empty()
        );
        let errs = cfg(&[("a", "x-t"), ("b", "X-T")]).validate();
        assert!(errs[0].message.contains("two claims"), "{errs:?}");
    }

    #[test]
    fn refuses_bad_prefixes() {
        for p in [
            "",
            "x",
            "x-auth",
            "x-",
            "X-",
            "x-envoy-auth-",
            "x_auth-",
            "-a-",
        ] {
            let c = IdentityHeadersConfig {
                prefix: p.into(),
                ..Default::default()
            };
            let errs = c.validate();
            assert_eq!(errs.len(), 1, "{p:?}: {errs:?}");
            assert_eq!(errs[0].key, "identity_headers.prefix");
        }
        let c = IdentityHeadersConfig {
            prefix: "x-user-".into(),
            ..Default::default()
        };
        assert!(c.validate().is_empty());
    }

    #[test]
    fn extracts_strings_numbers_arrays_and_dotted_paths() {
        let payload = serde_json::json!({
            "groups": ["/admins", "/dev"],
            "tenant": "acme",
            "level": 3,
            "org": {"tenant": "nested"},
            "https://example.org/tenant": "namespaced",
            "obj": {"a": 1},
            "mixed": ["a", {"b": 1}],
        });
        let map = payload.as_object().unwrap();
        let names: Vec<Arc<str>> = [
            "groups",
            "tenant",
            "level",
            "org.tenant",
            "https://example.org/tenant",
            "obj",
            "mixed",
            "absent",
        ]
        .into_iter()
        .map(Arc::from)
        .collect();
        let got = extract_claims(map, &names);
        let got: Vec<(&str, &str)> = got.iter().map(|(c, v)| (&**c, v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("groups", "/admins,/dev"),
                ("tenant", "acme"),
                ("level", "3"),
                ("org.tenant", "nested"),
                ("https://example.org/tenant", "namespaced"),
            ]
        );
    }

    #[test]
    fn owns_prefix_and_claim_headers_case_insensitively() {
        let h = IdentityHeaders::compile(&cfg(&[("tenant", "X-Tenant")]));
        assert!(h.owns("X-Auth-Anything"));
        assert!(h.owns("x-tenant"));
        assert!(!h.owns("x-tenant-id"));
        assert!(!h.owns("x-aut"));
    }
}
