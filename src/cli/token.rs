//! `portcullis token …`: with `--api URL`, the REST API called as the
//! user `portcullis login` signed in, so the API's rules apply (own tokens
//! only, scopes within the caller's). Without `--api`, the older spelling
//! of `portcullis admin token …` (straight to the store, any user).

use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use clap::{Args, Subcommand};
use url::Url;
use uuid::Uuid;

use super::ConfigArgs;
use super::admin_token::{self, AdminTokenCommand, TableRow, render_table};
use super::api_client::ApiClient;
use crate::tokens::{CreatedView, TokenView};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a PAT; prints the raw token once, alone on stdout. With
    /// `--api`: for yourself, through the API; else (operator) for `--user`.
    Create(CreateArgs),
    /// List tokens (metadata only: never tokens or hashes). With `--api`:
    /// yours; else (operator) `--user`'s.
    List(ListArgs),
    /// Show one of your tokens (`--api` only).
    Get(IdArgs),
    /// Replace one of your tokens by a new one (the old one stops working);
    /// prints the new raw token once, alone on stdout (`--api` only).
    Rotate(RotateArgs),
    /// Revoke a token by id. With `--api`: one of yours; else (operator) any.
    Revoke(RevokeArgs),
    /// Operator: revoke every active token of a user (= `admin token revoke-all`).
    RevokeAll(admin_token::ListArgs),
    /// Operator: re-hash legacy PATs under `pat.hash_key` (= `admin token rekey`).
    Rekey(ConfigArgs),
}

/// `--api URL`: the portcullis HTTP address (REST API) to call as the
/// logged-in user. Excludes the operator flags.
#[derive(Debug, Args, Clone)]
pub struct ApiArg {
    /// Call the token API at this URL (portcullis's HTTP port, or Envoy in
    /// front of it) as the user `portcullis login` signed in.
    #[arg(long, value_name = "URL", conflicts_with_all = ["config", "dev", "data_dir"])]
    pub api: Option<Url>,
    /// Allow `--api` to be plain http on a host other than this machine
    /// (the login's access token then crosses the network in clear: for a
    /// test network only).
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Operator: owner's `sub`.
    #[arg(long, required_unless_present = "api", conflicts_with = "api")]
    pub user: Option<String>,
    /// Operator: owner's issuer (default: the one configured issuer).
    #[arg(long, conflicts_with = "api")]
    pub issuer: Option<String>,
    /// Operator: owner's username.
    #[arg(long, required_unless_present = "api", conflicts_with = "api")]
    pub username: Option<String>,
    /// Token name (required).
    #[arg(long)]
    pub name: String,
    /// Space-separated scopes, e.g. "a:read b:write".
    #[arg(long)]
    pub scopes: String,
    /// Lifetime, e.g. 30d (default `pat.default_lifetime_days`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Operator: owner's `sub`.
    #[arg(long, required_unless_present = "api", conflicts_with = "api")]
    pub user: Option<String>,
    /// Operator: owner's issuer (default: the one configured issuer).
    #[arg(long, conflicts_with = "api")]
    pub issuer: Option<String>,
    /// Print JSON (the token API's shape) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The token API's URL (see `token create --help`).
    #[arg(long, value_name = "URL")]
    pub api: Url,
    /// Allow a plain-http `--api` off this machine (see `token create --help`).
    #[arg(long)]
    pub insecure_http: bool,
    /// Token id (uuid).
    pub id: Uuid,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The token API's URL (see `token create --help`).
    #[arg(long, value_name = "URL")]
    pub api: Url,
    /// Allow a plain-http `--api` off this machine (see `token create --help`).
    #[arg(long)]
    pub insecure_http: bool,
    /// Token id (uuid).
    pub id: Uuid,
    /// Lifetime of the new token, e.g. 30d (default: the old one's).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub api: ApiArg,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Token id (uuid).
    pub id: Uuid,
}

