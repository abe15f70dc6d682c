//! The OAuth side of `portcullis login` / `logout`: the provider's
//! discovery document, then the `oauth2` crate for the device
//! authorization grant (RFC 8628: the server's polling interval,
//! `slow_down`, giving up at `expires_in`), client credentials, refresh and
//! revocation (RFC 7009).

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    ClientId, ClientSecret, DeviceAuthorizationUrl, DeviceCodeErrorResponse,
    DeviceCodeErrorResponseType, ErrorResponse, PkceCodeChallenge, RefreshToken, RequestTokenError,
    RevocationUrl, Scope, StandardDeviceAuthorizationResponse, StandardRevocableToken,
    TokenResponse, TokenUrl,
};
use serde::Deserialize;
use url::Url;

use super::credentials::{Credentials, Grant};
use super::transport::{InsecureUrl, require_secure};

/// What went wrong talking to the provider, worded for the person at the
/// terminal: what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "--issuer {issuer}: {why}; give the issuer URL exactly as it appears in the tokens' iss, e.g. https://keycloak.example.org/realms/example"
    )]
    WrongIssuer { issuer: String, why: String },
    #[error(
        "the provider at {issuer} does not offer the device authorization grant (no device_authorization_endpoint)"
    )]
    NoDeviceGrant { issuer: String },
    #[error(
        "the device code expired before the sign-in was approved in the browser; run `portcullis login` again and approve it sooner"
    )]
    Expired,
    #[error("access denied: the sign-in was refused in the browser; nothing was saved")]
    Denied,
    #[error("cannot reach the provider's {what} at {url}: {why}")]
    Unreachable {
        what: &'static str,
        url: String,
        why: String,
    },
    #[error("the provider refused the {what}: {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        what: &'static str,
        error: String,
        description: Option<String>,
    },
    #[error("the provider's answer to the {what} was not understood: {why}")]
    BadAnswer { what: &'static str, why: String },
    #[error(
        "--client-credentials: {0} is not set; export PORTCULLIS_CLIENT_ID and PORTCULLIS_CLIENT_SECRET (the secret is read only from the environment)"
    )]
    MissingEnv(&'static str),
    #[error(
        "your login at {issuer} has expired and could not be renewed ({why}); run `portcullis login` again"
    )]
    SessionEnded { issuer: String, why: String },
    #[error(transparent)]
    Insecure(#[from] InsecureUrl),
    #[error(
        "cannot renew your login at {issuer}: {why}; nothing was sent to the token endpoint; run `portcullis login` again"
    )]
    Renewal { issuer: String, why: String },
}

/// The endpoints of the provider's discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    pub issuer: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// An HTTP client for the provider: bounded, and never following
/// redirects (an OAuth endpoint has no business redirecting a POST).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

fn why(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

/// Reads `<issuer>/.well-known/openid-configuration` and checks that the
/// document names this very issuer, and that the issuer and every endpoint
/// credentials would be sent to are https (http only on loopback, unless
/// `insecure_http`): nothing is fetched from a refused issuer.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    insecure_http: bool,
) -> Result<Provider, LoginError> {
    let wrong = |why: String| LoginError::WrongIssuer {
        issuer: issuer.to_owned(),
        why,
    };
    let url = Url::parse(issuer).map_err(|e| wrong(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() {
        return Err(wrong("not an http(s) URL without a query".into()));
    }
    require_secure("--issuer", &url, insecure_http)?;
    let doc = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&doc)
        .send()
        .await
        .map_err(|e| wrong(format!("cannot fetch {doc}: {}", why(&e))))?;
    if !resp.status().is_success() {
        return Err(wrong(format!(
            "{doc} answered HTTP {}: no OpenID Provider there",
            resp.status().as_u16()
        )));
    }
    let p: Provider = resp
        .json()
        .await
        .map_err(|e| wrong(format!("{doc} is not a discovery document ({e})")))?;
    if p.issuer != issuer {
        return Err(wrong(format!(
            "the provider there calls itself {:?}",
            p.issuer
        )));
    }
    for (what, ep) in [
        ("token_endpoint", Some(&p.token_endpoint)),
        (
            "device_authorization_endpoint",
            p.device_authorization_endpoint.as_ref(),
        ),
        ("revocation_endpoint", p.revocation_endpoint.as_ref()),
        ("end_session_endpoint", p.end_session_endpoint.as_ref()),
    ] {
        let Some(ep) = ep else { continue };
        let u = Url::parse(ep).map_err(|e| LoginError::BadAnswer {
            what: "discovery document",
            why: format!("{what} {ep:?} is not a URL ({e})"),
        })?;
        require_secure(&format!("the provider's {what}"), &u, insecure_http)?;
    }
    Ok(p)
}

fn url_of<T>(
    what: &'static str,
    raw: &str,
    make: impl FnOnce(String) -> Result<T, url::ParseError>,
) -> Result<T, LoginError> {
    make(raw.to_owned()).map_err(|e| LoginError::BadAnswer {
        what,
        why: format!("{raw:?} is not a URL ({e})"),
    })
}

/// A token-endpoint failure as a [`LoginError`].
fn token_error<RE: std::error::Error + 'static, T: ErrorResponse + 'static>(
    what: &'static str,
    url: &str,
    e: RequestTokenError<RE, T>,
    server: impl FnOnce(&T) -> (String, Option<String>),
) -> LoginError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let (error, description) = server(&r);
            LoginError::Refused {
                what,
                error,
                description,
            }
        }
        RequestTokenError::Request(e) => {
            let mut s = e.to_string();
            let mut src = e.source();
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            LoginError::Unreachable {
                what,
                url: url.to_owned(),
                why: s,
            }
        }
        RequestTokenError::Parse(e, _) => LoginError::BadAnswer {
            what,
            why: e.to_string(),
        },
        RequestTokenError::Other(why) => LoginError::BadAnswer { what, why },
    }
}

