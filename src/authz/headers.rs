//! What an allow tells the upstream and Envoy about the caller: the identity
//! headers (`identity_headers` config) and the dynamic metadata.
//!
//! Both depend only on the identity (plus the route name in the metadata),
//! so they are rendered once per [`Identity`] and kept in it
//! ([`crate::identity::RenderCache`]): a cached JWT's identity is rendered on its first
//! allow, straight to protobuf bytes, and later allows send those bytes as
//! they are (`authz::reply`): no header is cloned, formatted or encoded
//! again. A render is tagged with the configuration it was made for, so a
//! reload never serves stale names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::ext_authz::v3::pb::OkHttpResponse;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use serde::{Deserialize, Serialize};

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

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The compiled `identity_headers` section.
#[derive(Debug)]
pub struct IdentityHeaders {
    /// Distinguishes renders made for another configuration.
    generation: u64,
    prefix: Box<str>,
    /// `{prefix}assertion`.
    assertion: Box<str>,
    fields: Vec<(IdentityField, Box<str>)>,
    /// (claim, header), header lower-cased.
    claims: Vec<(Arc<str>, Box<str>)>,
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
        IdentityHeaders {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            assertion: format!("{prefix}assertion").into(),
            prefix: prefix.into(),
            fields,
            claims: cfg
                .claims
                .iter()
                .map(|(c, h)| (Arc::from(c.as_str()), h.to_ascii_lowercase().into()))
                .collect(),
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

    /// The rendered headers and metadata of `id`, from its cache when it was
    /// rendered for this configuration.
    pub fn rendered(&self, id: &Identity) -> Arc<Rendered> {
        if let Some(r) = id.rendered.get::<Rendered>()
            && r.generation == self.generation
        {
            return r.clone();
        }
        let r = Arc::new(self.render(id));
        // The first render is kept; after a reload an identity that still
        // holds an older one is rendered per allow (a reload also replaces
        // the verified-token cache, so such identities soon go away).
        id.rendered.set(r.clone());
        r
    }

    fn render(&self, id: &Identity) -> Rendered {
        let scopes = id.scopes.join(" ");
        let mut headers = Vec::with_capacity(self.fields.len() + self.claims.len());
        for (f, name) in &self.fields {
            if let Some(v) = field_value(id, *f, &scopes) {
                headers.push(super::response::overwrite(name, v));
            }
        }
        let mut claims = HashMap::new();
        for (claim, header) in &self.claims {
            if let Some(v) = claim_value(id, claim) {
                headers.push(super::response::overwrite(header, v));
                claims.insert(claim.to_string(), string(v));
            }
        }
        let mut metadata = HashMap::with_capacity(9);
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                metadata.insert(k.to_owned(), string(v));
            }
        };
        put("subject", Some(&id.subject));
        put("issuer", id.issuer.as_deref());
        put("username", id.username.as_deref());
        put("client", id.client.as_deref());
        put("method", Some(id.kind.as_str()));
        put("token_id", id.token_id.as_deref());
        put("scopes", Some(&scopes));
        if !claims.is_empty() {
            metadata.insert(
                "claims".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(Struct { fields: claims })),
                },
            );
        }
        let ok = OkHttpResponse {
            headers,
            ..Default::default()
        };
        let metadata = Struct { fields: metadata };
        let mut wire = Vec::with_capacity(ok.encoded_len() + metadata.encoded_len());
        ok.encode_raw(&mut wire);
        let ok_len = wire.len();
        metadata.encode_raw(&mut wire);
        Rendered {
            generation: self.generation,
            wire: wire.into_boxed_slice(),
            ok_len,
        }
    }

    /// Is `name` (lower-case) among the headers `id`'s render sets? Read
    /// from the identity by the same rules as [`Self::render`], so a
    /// render keeps no list of its own.
    pub(super) fn sets(&self, id: &Identity, name: &str) -> bool {
        if let Some((f, _)) = self.fields.iter().find(|(_, n)| **n == *name) {
            // The scopes value is irrelevant here: only presence counts.
            return field_value(id, *f, "").is_some();
        }
        self.claims
            .iter()
            .any(|(c, n)| **n == *name && claim_value(id, c).is_some())
    }
}

/// The value of a built-in header for `id` (`scopes` already joined).
fn field_value<'a>(id: &'a Identity, f: IdentityField, scopes: &'a str) -> Option<&'a str> {
    match f {
        IdentityField::Subject => Some(id.subject.as_str()),
        IdentityField::Issuer => id.issuer.as_deref(),
        IdentityField::Username => id.username.as_deref(),
        IdentityField::Email => id.email.as_deref(),
        IdentityField::Client => id.client.as_deref(),
        IdentityField::Scopes => Some(scopes),
        IdentityField::Method => Some(id.kind.as_str()),
        IdentityField::TokenId => id.token_id.as_deref(),
    }
}

/// The value of a mapped claim for `id`, if the token carried it.
fn claim_value<'a>(id: &'a Identity, claim: &Arc<str>) -> Option<&'a str> {
    id.claims
        .iter()
        .find(|(c, _)| c == claim)
        .map(|(_, v)| v.as_str())
}

pub(super) fn string(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    }
}

/// One identity's headers and metadata fields (without `route`), encoded:
/// what every allow of this identity sends. Only bytes are kept (the
/// message form would cost several times the memory per cached token).
#[derive(Debug, PartialEq)]
pub struct Rendered {
    generation: u64,
    /// `OkHttpResponse { headers }` then `Struct { fields }`, encoded.
    wire: Box<[u8]>,
    /// Where the `OkHttpResponse` part ends.
    ok_len: usize,
}

impl Rendered {
    /// The encoded `OkHttpResponse` fields (the identity headers).
    pub(super) fn ok_wire(&self) -> &[u8] {
        &self.wire[..self.ok_len]
    }

    /// The encoded `Struct` fields of the dynamic metadata (no `route`).
    pub(super) fn metadata_wire(&self) -> &[u8] {
        &self.wire[self.ok_len..]
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
