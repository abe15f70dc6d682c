//! Command line: `serve`, `dev-token`, `config check`, the token and
//! debugging commands, and `login`/`logout` for people and scripts. Parsing
//! lives here; the work lives in the domain modules (and, for the login
//! side, which only the command line has, in this module's children).
//!
//! Two kinds of token command: `token … --api URL` call the REST API as the
//! logged-in user (the API's rules apply); `admin token …` (also spelled
//! `token …` without `--api`) write to the store as an operator.

mod admin_token;
mod api_client;
mod audit;
mod check;
mod credentials;
mod login;
mod oidc;
mod revoke_jwt;
mod token;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, ProcessEnv};
use crate::dev::{DevIssuer, DevTokenSpec};
use crate::server::{self, ServeOptions};

/// Envoy ext_authz sidecar: Keycloak JWTs and personal access tokens.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version)]
pub struct Cli {
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_authz gRPC server and the HTTP endpoints.
    Serve(ServeArgs),
    /// Print a token signed by the `--dev` issuer.
    DevToken(DevTokenArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply the store's schema migrations.
    Migrate(ConfigArgs),
    /// Sign in at Keycloak (device grant, or `--client-credentials` from the
    /// environment) for the `token --api` commands.
    Login(login::LoginArgs),
    /// Forget the login (and end its session at the provider).
    Logout(login::LogoutArgs),
    /// Your personal access tokens through the API (`--api URL`, after
    /// `login`); without `--api`, the operator commands of `admin token`.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Operator commands that act on the configured store directly.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Show the decision for one request: route, scopes, reason. Exit 0 allow, 1 deny.
    Check(check::CheckArgs),
    /// Deny-list IdP-signed JWTs by `jti` or session `sid` (every replica).
    RevokeJwt(revoke_jwt::RevokeJwtArgs),
    /// Show the audit trail (token events) from the configured store.
    Audit(audit::AuditArgs),
}

/// Where configuration comes from, shared by every command that needs it.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// YAML config file; `PORTCULLIS__SECTION__KEY` env vars override it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Development mode: built-in issuer, embedded SQLite, loopback only.
    #[arg(long)]
    pub dev: bool,
    /// Data directory (overrides `data_dir`; default `./.portcullis`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// gRPC listen address, `HOST:PORT` or `unix:/path` (overrides `listen.grpc`).
    #[arg(long)]
    pub grpc_addr: Option<crate::listen::GrpcListen>,
    /// HTTP listen address (overrides `listen.http`).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Seconds allowed for a graceful shutdown.
    #[arg(long, default_value = "20")]
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// `preferred_username` (default: the sub).
    #[arg(long)]
    pub username: Option<String>,
    /// `email` claim.
    #[arg(long)]
    pub email: Option<String>,
    /// Space-separated scopes, e.g. "a:read b:write".
    #[arg(long, default_value = "")]
    pub scopes: String,
    /// Lifetime, e.g. 1h, 30m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub expires_in: Duration,
    /// `azp` claim.
    #[arg(long, default_value = "portcullis-dev")]
    pub client: String,
    /// Data directory holding the dev key.
    #[arg(long, default_value = ".portcullis")]
    pub data_dir: PathBuf,
    /// Issuer URL (default: the one the last `serve --dev` used).
    #[arg(long)]
    pub issuer: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Any user's personal access tokens, straight in the store (no API
    /// rules: for operators with the config and its database credentials).
    #[command(subcommand)]
    Token(admin_token::AdminTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file; exits non-zero naming each wrong key.
    Check(ConfigArgs),
}

// === impl ConfigArgs ===

impl ConfigArgs {
    /// Loads and (for `--dev`) adjusts the configuration. Not validated.
    pub fn load(&self) -> anyhow::Result<Config> {
        if !self.dev && self.config.is_none() {
            bail!("either --config FILE or --dev is required");
        }
        let mut cfg = Config::load(self.config.as_deref(), &ProcessEnv)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if self.dev {
            cfg.apply_dev_defaults(self.config.is_some());
        }
        Ok(cfg)
    }
}

/// Runs the parsed command; the exit code is the return value.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Serve(args) => serve(args, log_format).await,
        Command::DevToken(args) => dev_token(args),
        Command::Config(ConfigCommand::Check(args)) => config_check(args),
        Command::Migrate(args) => admin_token::migrate(args).await,
        Command::Login(args) => login::login(args).await,
        Command::Logout(args) => login::logout(args).await,
        Command::Token(cmd) => token::run(cmd).await,
        Command::Admin(AdminCommand::Token(cmd)) => admin_token::run(cmd).await,
        Command::Check(args) => check::run(args).await,
        Command::RevokeJwt(args) => revoke_jwt::run(args).await,
        Command::Audit(args) => audit::run(args).await,
    }
}

async fn serve(args: ServeArgs, log_format: Option<LogFormat>) -> anyhow::Result<i32> {
    let mut cfg = args.cfg.load()?;
    crate::telemetry::init(log_format.unwrap_or(cfg.log.format), &cfg.log.level);
    if let Some(a) = args.grpc_addr.clone() {
        cfg.listen.grpc = a;
    }
    if let Some(a) = args.http_addr {
        cfg.listen.http = a;
    }
    if args.cfg.dev && !(cfg.listen.grpc.is_local() && cfg.listen.http.ip().is_loopback()) {
        bail!(
            "--dev binds only to loopback; listen.grpc={} listen.http={} are not loopback addresses",
            cfg.listen.grpc,
            cfg.listen.http
        );
    }
    let running = server::start(ServeOptions {
        config: cfg,
        dev: args.cfg.dev,
    })
    .await?;
    let (cfg_args, grpc, http) = (args.cfg.clone(), args.grpc_addr, args.http_addr);
    let loader: crate::reload::Loader = std::sync::Arc::new(move || {
        let mut c = cfg_args.load()?;
        if let Some(a) = grpc.clone() {
            c.listen.grpc = a;
        }
        if let Some(a) = http {
            c.listen.http = a;
        }
        Ok(c)
    });
    running.enable_reload(loader, args.cfg.config.clone());
    server::wait_for_signal().await;
    tracing::info!("signal received; shutting down");
    running
        .shutdown(Duration::from_secs(args.shutdown_timeout_secs))
        .await;
    Ok(0)
}

fn dev_token(args: DevTokenArgs) -> anyhow::Result<i32> {
    let issuer = DevIssuer::load_existing(&args.data_dir, args.issuer.clone())?;
    let scopes: Vec<String> = args.scopes.split_whitespace().map(str::to_owned).collect();
    for s in &scopes {
        crate::scope::validate(s, crate::scope::ScopeRole::Granted)
            .with_context(|| format!("--scopes: {s:?}"))?;
    }
    let token = issuer.mint(&DevTokenSpec {
        sub: args.sub,
        username: args.username,
        email: args.email,
        scopes,
        expires_in: args.expires_in,
        client: args.client,
    })?;
    println!("{token}");
    Ok(0)
}

fn config_check(args: ConfigArgs) -> anyhow::Result<i32> {
    let cfg = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let mode = cfg.validate_mode(args.dev).map_err(|e| vec![e]);
    // Webhook secrets were read from the environment, as `serve` reads them.
    let secrets = crate::notify::resolve_secrets(&cfg.notify).map(|_| ());
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    match cfg.validate().and(mode).and(secrets) {
        Ok(()) => {
            println!("configuration is valid");
            Ok(0)
        }
        Err(errs) => {
            eprintln!("invalid configuration:");
            for e in errs {
                eprintln!("  {e}");
            }
            Ok(2)
        }
    }
}