fn basic(r: &BasicErrorResponse) -> (String, Option<String>) {
    (r.error().to_string(), r.error_description().cloned())
}

/// Turns a token response into the credentials to store.
fn credentials(
    p: &Provider,
    client_id: &str,
    grant: Grant,
    t: &BasicTokenResponse,
    old_refresh: Option<String>,
    scopes: &[String],
) -> Credentials {
    let life = t.expires_in().unwrap_or(Duration::from_secs(60));
    Credentials {
        issuer: p.issuer.clone(),
        client_id: client_id.to_owned(),
        grant,
        token_endpoint: p.token_endpoint.clone(),
        revocation_endpoint: p.revocation_endpoint.clone(),
        end_session_endpoint: p.end_session_endpoint.clone(),
        access_token: t.access_token().secret().clone(),
        refresh_token: t
            .refresh_token()
            .map(|r| r.secret().clone())
            .or(old_refresh),
        expires_at: expiry(Utc::now(), life),
        scopes: scopes.to_vec(),
        insecure_http: false,
    }
}

fn expiry(now: DateTime<Utc>, life: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(life)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// RFC 8628: asks for a device code, lets `show` tell the user where to
/// go, then polls the token endpoint until the user approves or refuses,
/// or the code expires.
pub async fn device_login(
    http: &reqwest::Client,
    p: &Provider,
    client_id: &str,
    scopes: &[String],
    show: impl FnOnce(&StandardDeviceAuthorizationResponse),
) -> Result<Credentials, LoginError> {
    let dev_ep =
        p.device_authorization_endpoint
            .as_deref()
            .ok_or_else(|| LoginError::NoDeviceGrant {
                issuer: p.issuer.clone(),
            })?;
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_token_uri(url_of("token endpoint", &p.token_endpoint, TokenUrl::new)?)
        .set_device_authorization_url(url_of(
            "device authorization",
            dev_ep,
            DeviceAuthorizationUrl::new,
        )?);
    // PKCE on the device grant too (Keycloak requires it of a client with
    // `pkce.code.challenge.method`, as the shipped `cli`; others ignore it):
    // only this process can redeem the approved device code.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .add_extra_param("code_challenge", challenge.as_str().to_owned())
        .add_extra_param(
            "code_challenge_method",
            challenge.method().as_str().to_owned(),
        )
        .request_async(http)
        .await
        .map_err(|e| token_error("device authorization request", dev_ep, e, basic))?;
    show(&details);
    let token = client
        .exchange_device_access_token(&details)
        .add_extra_param("code_verifier", verifier.secret().clone())
        .request_async(http, tokio::time::sleep, None)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => device_error(&r),
            other => token_error("device sign-in", &p.token_endpoint, other, |r| {
                (r.error().to_string(), r.error_description().cloned())
            }),
        })?;
    Ok(credentials(
        p,
        client_id,
        Grant::DeviceCode,
        &token,
        None,
        scopes,
    ))
}

fn device_error(r: &DeviceCodeErrorResponse) -> LoginError {
    match r.error() {
        DeviceCodeErrorResponseType::AccessDenied => LoginError::Denied,
        DeviceCodeErrorResponseType::ExpiredToken => LoginError::Expired,
        other => LoginError::Refused {
            what: "device sign-in",
            error: other.to_string(),
            description: r.error_description().cloned(),
        },
    }
}

