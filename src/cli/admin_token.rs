//! `portcullis admin token …` (also spelled `portcullis token …` without
//! `--api`, the older spelling) and `portcullis migrate`: token
//! administration straight against the configured store (`--config` or
//! `--dev --data-dir`), for operators: any user, no API rules.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::ConfigArgs;
use crate::config::Config;
use crate::pat::{self, CreateRequest};
use crate::store::{Store, TokenRecord};
use crate::tokens::TokenView;

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create a PAT; prints the raw token once, alone on stdout.
    Create(CreateArgs),
    /// List a user's tokens (metadata only: never tokens or hashes).
    List(AdminListArgs),
    /// Revoke one token by id.
    Revoke(RevokeArgs),
    /// Revoke every active token of a user.
    RevokeAll(ListArgs),
    /// Re-hash every legacy (SHA-256) opaque PAT under `pat.hash_key`. Run
    /// once when you set the key: with a key, Check accepts only re-hashed
    /// rows, so a row planted in the database without the key never works.
    Rekey(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Owner's `sub`.
    #[arg(long)]
    pub user: String,
    /// Owner's issuer (`iss`); default: the one configured issuer (required
    /// when several are configured).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Owner's username.
    #[arg(long)]
    pub username: String,
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
    pub cfg: ConfigArgs,
    /// Owner's `sub`.
    #[arg(long)]
    pub user: String,
    /// Owner's issuer (`iss`); default: the one configured issuer (required
    /// when several are configured).
    #[arg(long)]
    pub issuer: Option<String>,
}

#[derive(Debug, Args)]
pub struct AdminListArgs {
    #[command(flatten)]
    pub owner: ListArgs,
    /// Print JSON (the token API's shape) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Token id (uuid).
    pub id: Uuid,
}

/// Opens the configured store and applies migrations.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    if let Err(errs) = cfg.validate() {
        let text: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        bail!("invalid configuration:\n{}", text.join("\n"));
    }
    let store = Store::connect(&cfg.store, &cfg.data_dir)
        .await
        .context("opening the token store")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// The issuers tokens can belong to: `issuers[]`, plus with `--dev` the dev
/// issuer `serve --dev` last used in the data dir.
fn configured_issuers(args: &ConfigArgs, cfg: &Config) -> Vec<String> {
    let mut v: Vec<String> = cfg.issuers.iter().map(|i| i.issuer.clone()).collect();
    if args.dev
        && let Ok(d) = crate::dev::DevIssuer::load_existing(&cfg.data_dir, None)
    {
        v.push(d.issuer().to_owned());
    }
    v
}

/// `--issuer`, or the one configured issuer. A user is (issuer, sub), so
/// with several issuers guessing could act on another issuer's user.
fn owner_issuer(flag: Option<String>, issuers: &[String]) -> anyhow::Result<String> {
    match flag {
        Some(i) if i.trim().is_empty() => bail!("--issuer: must not be empty"),
        Some(i) => Ok(i),
        None => match issuers {
            [one] => Ok(one.clone()),
            [] => bail!("--issuer: required (no issuer is configured to default to)"),
            many => bail!(
                "--issuer: required when several issuers are configured (one of: {})",
                many.join(", ")
            ),
        },
    }
}

pub async fn migrate(args: ConfigArgs) -> anyhow::Result<i32> {
    let cfg = args.load()?;
    let store = Store::connect(&cfg.store, &cfg.data_dir).await?;
    let applied = store.migrate().await.context("applying migrations")?;
    if applied.is_empty() {
        println!("schema is up to date");
    } else {
        println!("applied migrations {applied:?}");
    }
    // As at `serve` start-up: pre-0004 rows belong to the one issuer, if one.
    if let [issuer] = configured_issuers(&args, &cfg).as_slice() {
        let n = store.claim_unowned(issuer).await?;
        if n > 0 {
            println!("gave {n} token(s) without an owner issuer to {issuer}");
        }
    }
    Ok(0)
}

pub async fn run(cmd: AdminTokenCommand) -> anyhow::Result<i32> {
    match cmd {
        AdminTokenCommand::Create(a) => create(a).await,
        AdminTokenCommand::List(a) => list(a).await,
        AdminTokenCommand::Revoke(a) => revoke(a).await,
        AdminTokenCommand::RevokeAll(a) => revoke_all(a).await,
        AdminTokenCommand::Rekey(a) => rekey(a).await,
    }
}

async fn rekey(args: ConfigArgs) -> anyhow::Result<i32> {
    let cfg = args.load()?;
    let hasher = crate::pat::hasher::TokenHasher::new(cfg.pat.hash_key.as_deref());
    if !hasher.is_keyed() {
        anyhow::bail!(
            "pat.hash_key is not set (PORTCULLIS__PAT__HASH_KEY): nothing to re-hash under"
        );
    }
    let store = open_store(&cfg).await?;
    let n = crate::pat::hasher::rekey_legacy(&store, &hasher).await?;
    println!("re-hashed {n} legacy personal access token(s) under pat.hash_key");
    Ok(0)
}

