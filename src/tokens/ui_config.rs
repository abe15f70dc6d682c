//! `api.ui`: the token page, and how it signs people in.
//!
//! `api.ui` is `true`/`false` (the older spelling, still accepted) or a
//! map `{enabled, oidc}`. With `oidc` set, the page signs the user in at
//! that OpenID Provider with the authorization-code flow and PKCE (S256),
//! as an in-page public client: the tokens stay in the page's memory and
//! the REST API stays bearer-only (ARCHITECTURE.md, "The token page").

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::resource_metadata::{check_url, is_scope_token};
use crate::config_error::{ConfigError, Problems};

/// `api.ui:` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UiConfig {
    /// Serve the token-management page at `/ui`. Default true.
    pub enabled: bool,
    /// Sign in through an OpenID Provider (Keycloak). Unset: the page only
    /// takes a pasted login token (and, with `--dev`, the dev login).
    pub oidc: Option<UiOidcConfig>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            oidc: None,
        }
    }
}

/// `api.ui.oidc:` the page's OpenID Connect client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UiOidcConfig {
    /// The provider's issuer URL, exactly as its tokens' `iss` (Keycloak:
    /// `https://<host>/realms/<realm>`). It must be one of
    /// `issuers[].issuer`, or the API would refuse the page's tokens. The
    /// page reads `<issuer>/.well-known/openid-configuration`, and the
    /// page's Content-Security-Policy lets it connect to this origin only.
    pub issuer: String,
    /// A public client (no secret) with the standard flow, PKCE S256 and
    /// this page's address among its redirect URIs, web origins and
    /// post-logout redirect URIs. Default `web` (the shipped realm's).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Scopes asked for; must contain `openid` (the ID token carries the
    /// `nonce` checked on return and is the hint of RP-initiated logout).
    /// Default `[openid]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Where the provider sends the browser back: the page's public URL as
    /// the user's browser sees it (say `https://app.example.org/ui` behind
    /// Envoy). Default: the page's own address, `<origin>/ui`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Where the provider sends the browser after "Sign out". Default:
    /// `redirect_uri`.
    #[serde(default)]
    pub post_logout_redirect_uri: Option<String>,
}

fn default_client_id() -> String {
    "web".into()
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}

/// The map spelling of `api.ui`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UiMap {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    oidc: Option<UiOidcConfig>,
}

fn yes() -> bool {
    true
}

