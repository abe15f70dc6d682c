//! `pat.issuer: keycloak-exchange`: RFC 8693 standard token exchange. The
//! caller's own access token is the `subject_token`; Keycloak answers with a
//! new JWT (for `pat.exchange.audience` when set), which becomes the PAT.

use std::time::Duration;

use serde::Deserialize;

use super::ApiError;
use crate::pat::ExchangeConfig;

/// `grant_type` of RFC 8693.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` for an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The confidential client that exchanges tokens.
#[derive(Clone)]
pub struct ExchangeClient {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    audience: Option<String>,
    scope: Option<String>,
}

impl std::fmt::Debug for ExchangeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeClient")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

impl ExchangeClient {
    /// From validated config (`pat.exchange.*`); `None` if a key is missing.
    pub fn new(cfg: &ExchangeConfig) -> anyhow::Result<ExchangeClient> {
        let need = |k: &str, v: &Option<String>| {
            v.clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| anyhow::anyhow!("pat.exchange.{k}: required"))
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(ExchangeClient {
            http,
            token_url: need("token_url", &cfg.token_url)?,
            client_id: need("client_id", &cfg.client_id)?,
            client_secret: need("client_secret", &cfg.client_secret)?,
            // Optional: without it the PAT keeps the subject token's `aud`
            // and is recognised by `pat.jwt_marker` alone.
            audience: cfg.audience.clone().filter(|s| !s.trim().is_empty()),
            scope: cfg.scope.clone().filter(|s| !s.trim().is_empty()),
        })
    }

    /// The audience requested, if any (exchanged tokens carrying it are PATs).
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// Exchanges the caller's access token; returns the new JWT (unverified).
    pub async fn exchange(&self, subject_token: &str) -> Result<String, ApiError> {
        self.exchange_as(subject_token, ACCESS_TOKEN_TYPE).await
    }

    /// [`Self::exchange`] with an explicit `subject_token_type` (tests drive
    /// Keycloak's error for a wrong type through this).
    pub async fn exchange_as(
        &self,
        subject_token: &str,
        subject_token_type: &str,
    ) -> Result<String, ApiError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("subject_token", subject_token),
            ("subject_token_type", subject_token_type),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some(a) = &self.audience {
            form.push(("audience", a));
        }
        if let Some(s) = &self.scope {
            form.push(("scope", s));
        }
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, url = %self.token_url, "token exchange request failed");
                ApiError::exchange_failed(
                    None,
                    format!("token exchange with Keycloak failed: {}", transport(&e)),
                )
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            ApiError::exchange_failed(
                None,
                format!(
                    "token exchange: reading Keycloak's answer failed: {}",
                    transport(&e)
                ),
            )
        })?;
        if !status.is_success() {
            let err: Option<ErrorResponse> = serde_json::from_slice(&body).ok();
            let code = err.as_ref().and_then(|e| e.error.clone());
            let desc = err.and_then(|e| e.error_description).unwrap_or_default();
            tracing::warn!(
                status = status.as_u16(),
                error = code.as_deref().unwrap_or("-"),
                description = %desc,
                "Keycloak refused the token exchange"
            );
            let named = code.as_deref().unwrap_or("no error code");
            return Err(ApiError::exchange_failed(
                code.clone(),
                format!(
                    "token exchange refused by Keycloak (HTTP {}): {named}{}",
                    status.as_u16(),
                    if desc.is_empty() {
                        String::new()
                    } else {
                        format!(": {desc}")
                    }
                ),
            ));
        }
        let ok: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            ApiError::exchange_failed(None, "token exchange: Keycloak's answer is not JSON")
        })?;
        ok.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::exchange_failed(
                None,
                "token exchange: Keycloak's answer has no access_token",
            )
        })
    }
}

fn transport(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    }
}
