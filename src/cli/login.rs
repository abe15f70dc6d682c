//! `portcullis login` and `portcullis logout`: a person signs in with the
//! device authorization grant (RFC 8628; the browser may be on another
//! machine), a script with client credentials from the environment. The
//! tokens go to the credentials file ([`super::credentials`]); the
//! `token --api` commands read them, renewing an expired access token.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use oauth2::StandardDeviceAuthorizationResponse;

use super::credentials::{self, Credentials, Grant};
use super::oidc::{self, LoginError};

/// Environment variables of `login --client-credentials`.
pub const ENV_CLIENT_ID: &str = "PORTCULLIS_CLIENT_ID";
pub const ENV_CLIENT_SECRET: &str = "PORTCULLIS_CLIENT_SECRET";

/// An access token this close to expiry is renewed before use.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The OpenID Provider's issuer URL, as in its tokens' `iss` (Keycloak:
    /// https://HOST/realms/REALM).
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// Public client with the device grant (default `cli`). With
    /// `--client-credentials` the id comes from PORTCULLIS_CLIENT_ID.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Log in as a service account: client credentials grant with
    /// PORTCULLIS_CLIENT_ID and PORTCULLIS_CLIENT_SECRET from the
    /// environment (no browser, no person).
    #[arg(long)]
    pub client_credentials: bool,
    /// Space-separated scopes to ask for (default: `openid` for a person,
    /// none for a service account).
    #[arg(long)]
    pub scope: Option<String>,
    /// Allow a plain-http issuer (and endpoints) on a host other than this
    /// machine. Tokens and secrets then cross the network in clear: for a
    /// test network only. Without it only https, or http on loopback.
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {}

/// Where the user goes: the page with the code filled in, else the page
/// and the code. On stderr: stdout stays free for scripts.
fn show(d: &StandardDeviceAuthorizationResponse) {
    let code = d.user_code().secret();
    eprintln!("To sign in, open this page in a browser (on any device):");
    match d.verification_uri_complete() {
        Some(full) => {
            eprintln!("  {}", full.secret());
            eprintln!(
                "or open {} and enter the code: {code}",
                d.verification_uri().as_str()
            );
        }
        None => eprintln!(
            "  {}\nand enter the code: {code}",
            d.verification_uri().as_str()
        ),
    }
    eprintln!(
        "Waiting for approval (polling every {} s; the code expires in {} s)...",
        d.interval().as_secs(),
        d.expires_in().as_secs()
    );
}

/// `preferred_username` (or `sub`) of a JWT, unverified: for the message only.
fn who(access_token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = access_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["preferred_username"]
        .as_str()
        .or(v["sub"].as_str())
        .map(str::to_owned)
}

fn env(name: &'static str) -> Result<String, LoginError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(LoginError::MissingEnv(name))
}

