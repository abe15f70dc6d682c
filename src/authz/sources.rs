//! Where a credential may come from besides `Authorization: Bearer`
//! (`credentials:` config). Parsing lives in [`super::request`].

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// The `credentials:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// `Authorization: Basic` with a PAT as the password.
    pub basic: BasicConfig,
    /// Headers carrying a token as their whole value (`[x-api-key]`).
    pub headers: Vec<String>,
    /// Query parameter carrying a token, read only on routes with
    /// `query_credential: true` (default `access_token`).
    pub query_param: String,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            basic: BasicConfig::default(),
            headers: Vec::new(),
            query_param: "access_token".to_owned(),
        }
    }
}

/// `credentials.basic`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicConfig {
    /// Accept `Authorization: Basic base64(user:PAT)` (default `false`).
    /// Only PATs, never JWTs.
    pub enabled: bool,
    /// The user name must equal the PAT owner's username (default `false`:
    /// the user name is ignored, as git and docker send anything there).
    pub check_username: bool,
}

/// Headers that can never carry a token: the ones with a meaning of their
/// own, hop-by-hop and pseudo headers.
const NOT_A_CREDENTIAL_HEADER: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "x-request-id",
];

impl CredentialsConfig {
    /// Every problem, keyed `credentials.…`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            let key = format!("credentials.headers[{i}]");
            let lower = h.to_ascii_lowercase();
            if let Some(why) = super::headers::header_name_problem(h)
                .filter(|_| !NOT_A_CREDENTIAL_HEADER.contains(&lower.as_str()))
            {
                errs.push(ConfigError::new(key, why));
            } else if NOT_A_CREDENTIAL_HEADER.contains(&lower.as_str()) {
                errs.push(ConfigError::new(
                    key,
                    format!("{h:?} cannot carry a token here ({} is read as Bearer or Basic, the others have a meaning of their own); accepted: a header of your own such as x-api-key", "authorization"),
                ));
            } else if self.headers[..i].iter().any(|o| o.eq_ignore_ascii_case(h)) {
                errs.push(ConfigError::new(key, format!("{h:?} is listed twice")));
            }
        }
        let q = &self.query_param;
        if q.is_empty()
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            errs.push(ConfigError::new(
                "credentials.query_param",
                format!("{q:?} is not accepted; accepted: a non-empty name of letters, digits, '-', '_' and '.' (default access_token)"),
            ));
        }
        errs
    }
}

/// The compiled `credentials` section the request parser reads.
#[derive(Debug, Clone)]
pub struct CredentialSources {
    pub basic: bool,
    pub check_username: bool,
    /// Lower-cased.
    pub headers: Vec<Box<str>>,
    pub query_param: Box<str>,
}

impl Default for CredentialSources {
    fn default() -> Self {
        CredentialSources::compile(&CredentialsConfig::default())
    }
}

impl CredentialSources {
    pub fn compile(cfg: &CredentialsConfig) -> Self {
        CredentialSources {
            basic: cfg.basic.enabled,
            check_username: cfg.basic.check_username,
            headers: cfg
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase().into())
                .collect(),
            query_param: cfg.query_param.as_str().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_credential_headers_that_mean_something_else() {
        for (h, needle) in [
            ("authorization", "cannot carry a token"),
            ("Cookie", "cannot carry a token"),
            ("connection", "hop-by-hop"),
            (":path", "pseudo-header"),
            ("x_api_key", "not a valid header name"),
        ] {
            let c = CredentialsConfig {
                headers: vec![h.into()],
                ..Default::default()
            };
            let errs = c.validate();
            assert_eq!(errs.len(), 1, "{h}: {errs:?}");
            assert_eq!(errs[0].key, "credentials.headers[0]");
            assert!(errs[0].message.contains(needle), "{h}: {}", errs[0].message);
        }
        let c = CredentialsConfig {
            headers: vec!["x-api-key".into(), "X-Api-Key".into()],
            query_param: "a b".into(),
            ..Default::default()
        };
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["credentials.headers[1]", "credentials.query_param"]);
    }
}