/// Client credentials grant with the id and secret given.
pub async fn client_credentials(
    http: &reqwest::Client,
    p: &Provider,
    client_id: &str,
    secret: &str,
    scopes: &[String],
) -> Result<Credentials, LoginError> {
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_client_secret(ClientSecret::new(secret.to_owned()))
        .set_token_uri(url_of("token endpoint", &p.token_endpoint, TokenUrl::new)?);
    let token = client
        .exchange_client_credentials()
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .request_async(http)
        .await
        .map_err(|e| token_error("client credentials login", &p.token_endpoint, e, basic))?;
    Ok(credentials(
        p,
        client_id,
        Grant::ClientCredentials,
        &token,
        None,
        scopes,
    ))
}

/// The provider of a stored login, discovered again from its issuer: a
/// renewal (which sends the refresh token, or the environment's client
/// secret) or a logout never goes to an endpoint only the file names. A
/// file whose token endpoint is not the issuer's own is refused, since it
/// was changed by someone or something other than `portcullis login`.
pub async fn rediscover(http: &reqwest::Client, c: &Credentials) -> Result<Provider, LoginError> {
    let renewal = |why: String| LoginError::Renewal {
        issuer: c.issuer.clone(),
        why,
    };
    let p = discover(http, &c.issuer, c.insecure_http)
        .await
        .map_err(|e| match e {
            LoginError::WrongIssuer { why, .. } => renewal(format!("its discovery failed ({why})")),
            other => other,
        })?;
    if p.token_endpoint != c.token_endpoint {
        return Err(renewal(format!(
            "the credentials file names the token endpoint {:?}, but the issuer's discovery document names {:?}",
            c.token_endpoint, p.token_endpoint
        )));
    }
    Ok(p)
}

/// New tokens for a device login, with its refresh token, at `p` (from
/// [`rediscover`]).
pub async fn refresh(
    http: &reqwest::Client,
    p: &Provider,
    c: &Credentials,
) -> Result<Credentials, LoginError> {
    let ended = |why: String| LoginError::SessionEnded {
        issuer: c.issuer.clone(),
        why,
    };
    let Some(rt) = c.refresh_token.clone() else {
        return Err(ended("no refresh token was issued".into()));
    };
    let client = BasicClient::new(ClientId::new(c.client_id.clone())).set_token_uri(url_of(
        "token endpoint",
        &p.token_endpoint,
        TokenUrl::new,
    )?);
    let token = client
        .exchange_refresh_token(&RefreshToken::new(rt.clone()))
        .request_async(http)
        .await
        .map_err(
            |e| match token_error("refresh", &p.token_endpoint, e, basic) {
                LoginError::Refused {
                    error, description, ..
                } => ended(format!(
                    "{error}{}",
                    description.map(|d| format!(": {d}")).unwrap_or_default()
                )),
                other => other,
            },
        )?;
    Ok(credentials(
        p,
        &c.client_id,
        c.grant,
        &token,
        Some(rt),
        &c.scopes,
    ))
}

/// Ends the login at the provider `p` (from [`rediscover`]): the session
/// it belongs to when the provider takes a refresh token at its
/// end-session endpoint (Keycloak: the user session the device approval
/// made ends, with every token of it), else RFC 7009 revocation of the
/// refresh token. `Ok(false)`: there was nothing to end (a
/// client-credentials login has no session).
pub async fn end(
    http: &reqwest::Client,
    p: &Provider,
    c: &Credentials,
) -> Result<bool, LoginError> {
    if let (Some(rt), Some(ep)) = (&c.refresh_token, &p.end_session_endpoint) {
        let r = http
            .post(ep)
            .form(&[
                ("client_id", c.client_id.as_str()),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return Ok(true);
        }
    }
    revoke(http, p, c).await
}

/// RFC 7009: revokes the refresh token. `Ok(false)`: nothing to revoke,
/// or no endpoint.
async fn revoke(http: &reqwest::Client, p: &Provider, c: &Credentials) -> Result<bool, LoginError> {
    let (Some(rt), Some(ep)) = (c.refresh_token.clone(), p.revocation_endpoint.as_deref()) else {
        return Ok(false);
    };
    let client = BasicClient::new(ClientId::new(c.client_id.clone())).set_revocation_url(url_of(
        "revocation endpoint",
        ep,
        RevocationUrl::new,
    )?);
    let req = client
        .revoke_token(StandardRevocableToken::RefreshToken(RefreshToken::new(rt)))
        .map_err(|e| LoginError::BadAnswer {
            what: "revocation",
            why: e.to_string(),
        })?;
    req.request_async(http).await.map_err(|e| {
        token_error("revocation", ep, e, |r| {
            (r.error().to_string(), r.error_description().cloned())
        })
    })?;
    Ok(true)
}