pub async fn login(a: LoginArgs) -> anyhow::Result<i32> {
    // Fail on the file's place (or an unsafe existing file) before asking
    // anyone to approve anything.
    let path = credentials::path()?;
    if let Err(e) = credentials::load(&path)
        && e.is_unsafe()
    {
        return Err(e.into());
    }
    let http = oidc::http();
    let provider = oidc::discover(&http, &a.issuer, a.insecure_http).await?;
    let scopes = |default: &[&str]| -> Vec<String> {
        match &a.scope {
            Some(s) => s.split_whitespace().map(str::to_owned).collect(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        }
    };
    let mut creds = if a.client_credentials {
        let id = match a.client_id {
            Some(id) => id,
            None => env(ENV_CLIENT_ID)?,
        };
        let secret = env(ENV_CLIENT_SECRET)?;
        oidc::client_credentials(&http, &provider, &id, &secret, &scopes(&[])).await?
    } else {
        let id = a.client_id.unwrap_or_else(|| "cli".to_owned());
        oidc::device_login(&http, &provider, &id, &scopes(&["openid"]), show).await?
    };
    creds.insecure_http = a.insecure_http;
    // Not while a renewal of the old login is between its read and its save.
    let _lock = credentials::lock(&path, true).await?;
    credentials::save(&path, &creds)?;
    eprintln!(
        "Logged in to {} as {} (client {}); credentials saved in {}",
        creds.issuer,
        who(&creds.access_token).unwrap_or_else(|| "?".into()),
        creds.client_id,
        path.display()
    );
    Ok(0)
}

pub async fn logout(_: LogoutArgs) -> anyhow::Result<i32> {
    let path = credentials::path()?;
    let _lock = match credentials::lock(&path, false).await {
        Ok(l) => Some(l),
        Err(credentials::CredentialsError::Missing(_)) => {
            eprintln!("Not logged in.");
            return Ok(0);
        }
        Err(e) => {
            eprintln!("warning: {e}; going on without the lock");
            None
        }
    };
    // A file others could read (or swap) is where the refresh token may
    // have leaked: its session is ended all the same, with a warning, as
    // long as it is a regular file of this user's. A link or someone
    // else's file is not used, only removed.
    match credentials::load_for_logout(&path) {
        Ok((c, warning)) => {
            if let Some(w) = warning {
                eprintln!(
                    "warning: {w}; ending its session all the same, since the refresh token in it may have been read"
                );
            }
            match end(&c).await {
                Ok(true) => eprintln!("Ended the session at {}.", c.issuer),
                Ok(false) => {}
                Err(e) => eprintln!("warning: could not end the session at {}: {e}", c.issuer),
            }
        }
        Err(credentials::CredentialsError::Missing(_)) => {
            eprintln!("Not logged in.");
            return Ok(0);
        }
        Err(e) => eprintln!("warning: {e}; not used to end a session"),
    }
    credentials::remove(&path)?;
    eprintln!("Logged out; removed {}.", path.display());
    Ok(0)
}

/// The stored access token, renewed first when it is (nearly) expired:
/// with the refresh token after a device login, with the environment's
/// client credentials after a client-credentials login.
pub async fn current_access_token() -> anyhow::Result<String> {
    let path = credentials::path()?;
    let fresh_enough =
        |c: &Credentials| (c.expires_at - Utc::now()).to_std().unwrap_or_default() > RENEW_BEFORE;
    let c = credentials::load(&path)?;
    if fresh_enough(&c) {
        return Ok(c.access_token);
    }
    // One renewal at a time; read again once the lock is ours, since the
    // process we waited for has probably renewed it already.
    let _lock = credentials::lock(&path, false).await?;
    let c = credentials::load(&path)?;
    if fresh_enough(&c) {
        return Ok(c.access_token);
    }
    let fresh = renew(&c).await?;
    credentials::save(&path, &fresh).context("saving the renewed login")?;
    Ok(fresh.access_token)
}

/// Ends the login at its issuer's current endpoints (see [`oidc::rediscover`]).
async fn end(c: &Credentials) -> Result<bool, LoginError> {
    let http = oidc::http();
    let p = oidc::rediscover(&http, c).await?;
    oidc::end(&http, &p, c).await
}

async fn renew(c: &Credentials) -> Result<Credentials, LoginError> {
    let http = oidc::http();
    let mut fresh = renew_at(&http, c).await?;
    fresh.insecure_http = c.insecure_http;
    Ok(fresh)
}

/// The renewal itself, at the endpoints the issuer names now: the stored
/// ones are compared, never used.
async fn renew_at(http: &reqwest::Client, c: &Credentials) -> Result<Credentials, LoginError> {
    match c.grant {
        Grant::DeviceCode => {
            let p = oidc::rediscover(http, c).await?;
            oidc::refresh(http, &p, c).await
        }
        Grant::ClientCredentials => {
            let ended = |why: String| LoginError::SessionEnded {
                issuer: c.issuer.clone(),
                why,
            };
            let id = env(ENV_CLIENT_ID).map_err(|_| {
                ended(format!(
                    "the access token expired, and client credentials are never stored: export {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}"
                ))
            })?;
            if id != c.client_id {
                return Err(ended(format!(
                    "{ENV_CLIENT_ID} is {id:?}, but the login is for {:?}",
                    c.client_id
                )));
            }
            let secret = env(ENV_CLIENT_SECRET)?;
            let p = oidc::rediscover(http, c).await?;
            oidc::client_credentials(http, &p, &id, &secret, &c.scopes).await
        }
    }
}
