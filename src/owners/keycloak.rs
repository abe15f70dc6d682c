//! Keycloak's admin REST API, as the owner sync reads it: a
//! client_credentials token of the service account (`view-users`), then
//! per user `GET users/{id}` (404: deleted), the effective realm roles
//! (`role-mappings/realm/composite`) and, per client the issuer's scope
//! mapping names, the effective client roles.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::pat::OwnerSyncConfig;

/// Bound on one HTTP request to Keycloak.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a read from Keycloak failed (the pass stops; last states stay).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{what}: {reason}")]
    Request { what: &'static str, reason: String },
    #[error("{what}: HTTP {status}")]
    Status { what: &'static str, status: u16 },
    #[error("owner_sync is misconfigured: {0}")]
    Config(&'static str),
}

/// One user as read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRead {
    Deleted,
    Found {
        enabled: bool,
        realm_roles: Vec<String>,
        /// Client id → effective roles, for the clients asked for.
        client_roles: HashMap<String, Vec<String>>,
    },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

#[derive(Deserialize)]
struct UserRep {
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize)]
struct RoleRep {
    name: String,
}

#[derive(Deserialize)]
struct ClientRep {
    id: String,
}

/// The admin client. Holds its token until shortly before it expires and
/// the internal ids of the clients whose roles count.
pub struct Admin {
    http: reqwest::Client,
    token_url: String,
    admin_url: String,
    client_id: String,
    client_secret: String,
    token: Option<(String, Instant)>,
    client_uuids: HashMap<String, String>,
}

impl Admin {
    pub fn new(cfg: &OwnerSyncConfig) -> Result<Admin, AdminError> {
        let (base, realm) = cfg
            .keycloak()
            .ok_or(AdminError::Config("issuer is not {base}/realms/{realm}"))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|_| AdminError::Config("cannot build the HTTP client"))?;
        Ok(Admin {
            http,
            token_url: format!("{base}/realms/{realm}/protocol/openid-connect/token"),
            admin_url: format!("{base}/admin/realms/{realm}"),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone().unwrap_or_default(),
            token: None,
            client_uuids: HashMap::new(),
        })
    }

    async fn token(&mut self) -> Result<String, AdminError> {
        if let Some((t, until)) = &self.token
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let what = "service-account token";
        let resp = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
            ])
            .send()
            .await
            .map_err(|e| request(what, e))?;
        let t: TokenResponse = json(what, resp).await?;
        // Renew 10 s early (and never keep one longer than 5 min).
        let life = Duration::from_secs(t.expires_in.clamp(10, 300) - 10);
        self.token = Some((t.access_token.clone(), Instant::now() + life));
        Ok(t.access_token)
    }

    /// `GET {admin}{path}`: `None` on 404.
    async fn get<T: for<'de> Deserialize<'de>>(
        &mut self,
        what: &'static str,
        path: &str,
    ) -> Result<Option<T>, AdminError> {
        let token = self.token().await?;
        let resp = self
            .http
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| request(what, e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.token = None;
        }
        json(what, resp).await.map(Some)
    }

    async fn client_uuid(&mut self, client_id: &str) -> Result<Option<String>, AdminError> {
        if let Some(id) = self.client_uuids.get(client_id) {
            return Ok(Some(id.clone()));
        }
        let path = format!("/clients?clientId={}", urlencode(client_id));
        let found: Vec<ClientRep> = self.get("clients", &path).await?.unwrap_or_default();
        let id = found.into_iter().next().map(|c| c.id);
        if let Some(id) = &id {
            self.client_uuids.insert(client_id.to_owned(), id.clone());
        }
        Ok(id)
    }

    /// Reads one user: enabled, effective realm roles, and effective roles
    /// of each of `clients` (client ids).
    pub async fn read_user(
        &mut self,
        sub: &str,
        clients: &[String],
    ) -> Result<UserRead, AdminError> {
        let id = urlencode(sub);
        let Some(user) = self.get::<UserRep>("user", &format!("/users/{id}")).await? else {
            return Ok(UserRead::Deleted);
        };
        let names =
            |v: Option<Vec<RoleRep>>| v.unwrap_or_default().into_iter().map(|r| r.name).collect();
        let realm = self
            .get::<Vec<RoleRep>>(
                "realm roles",
                &format!("/users/{id}/role-mappings/realm/composite"),
            )
            .await?;
        let mut client_roles = HashMap::new();
        for c in clients {
            let Some(uuid) = self.client_uuid(c).await? else {
                continue;
            };
            let path = format!("/users/{id}/role-mappings/clients/{uuid}/composite");
            let roles = self.get::<Vec<RoleRep>>("client roles", &path).await?;
            client_roles.insert(c.clone(), names(roles));
        }
        Ok(UserRead::Found {
            enabled: user.enabled,
            realm_roles: names(realm),
            client_roles,
        })
    }
}

fn request(what: &'static str, e: reqwest::Error) -> AdminError {
    AdminError::Request {
        what,
        reason: e.to_string(),
    }
}

async fn json<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    resp: reqwest::Response,
) -> Result<T, AdminError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(AdminError::Status {
            what,
            status: status.as_u16(),
        });
    }
    resp.json().await.map_err(|e| request(what, e))
}

/// Percent-encodes a path segment or query value (ids are UUIDs, client ids
/// may hold anything).
fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