/// `true`/`false`, or the map (errors inside the map keep their key).
impl<'de> Deserialize<'de> for UiConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UiConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a map with `enabled` and `oidc`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<UiConfig, E> {
                Ok(UiConfig {
                    enabled: v,
                    oidc: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<UiConfig, A::Error> {
                let u = UiMap::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(UiConfig {
                    enabled: u.enabled,
                    oidc: u.oidc,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl UiConfig {
    /// Checks `api.ui.oidc`; `issuers` are the configured `issuers[].issuer`.
    pub fn validate(&self, issuers: &[&str]) -> Vec<ConfigError> {
        match &self.oidc {
            Some(o) => o.validate(issuers),
            None => Vec::new(),
        }
    }
}

impl UiOidcConfig {
    /// Checks the values; each problem names its key and what is accepted.
    pub fn validate(&self, issuers: &[&str]) -> Vec<ConfigError> {
        const K: &str = "api.ui.oidc";
        let mut p = Problems::default();
        match check_url(&format!("{K}.issuer"), &self.issuer, true) {
            Err(e) => p.extend([e]),
            Ok(u) if u.query().is_some() => p.push(
                format!("{K}.issuer"),
                format!("{:?} has a ?query; accepted: the issuer URL exactly as its tokens' iss", self.issuer),
            ),
            Ok(_) => p.check(issuers.contains(&self.issuer.as_str()), &format!("{K}.issuer"), || {
                format!(
                    "{:?} is not a configured issuer, so the API would refuse the page's tokens; accepted: one of issuers[].issuer ({})",
                    self.issuer,
                    if issuers.is_empty() { "none configured".to_owned() } else { issuers.join(", ") }
                )
            }),
        }
        p.check(
            !self.client_id.is_empty()
                && self.client_id.len() <= 255
                && self.client_id.chars().all(|c| (' '..='~').contains(&c)),
            &format!("{K}.client_id"),
            || format!("{:?} is not accepted; accepted: the public client's id, 1-255 printable ASCII characters (default web)", self.client_id),
        );
        p.check(self.scopes.iter().any(|s| s == "openid"), &format!("{K}.scopes"), || {
            "must contain openid: the ID token carries the nonce checked on return and is the hint of sign-out; accepted: e.g. [openid] or [openid, profile]".into()
        });
        for (i, s) in self.scopes.iter().enumerate() {
            p.check(is_scope_token(s), &format!("{K}.scopes[{i}]"), || {
                format!("{s:?} is not an OAuth scope token; accepted: printable ASCII without space, \" or \\")
            });
        }
        for (key, v) in [
            ("redirect_uri", &self.redirect_uri),
            ("post_logout_redirect_uri", &self.post_logout_redirect_uri),
        ] {
            if let Some(raw) = v {
                let key = format!("{K}.{key}");
                match check_url(&key, raw, true) {
                    Err(e) => p.extend([e]),
                    Ok(u) => p.check(u.query().is_none(), &key, || {
                        format!("{raw:?} has a ?query; accepted: the page's URL, e.g. https://app.example.org/ui")
                    }),
                }
            }
        }
        p.into_vec()
    }

    /// The issuer's origin (`scheme://host[:port]`): what the page's
    /// Content-Security-Policy lets it connect to besides itself.
    pub fn issuer_origin(&self) -> Option<String> {
        Url::parse(&self.issuer)
            .ok()
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://kc.example.org/realms/example";

    fn oidc(yaml: &str) -> UiOidcConfig {
        let ui: UiConfig = serde_norway::from_str(yaml).unwrap();
        ui.oidc.unwrap()
    }

    #[test]
    fn bool_and_map_spellings() {
        let off: UiConfig = serde_norway::from_str("false").unwrap();
        assert_eq!(
            off,
            UiConfig {
                enabled: false,
                oidc: None
            }
        );
        let on: UiConfig = serde_norway::from_str("true").unwrap();
        assert_eq!(on, UiConfig::default());
        let o = oidc(&format!("oidc: {{ issuer: {ISS} }}"));
        assert_eq!(
            (o.client_id.as_str(), o.scopes.clone()),
            ("web", vec!["openid".to_owned()])
        );
        assert!(o.validate(&[ISS]).is_empty());
        assert_eq!(o.issuer_origin().as_deref(), Some("https://kc.example.org"));
        let e = serde_norway::from_str::<UiConfig>("oidc: { issuer: x, client: y }").unwrap_err();
        assert!(e.to_string().contains("client"), "{e}");
        assert!(serde_norway::from_str::<UiConfig>("enable: true").is_err());
    }

    #[test]
    fn each_bad_key_is_named() {
        let cases = [
            (
                format!("oidc: {{ issuer: {ISS} }}"),
                vec![],
                "api.ui.oidc.issuer",
            ),
            (
                "oidc: { issuer: 'http://kc.example.org/realms/x' }".into(),
                vec!["http://kc.example.org/realms/x"],
                "api.ui.oidc.issuer",
            ),
            (
                format!("oidc: {{ issuer: {ISS}, scopes: [profile] }}"),
                vec![ISS],
                "api.ui.oidc.scopes",
            ),
            (
                format!("oidc: {{ issuer: {ISS}, scopes: [openid, 'a b'] }}"),
                vec![ISS],
                "api.ui.oidc.scopes[1]",
            ),
            (
                format!("oidc: {{ issuer: {ISS}, client_id: '' }}"),
                vec![ISS],
                "api.ui.oidc.client_id",
            ),
            (
                format!("oidc: {{ issuer: {ISS}, redirect_uri: 'ftp://x/ui' }}"),
                vec![ISS],
                "api.ui.oidc.redirect_uri",
            ),
            (
                format!("oidc: {{ issuer: {ISS}, post_logout_redirect_uri: 'https://x/ui?a=b' }}"),
                vec![ISS],
                "api.ui.oidc.post_logout_redirect_uri",
            ),
        ];
        for (yaml, issuers, key) in cases {
            let errs = oidc(&yaml).validate(&issuers);
            assert!(
                !errs.is_empty() && errs.iter().all(|e| e.key == key),
                "{yaml}: {errs:?}"
            );
        }
        // http is fine on loopback (a local Keycloak).
        let local = "http://127.0.0.1:8080/realms/example";
        assert!(
            oidc(&format!(
                "oidc: {{ issuer: '{local}', redirect_uri: 'http://localhost:9192/ui' }}"
            ))
            .validate(&[local])
            .is_empty()
        );
    }
}
