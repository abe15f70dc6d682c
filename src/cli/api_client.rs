//! The REST token API (`/api/v1`) called by `portcullis token … --api URL`
//! with the logged-in user's access token.

use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use super::login;
use super::transport::require_secure;

/// Why an API call failed, worded for the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("--api {0}: {1}")]
    BadUrl(Url, String),
    #[error("cannot reach the API at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error(
        "the API refused your login (HTTP 401 {error}: {description}); run `portcullis login` again"
    )]
    LoginRefused { error: String, description: String },
    #[error("the API answered HTTP {status} {error}: {description}")]
    Refused {
        status: u16,
        error: String,
        description: String,
    },
    #[error(
        "{url} answered HTTP {status} with no token API answer; is --api the portcullis HTTP address (e.g. http://127.0.0.1:9192)?"
    )]
    NotTheApi { url: String, status: u16 },
}

/// A client of one portcullis API, as the logged-in user.
pub struct ApiClient {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// Reads the login (renewing it when it has expired) for calls to
    /// `api`: https, or http on loopback unless `insecure_http`. The URL is
    /// checked before anything is read or sent.
    pub async fn logged_in(api: Url, insecure_http: bool) -> anyhow::Result<ApiClient> {
        if !matches!(api.scheme(), "http" | "https") || api.host().is_none() {
            return Err(ApiCallError::BadUrl(
                api,
                "accepted: an http(s) URL such as https://portcullis.example.org".into(),
            )
            .into());
        }
        require_secure("--api", &api, insecure_http)?;
        let token = login::current_access_token().await?;
        Ok(ApiClient {
            base: api,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, ApiCallError> {
        // The API may sit under a path prefix (…/portcullis/): keep it.
        let mut base = self.base.clone();
        let prefix = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{prefix}{path}"));
        Ok(base)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiCallError> {
        let url = self.url(path)?;
        let mut req = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                why = format!("{why}: {inner}");
                src = inner.source();
            }
            ApiCallError::Unreachable {
                url: self.base.to_string(),
                why,
            }
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return json.and_then(|v| serde_json::from_value(v).ok()).ok_or(
                ApiCallError::NotTheApi {
                    url: url.to_string(),
                    status,
                },
            );
        }
        let field = |k: &str| json.as_ref().and_then(|v| v[k].as_str()).map(str::to_owned);
        // The API's errors always carry both fields (RFC 6750 style).
        let (Some(error), Some(description)) = (field("error"), field("error_description")) else {
            return Err(ApiCallError::NotTheApi {
                url: url.to_string(),
                status,
            });
        };
        Err(if status == 401 {
            ApiCallError::LoginRefused { error, description }
        } else {
            ApiCallError::Refused {
                status,
                error,
                description,
            }
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiCallError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ApiCallError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiCallError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}
