//! Serde shape of the `policy:` config section.
//!
//! Deserialised with figment (YAML + env); every struct rejects unknown keys so
//! a typo never silently widens access.

use serde::Deserialize;

use super::PolicyError;
use crate::config_error::ConfigError;

/// The `policy:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What to do with requests that match no route: `deny` (default) or `authenticated`.
    #[serde(default)]
    pub default: DefaultAction,
    /// Routes, in priority order for ties (see the module docs for matching rules).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// What to do with a path segment carrying `;` parameters (`/a;x/b`, also
    /// `%3B`): `reject` (default, 403) or `strip` (matched as `/a/b`). Tomcat
    /// and Spring serve `/uploads;x/1` as `/uploads/1`, so keeping the `;`
    /// literally would let such a request miss its route.
    #[serde(default)]
    pub matrix_params: MatrixParams,
    /// Match request paths ASCII case-insensitively (default `false`). Turn
    /// it on for upstreams that serve `/API/V1/x` as `/api/v1/x`; otherwise
    /// `/API/...` would miss the routes written for `/api/...`.
    #[serde(default)]
    pub case_insensitive_paths: bool,
}

/// `policy.matrix_params`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatrixParams {
    /// A segment with `;` parameters is refused (403).
    #[default]
    Reject,
    /// `;` and what follows it in a segment are dropped before matching.
    Strip,
}

/// Action for requests matching no route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Reject the request (403).
    #[default]
    Deny,
    /// Allow any authenticated caller, whatever its scopes.
    Authenticated,
}

/// Kind of credential a caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A Keycloak-issued user JWT.
    Jwt,
    /// A Keycloak service-account (client credentials) JWT.
    ServiceAccount,
    /// A personal access token.
    Pat,
}

impl CredentialKind {
    /// All kinds, in canonical order.
    pub const ALL: [CredentialKind; 3] = [
        CredentialKind::Jwt,
        CredentialKind::ServiceAccount,
        CredentialKind::Pat,
    ];

    /// Config / log spelling: `jwt`, `service_account` or `pat`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ServiceAccount => "service_account",
            CredentialKind::Pat => "pat",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            CredentialKind::Jwt => 1,
            CredentialKind::ServiceAccount => 2,
            CredentialKind::Pat => 4,
        }
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a route needs a credential at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A valid credential of an accepted kind is needed (default).
    #[default]
    Required,
    /// Public route: no credential is checked.
    None,
}

/// One `policy.routes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique, non-empty route name (used in logs, metrics and `route_by_name`).
    pub name: String,
    /// Which requests this route applies to; absent = every request.
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// `required` (default) or `none` for a public route.
    #[serde(default)]
    pub auth: AuthMode,
    /// Scopes the caller must hold.
    #[serde(default)]
    pub require: RequireConfig,
    /// Credential kinds accepted on this route; default all three, must not be empty.
    #[serde(default = "all_kinds")]
    pub credentials: Vec<CredentialKind>,
    /// On allow, remove `authorization` and every `credentials.headers`
    /// header from the upstream request (default `false`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub strip_credential: bool,
    /// Read a token from the `credentials.query_param` query parameter
    /// (default `false`); it is removed from the upstream request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub query_credential: bool,
    /// Send a signed identity assertion (`x-auth-assertion`) for this
    /// audience (see the `assertion` section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<RouteAssertion>,
}

/// `policy.routes[].assertion`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAssertion {
    /// `aud` of the assertions sent to this route's upstream.
    pub audience: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn all_kinds() -> Vec<CredentialKind> {
    CredentialKind::ALL.to_vec()
}

/// `match:` block of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host patterns (`api.example.org` or `*.example.org`); absent = any host.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// HTTP methods (normalised to upper case); absent = any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Path matcher; absent = every path (same as `prefix: "/"`).
    #[serde(default)]
    pub path: Option<PathConfig>,
}

/// Path matcher: exactly one of `exact`, `prefix` or `template`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(try_from = "PathConfigRaw", rename_all = "snake_case")]
pub enum PathConfig {
    /// The normalised path equals this.
    Exact(String),
    /// The normalised path is this or lies below it (segment-aligned).
    Prefix(String),
    /// `/literal/{param}/...` with an optional final `{*rest}` catch-all.
    Template(String),
}

/// Wire form of [`PathConfig`]: some loaders (figment) would quietly take the
/// first key of `{exact: /a, prefix: /b}` as an enum, so parse all three and
/// insist on exactly one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathConfigRaw {
    /// See [`PathConfig::Exact`].
    exact: Option<String>,
    /// See [`PathConfig::Prefix`].
    prefix: Option<String>,
    /// See [`PathConfig::Template`].
    template: Option<String>,
}

/// A `match.path` that sets none, or more than one, of its three forms.
#[derive(Debug, thiserror::Error)]
#[error("path must set exactly one of `exact`, `prefix`, `template`")]
pub struct AmbiguousPath;

impl TryFrom<PathConfigRaw> for PathConfig {
    type Error = AmbiguousPath;

    fn try_from(raw: PathConfigRaw) -> Result<Self, AmbiguousPath> {
        match (raw.exact, raw.prefix, raw.template) {
            (Some(p), None, None) => Ok(PathConfig::Exact(p)),
            (None, Some(p), None) => Ok(PathConfig::Prefix(p)),
            (None, None, Some(t)) => Ok(PathConfig::Template(t)),
            _ => Err(AmbiguousPath),
        }
    }
}

/// `require:` block of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequireConfig {
    /// Every one of these scopes must be granted.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// If non-empty, at least one of these scopes must be granted.
    #[serde(default)]
    pub any_of: Vec<String>,
}

// === impl PolicyConfig ===

impl PolicyConfig {
    /// Every problem in the policy (empty = valid), each naming its key.
    /// `serve` compiles the same config with [`super::Policy::compile`].
    pub fn validate(&self) -> Vec<ConfigError> {
        self.problems().into_iter().map(ConfigError::from).collect()
    }

    /// Every problem as a typed [`PolicyError`].
    pub fn problems(&self) -> Vec<PolicyError> {
        super::compile::build(self).err().unwrap_or_default()
    }
}