/// `--insecure-http` only loosens `--api`: alone it is a mistake, said so.
fn operator(api: &ApiArg) -> anyhow::Result<()> {
    if api.insecure_http {
        bail!("--insecure-http goes with --api URL (the operator commands do not call an API)");
    }
    Ok(())
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<i32> {
    match &cmd {
        TokenCommand::Create(CreateArgs { api, .. })
        | TokenCommand::List(ListArgs { api, .. })
        | TokenCommand::Revoke(RevokeArgs { api, .. })
            if api.api.is_none() =>
        {
            operator(api)?
        }
        _ => {}
    }
    match cmd {
        TokenCommand::Create(a) => match a.api.api.clone() {
            Some(api) => create(api, a.api.insecure_http, a).await,
            None => admin_token::create(operator_create(a)?).await,
        },
        TokenCommand::List(a) => match a.api.api.clone() {
            Some(api) => list(api, a.api.insecure_http, a.json).await,
            None => {
                let Some(user) = a.user else {
                    bail!("--user is required (or --api URL to list your own tokens)")
                };
                admin_token::list(admin_token::AdminListArgs {
                    owner: admin_token::ListArgs {
                        cfg: a.cfg,
                        user,
                        issuer: a.issuer,
                    },
                    json: a.json,
                })
                .await
            }
        },
        TokenCommand::Get(a) => get(a).await,
        TokenCommand::Rotate(a) => rotate(a).await,
        TokenCommand::Revoke(a) => match a.api.api.clone() {
            Some(api) => revoke(api, a.api.insecure_http, a.id).await,
            None => {
                admin_token::revoke(admin_token::RevokeArgs {
                    cfg: a.cfg,
                    id: a.id,
                })
                .await
            }
        },
        TokenCommand::RevokeAll(a) => admin_token::run(AdminTokenCommand::RevokeAll(a)).await,
        TokenCommand::Rekey(a) => admin_token::run(AdminTokenCommand::Rekey(a)).await,
    }
}

fn operator_create(a: CreateArgs) -> anyhow::Result<admin_token::CreateArgs> {
    let (Some(user), Some(username)) = (a.user, a.username) else {
        bail!("--user and --username are required (or --api URL to create a token for yourself)")
    };
    Ok(admin_token::CreateArgs {
        cfg: a.cfg,
        user,
        issuer: a.issuer,
        username,
        name: a.name,
        scopes: a.scopes,
        expires_in: a.expires_in,
        description: a.description,
    })
}

/// `now + d` as RFC 3339 for the API's `expires_at`; checked, since an
/// unchecked `+` past chrono's range panics.
fn expires_at(d: Option<Duration>) -> anyhow::Result<Option<String>> {
    let Some(d) = d else { return Ok(None) };
    let at = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d));
    match at {
        Some(at) => Ok(Some(at.to_rfc3339())),
        None => bail!("--expires-in {}: too large", humantime::format_duration(d)),
    }
}

/// Prints a new token: the raw token alone on stdout, the rest on stderr.
fn print_created(c: &CreatedView, verb: &str) {
    eprintln!(
        "{verb} token {} \"{}\" ({}) with scopes {} expiring {}; it is shown once",
        c.id,
        c.name,
        c.display_hint,
        c.scopes.join(" "),
        c.expires_at.to_rfc3339()
    );
    println!("{}", c.token);
}

async fn create(api: Url, insecure_http: bool, a: CreateArgs) -> anyhow::Result<i32> {
    let client = ApiClient::logged_in(api, insecure_http).await?;
    let mut body = serde_json::json!({
        "name": a.name,
        "scopes": a.scopes.split_whitespace().collect::<Vec<_>>(),
    });
    if let Some(d) = a.description {
        body["description"] = d.into();
    }
    if let Some(at) = expires_at(a.expires_in)? {
        body["expires_at"] = at.into();
    }
    let created: CreatedView = client.post("/api/v1/tokens", body).await?;
    print_created(&created, "created");
    Ok(0)
}

fn rows(tokens: &[TokenView]) -> String {
    render_table(
        tokens.iter().map(|t| TableRow {
            id: t.id.to_string(),
            name: &t.name,
            hint: &t.display_hint,
            scopes: &t.scopes,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            last_used_ip: t.last_used_ip.as_deref(),
            last_used_user_agent: t.last_used_user_agent.as_deref(),
            revoked: t.revoked_at.is_some(),
        }),
        Utc::now(),
    )
}

async fn list(api: Url, insecure_http: bool, json: bool) -> anyhow::Result<i32> {
    let client = ApiClient::logged_in(api, insecure_http).await?;
    let tokens: Vec<TokenView> = client.get("/api/v1/tokens").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
    } else {
        print!("{}", rows(&tokens));
    }
    Ok(0)
}

async fn get(a: IdArgs) -> anyhow::Result<i32> {
    let client = ApiClient::logged_in(a.api, a.insecure_http).await?;
    let t: TokenView = client.get(&format!("/api/v1/tokens/{}", a.id)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print!("{}", rows(std::slice::from_ref(&t)));
        if let Some(d) = &t.description {
            println!("description: {d}");
        }
        println!("created: {}", t.created_at.to_rfc3339());
    }
    Ok(0)
}

async fn rotate(a: RotateArgs) -> anyhow::Result<i32> {
    let client = ApiClient::logged_in(a.api, a.insecure_http).await?;
    let mut body = serde_json::json!({});
    if let Some(at) = expires_at(a.expires_in)? {
        body["expires_at"] = at.into();
    }
    let created: CreatedView = client
        .post(&format!("/api/v1/tokens/{}/rotate", a.id), body)
        .await?;
    print_created(&created, "rotated into");
    Ok(0)
}

async fn revoke(api: Url, insecure_http: bool, id: Uuid) -> anyhow::Result<i32> {
    let client = ApiClient::logged_in(api, insecure_http).await?;
    let t: TokenView = client.delete(&format!("/api/v1/tokens/{id}")).await?;
    println!("revoked {} ({})", t.id, t.name);
    Ok(0)
}
