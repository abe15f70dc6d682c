//! Helpers for the token API tests: a JSON HTTP client for `/api/v1` and
//! dev-issuer login tokens.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portcullis::dev::{DevIssuer, DevTokenSpec};
use serde_json::Value;

/// A JSON client for one server's HTTP port.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// One answer: status and JSON body (`Value::Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }

    /// Asserts status and `error`, and that the description contains `needle`.
    pub fn assert_error(&self, status: u16, error: &str, needle: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.error(), error, "{self:?}");
        assert!(
            self.description().contains(needle),
            "description {:?} lacks {needle:?}",
            self.description()
        );
    }
}

impl Api {
    pub fn new(http_addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{http_addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client"),
        }
    }

    /// The full URL of `path` on this server (for requests the helpers
    /// do not cover, e.g. with extra headers).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("HTTP body");
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Creates a token; panics unless 201. Returns `(id, raw token)`.
    pub async fn create(&self, login: &str, name: &str, scopes: &[&str]) -> (String, String) {
        let a = self
            .post(
                "/api/v1/tokens",
                login,
                serde_json::json!({"name": name, "scopes": scopes}),
            )
            .await;
        assert_eq!(a.status, 201, "{a:?}");
        (
            a.body["id"].as_str().expect("id").to_owned(),
            a.body["token"].as_str().expect("token").to_owned(),
        )
    }
}

/// A dev-issuer login token (`serve --dev` must have run on `data_dir`).
pub fn dev_login(data_dir: &Path, sub: &str, scopes: &str) -> String {
    dev_login_as(data_dir, sub, sub, scopes)
}

/// Like [`dev_login`] with a chosen `preferred_username` (a
/// `service-account-…` name makes a service-account token).
pub fn dev_login_as(data_dir: &Path, sub: &str, username: &str, scopes: &str) -> String {
    DevIssuer::load_existing(data_dir, None)
        .expect("dev issuer")
        .mint(&DevTokenSpec {
            sub: sub.into(),
            username: Some(username.into()),
            email: None,
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            expires_in: Duration::from_secs(600),
            client: "test".into(),
        })
        .expect("mint dev token")
}

/// A gRPC request carrying `Authorization: Bearer <token>` (TokenService).
pub fn with_auth<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    r
}