pub(super) async fn create(a: CreateArgs) -> anyhow::Result<i32> {
    let cfg = a.cfg.load()?;
    let issuer = owner_issuer(a.issuer, &configured_issuers(&a.cfg, &cfg))?;
    let store = open_store(&cfg).await?;
    let now = Utc::now();
    let expires_at = match a.expires_in {
        // Checked: an unchecked `+` past chrono's range panics.
        Some(d) => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .with_context(|| {
                    format!(
                        "--expires-in is too large: at most {} days (pat.max_lifetime_days)",
                        cfg.pat.max_lifetime_days
                    )
                })?,
        ),
        None => None,
    };
    let req = CreateRequest {
        user_id: a.user,
        user_issuer: issuer,
        username: a.username,
        name: a.name,
        description: a.description,
        scopes: a.scopes.split_whitespace().map(str::to_owned).collect(),
        expires_at,
        rotated_from: None,
    };
    match pat::create_by(&store, &cfg.pat, req, now, &super::audit::cli_cause()).await {
        Ok((raw, rec)) => {
            eprintln!(
                "created token {} ({}) expiring {}; it is shown once",
                rec.id,
                rec.display_hint,
                rec.expires_at.to_rfc3339()
            );
            println!("{raw}");
            // After printing: the token exists whatever happens here. Lets
            // running replicas look it up at once (bus `new:`); otherwise
            // their resync loop or lookup budget covers it.
            match revoker_for(&cfg, store.clone()).await {
                Ok(r) => r.announce_created(&rec).await,
                Err(e) => tracing::warn!(error = %e, "announcing the new token failed"),
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

pub(super) async fn list(a: AdminListArgs) -> anyhow::Result<i32> {
    let o = a.owner;
    let cfg = o.cfg.load()?;
    let configured = configured_issuers(&o.cfg, &cfg);
    let issuer = owner_issuer(o.issuer, &configured)?;
    let store = open_store(&cfg).await?;
    let tokens = store.list_for_user(&issuer, &o.user).await?;
    // As Check decides (`Engine::owner_issuer_trusted`): listed anyway, so
    // the operator can revoke what a removed issuer's users still hold.
    let trusted = |i: &str| {
        configured
            .iter()
            .chain(&cfg.pat.owner_issuers)
            .any(|c| c == i)
    };
    if !tokens.is_empty() && !trusted(&issuer) {
        eprintln!(
            "note: issuer {issuer} is not configured (issuers, pat.owner_issuers): Check refuses \
             these tokens until it is added back; `admin token revoke-all` revokes them"
        );
    }
    if a.json {
        let now = Utc::now();
        let views: Vec<TokenView> = tokens
            .iter()
            .map(|t| TokenView::of(t, now).flag_issuer(trusted))
            .collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        print!("{}", table(&tokens));
    }
    Ok(0)
}

pub(super) async fn revoke(a: RevokeArgs) -> anyhow::Result<i32> {
    let cfg = a.cfg.load()?;
    let store = open_store(&cfg).await?;
    let revoker = revoker_for(&cfg, store).await?;
    match revoker.revoke_by(a.id, &super::audit::cli_cause()).await? {
        Some(rec) => {
            println!("revoked {} ({})", rec.id, rec.name);
            Ok(0)
        }
        None => {
            eprintln!("error: no token with id {}", a.id);
            Ok(1)
        }
    }
}

async fn revoke_all(a: ListArgs) -> anyhow::Result<i32> {
    let cfg = a.cfg.load()?;
    let issuer = owner_issuer(a.issuer, &configured_issuers(&a.cfg, &cfg))?;
    let store = open_store(&cfg).await?;
    let revoker = revoker_for(&cfg, store).await?;
    let revoked = revoker
        .revoke_all_by(&issuer, &a.user, &super::audit::cli_cause())
        .await?;
    println!(
        "revoked {} token(s) of {} at {issuer}",
        revoked.len(),
        a.user
    );
    Ok(0)
}

/// The same revocation path the server uses (store first, then the bus).
pub(super) async fn revoker_for(
    cfg: &Config,
    store: Store,
) -> anyhow::Result<crate::revocation::Revoker> {
    let pats = std::sync::Arc::new(crate::pat::PatValidator::new(store, &cfg.pat));
    crate::revocation::Revoker::for_config(&cfg.revocation, pats)
}

/// A plain-text table; no raw tokens, no hashes.
pub fn table(tokens: &[TokenRecord]) -> String {
    let now = Utc::now();
    let rows = tokens.iter().map(|t| TableRow {
        id: t.id.to_string(),
        name: &t.name,
        hint: &t.display_hint,
        scopes: &t.scopes,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        last_used_ip: t.last_used_ip.as_deref(),
        last_used_user_agent: t.last_used_user_agent.as_deref(),
        revoked: t.revoked_at.is_some(),
    });
    render_table(rows, now)
}

/// One token's line in [`render_table`].
pub(super) struct TableRow<'a> {
    pub id: String,
    pub name: &'a str,
    pub hint: &'a str,
    pub scopes: &'a [String],
    pub expires_at: chrono::DateTime<Utc>,
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    pub last_used_ip: Option<&'a str>,
    pub last_used_user_agent: Option<&'a str>,
    pub revoked: bool,
}

/// Longest User-Agent shown in the table (`--json` has it whole).
const UA_WIDTH: usize = 40;

/// A table cell of client-supplied text: control characters and the
/// invisible ones that reorder or hide text escaped (a User-Agent must not
/// move the cursor, forge lines or flip what the operator reads), at most
/// `max` characters (the last one `…` when cut).
fn cell(text: Option<&str>, max: usize) -> String {
    /// Unicode format characters (Cf) and separators (Zl, Zp) that a
    /// terminal draws as nothing: bidi embeddings, overrides, isolates and
    /// marks (Trojan Source), zero-width spaces and joiners, the soft
    /// hyphen, the byte-order mark, line and paragraph separators.
    fn is_invisible(c: char) -> bool {
        matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    }
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return "-".to_owned();
    };
    let escaped: String = text
        .chars()
        .flat_map(|c| {
            let e: Vec<char> = if c.is_control() || is_invisible(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            e
        })
        .collect();
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The token table both the operator and the API commands print.
pub(super) fn render_table<'a>(
    tokens: impl Iterator<Item = TableRow<'a>>,
    now: chrono::DateTime<Utc>,
) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "NAME".to_owned(),
        "HINT".to_owned(),
        "SCOPES".to_owned(),
        "EXPIRES".to_owned(),
        "LAST USED".to_owned(),
        "LAST IP".to_owned(),
        "LAST USER AGENT".to_owned(),
        "STATUS".to_owned(),
    ]];
    for t in tokens {
        let status = if t.revoked {
            "revoked"
        } else if t.expires_at <= now {
            "expired"
        } else if t.expires_at - now <= chrono::TimeDelta::days(7) {
            "active (expires within 7 days)"
        } else {
            "active"
        };
        rows.push([
            t.id,
            cell(Some(t.name), usize::MAX),
            t.hint.to_owned(),
            t.scopes.join(" "),
            t.expires_at.format("%Y-%m-%d %H:%M").to_string(),
            t.last_used_at
                .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".to_owned()),
            cell(t.last_used_ip, usize::MAX),
            cell(t.last_used_user_agent, UA_WIDTH),
            status.to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{TableRow, owner_issuer, render_table};

    #[test]
    fn table_shows_last_use_address_and_user_agent_escaped_and_cut() {
        let now = chrono::Utc::now();
        let scopes = vec!["a:read".to_owned()];
        let row = |ip, ua| TableRow {
            id: "id".into(),
            name: "ci",
            hint: "pat_abc…",
            scopes: &scopes,
            expires_at: now + chrono::TimeDelta::days(30),
            last_used_at: Some(now),
            last_used_ip: ip,
            last_used_user_agent: ua,
            revoked: false,
        };
        let long = "curl/8.5.0 ".repeat(10);
        let out = render_table(
            [
                row(Some("203.0.113.7"), Some("evil\u{1b}[2J\nforged line")),
                row(Some("2001:db8::1"), Some(long.as_str())),
                row(None, None),
            ]
            .into_iter(),
            now,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].contains("LAST IP") && lines[0].contains("LAST USER AGENT"));
        assert!(lines[1].contains("203.0.113.7"), "{out}");
        assert!(lines[1].contains("evil\\u{1b}[2J\\nforged line"), "{out}");
        let flipped = super::cell(Some("curl\u{202E}txt.exe\u{2066}\u{200B}\u{2028}"), 80);
        assert_eq!(flipped, "curl\\u{202e}txt.exe\\u{2066}\\u{200b}\\u{2028}");
        assert!(
            !out.contains('\u{1b}'),
            "no raw escape reaches the terminal"
        );
        assert!(lines[2].contains("2001:db8::1"), "{out}");
        assert!(lines[2].contains("curl/8.5.0 curl/8.5.0") && lines[2].contains('…'));
        assert!(
            !lines[2].contains(&long),
            "the table cuts a long User-Agent"
        );
        assert!(lines[3].contains(" -  "), "{out}");
    }

    #[test]
    fn item6_issuer_flag_defaults_to_the_single_issuer_and_is_required_with_several() {
        let one = vec!["https://a".to_owned()];
        let two = vec!["https://a".to_owned(), "https://b".to_owned()];
        assert_eq!(owner_issuer(None, &one).unwrap(), "https://a");
        assert_eq!(
            owner_issuer(Some("https://b".into()), &two).unwrap(),
            "https://b"
        );
        for (flag, issuers) in [(None, &two), (None, &vec![]), (Some(" ".to_owned()), &one)] {
            let e = owner_issuer(flag, issuers).unwrap_err().to_string();
            assert!(e.starts_with("--issuer: "), "{e}");
        }
    }
}
