//! `portcullis audit`: the audit trail (token events) straight from the
//! configured store, like `GET /api/v1/audit` for an operator; and the
//! actor the token commands record.

use clap::Args;
use uuid::Uuid;

use super::ConfigArgs;
use super::admin_token::open_store;
use crate::store::{Actor, ActorKind, Cause, EventKind, EventQuery, EventRecord};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Only events about this user's tokens or made by this user (`sub`).
    #[arg(long)]
    pub user: Option<String>,
    /// The user's issuer; default: the one configured issuer.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Only events about this token.
    #[arg(long)]
    pub token_id: Option<Uuid>,
    /// Only this event (e.g. token.revoked).
    #[arg(long)]
    pub event: Option<String>,
    /// Most events shown, newest first.
    #[arg(long, default_value = "100")]
    pub limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The actor of changes made by the token commands: the operator, named by
/// `$USER` (unverified: whoever runs the CLI has the store's credentials).
pub(super) fn cli_cause() -> Cause {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    Cause {
        actor: Actor {
            kind: ActorKind::Cli,
            subject: user,
            ..Actor::default()
        },
        reason: "cli",
    }
}

pub async fn run(a: AuditArgs) -> anyhow::Result<i32> {
    if let Some(e) = a.event.as_deref()
        && EventKind::parse(e).is_none()
    {
        anyhow::bail!("--event: unknown event {e:?}");
    }
    if !(1..=100_000).contains(&a.limit) {
        anyhow::bail!("--limit: must be between 1 and 100000");
    }
    let cfg = a.cfg.load()?;
    let party = match a.user {
        Some(user) => {
            let issuer = match a.issuer {
                Some(i) => i,
                None => match cfg.issuers.as_slice() {
                    [one] => one.issuer.clone(),
                    _ if a.cfg.dev => crate::dev::DevIssuer::load_existing(&cfg.data_dir, None)?
                        .issuer()
                        .to_owned(),
                    _ => {
                        anyhow::bail!("--issuer: required unless exactly one issuer is configured")
                    }
                },
            };
            Some((issuer, user))
        }
        None => None,
    };
    let store = open_store(&cfg).await?;
    let events = store
        .events(&EventQuery {
            party,
            token_id: a.token_id,
            event: a.event,
            before_seq: None,
            limit: a.limit,
        })
        .await?;
    if a.json {
        for e in &events {
            println!("{}", serde_json::to_string(e)?);
        }
    } else {
        print!("{}", table(&events));
    }
    Ok(0)
}

/// A plain-text table, newest first.
pub fn table(events: &[EventRecord]) -> String {
    let mut rows = vec![[
        "AT".to_owned(),
        "EVENT".to_owned(),
        "TOKEN".to_owned(),
        "OWNER".to_owned(),
        "ACTOR".to_owned(),
        "FROM".to_owned(),
        "REASON".to_owned(),
    ]];
    for e in events {
        let actor = match e.actor.subject.as_str() {
            "" => e.actor.kind.as_str().to_owned(),
            s => format!("{}:{s}", e.actor.kind.as_str()),
        };
        rows.push([
            e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.event.clone(),
            e.token_id
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            e.owner_id.clone(),
            actor,
            e.actor.client_addr.clone().unwrap_or_else(|| "-".into()),
            e.data["reason"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
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
