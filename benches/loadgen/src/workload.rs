//! What the load generator sends: the workload mix, and the tokens and PATs
//! it needs, created before a run so no minting or inserting is timed.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use futures::StreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use uuid::Uuid;

use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis::pat::format;
use portcullis::store::{NewToken, Store, TokenKind};
use portcullis_testkit::Req;

use crate::wire::Wire;

/// One kind of request in a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A JWT from a small pool, verified once before the run (cache hit).
    JwtWarm,
    /// A JWT never seen before (full RS256 verification).
    JwtCold,
    /// A PAT from a small pool, validated once before the run (cache hit).
    PatWarm,
    /// A PAT never seen before (store lookup).
    PatCold,
    /// No credential: a 401 denial.
    Deny,
}

pub const ALL_KINDS: [Kind; 5] = [
    Kind::JwtWarm,
    Kind::JwtCold,
    Kind::PatWarm,
    Kind::PatCold,
    Kind::Deny,
];

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JwtWarm => "jwt-warm",
            Kind::JwtCold => "jwt-cold",
            Kind::PatWarm => "pat-warm",
            Kind::PatCold => "pat-cold",
            Kind::Deny => "deny",
        }
    }

    /// The gRPC status code portcullis answers with (0 allow, 16 deny).
    pub fn expected_code(self) -> i32 {
        if self == Kind::Deny { 16 } else { 0 }
    }

    /// The kind used when unique tokens must not be spent (warm-up, handler).
    pub fn warm(self) -> Kind {
        match self {
            Kind::JwtCold => Kind::JwtWarm,
            Kind::PatCold => Kind::PatWarm,
            k => k,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--mix jwt-warm=70,pat-warm=20,deny=10`: kinds and integer weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out: Vec<(Kind, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part.split_once('=').unwrap_or((part, "1"));
            let kind = ALL_KINDS
                .into_iter()
                .find(|k| k.as_str() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
                    format!(
                        "unknown kind {name:?}; expected one of {}",
                        names.join(", ")
                    )
                })?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} must be a whole number, got {w:?}"))?;
            if out.iter().any(|(k, _)| *k == kind) {
                return Err(format!("{name} is listed twice"));
            }
            if w > 0 {
                out.push((kind, w));
            }
        }
        if out.is_empty() {
            return Err("the mix is empty".into());
        }
        Ok(Mix(out))
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, w)| format!("{k}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// A shuffled cycle of kinds with exactly the mix's proportions;
    /// request `i` is of kind `cycle[i % len]`. Seeded, so runs repeat.
    pub fn cycle(&self) -> Vec<Kind> {
        let g = self.0.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
        let mut v: Vec<Kind> = self
            .0
            .iter()
            .flat_map(|(k, w)| std::iter::repeat_n(*k, (*w / g) as usize))
            .collect();
        v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(8));
        v
    }

    /// The same mix with cold kinds replaced by their warm counterparts.
    pub fn warm(&self) -> Mix {
        let mut out: Vec<(Kind, u32)> = Vec::new();
        for (k, w) in &self.0 {
            let k = k.warm();
            match out.iter_mut().find(|(x, _)| *x == k) {
                Some(e) => e.1 += w,
                None => out.push((k, *w)),
            }
        }
        Mix(out)
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.0.iter().any(|(k, _)| *k == kind)
    }

    /// The share of requests of `kind`, 0..=1.
    pub fn share(&self, kind: Kind) -> f64 {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let w = self
            .0
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, w)| *w);
        f64::from(w) / f64::from(total.max(1))
    }

    /// How many unique `kind` requests `n` requests contain.
    pub fn count_in(&self, kind: Kind, n: u64) -> usize {
        let cycle = self.cycle();
        let per = cycle.iter().filter(|k| **k == kind).count() as u64;
        let len = cycle.len() as u64;
        let rem = cycle[..(n % len) as usize]
            .iter()
            .filter(|k| **k == kind)
            .count() as u64;
        (n / len * per + rem) as usize
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A CheckRequest shaped like Envoy's for `GET /bench/items/{n}?q=1`.
pub fn check_request(token: Option<&str>, n: usize) -> CheckRequest {
    let req = Req::get(&format!("/bench/items/{n}?q=1"))
        .host("bench.example.org")
        .id(&n.to_string())
        .pseudo_headers()
        .header("user-agent", "portcullis-bench/1")
        .header("accept", "application/json")
        .header("x-forwarded-proto", "https")
        .header("x-envoy-expected-rq-timeout-ms", "15000")
        .header("x-request-id", &Uuid::new_v4().to_string());
    match token {
        Some(t) => req.bearer(t),
        None => req,
    }
    .build()
}

/// Where tokens come from: the dev issuer's key and the token store the
/// server under test reads.
pub struct Sources {
    pub issuer: Arc<DevIssuer>,
    pub store: Option<Store>,
    pub pat_prefix: String,
}

/// Requests ready to send (encoded once), by kind.
#[derive(Default)]
pub struct Pools {
    warm: HashMap<Kind, Vec<Wire>>,
    cold: HashMap<Kind, ColdQueue>,
}

/// Unique requests, each handed out once.
struct ColdQueue {
    reqs: Vec<Wire>,
    next: AtomicUsize,
}

impl Pools {
    /// The request for the `i`-th request of `kind`; `None` when the unique
    /// requests of a cold kind ran out (counted as an error by the caller).
    pub fn get(&self, kind: Kind, i: usize) -> Option<Wire> {
        if let Some(q) = self.cold.get(&kind) {
            let n = q.next.fetch_add(1, Ordering::Relaxed);
            return q.reqs.get(n).cloned();
        }
        let pool = self.warm.get(&kind)?;
        pool.get(i % pool.len()).cloned()
    }

    /// Every warm request, to verify once before a run.
    pub fn warm_requests(&self) -> impl Iterator<Item = (Kind, &Wire)> {
        self.warm
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |r| (*k, r)))
    }

    /// Replaces the unique requests of the cold kinds.
    pub fn set_cold(&mut self, kind: Kind, reqs: Vec<Wire>) {
        self.cold.insert(
            kind,
            ColdQueue {
                reqs,
                next: AtomicUsize::new(0),
            },
        );
    }

    /// Drops the cold queues (for warm-up and handler phases, which use the
    /// warm counterparts).
    pub fn without_cold(&self) -> Pools {
        Pools {
            warm: self.warm.clone(),
            cold: HashMap::new(),
        }
    }
}

impl Sources {
    /// The warm pools of a mix (cold kinds also get a warm pool, used in
    /// warm-up). `n` tokens or PATs per kind.
    pub async fn warm_pools(&self, mix: &Mix, n: usize) -> anyhow::Result<Pools> {
        let mut pools = Pools::default();
        let kinds: Vec<Kind> = mix.0.iter().map(|(k, _)| k.warm()).collect();
        if kinds.contains(&Kind::JwtWarm) {
            let toks = self.mint_jwts(n).await?;
            let reqs = toks
                .iter()
                .enumerate()
                .map(|(i, t)| Wire::encode(&check_request(Some(t), i)))
                .collect();
            pools.warm.insert(Kind::JwtWarm, reqs);
        }
        if kinds.contains(&Kind::PatWarm) {
            let toks = self.create_pats(n, "warm").await?;
            let reqs = toks
                .iter()
                .enumerate()
                .map(|(i, t)| Wire::encode(&check_request(Some(t), i)))
                .collect();
            pools.warm.insert(Kind::PatWarm, reqs);
        }
        if kinds.contains(&Kind::Deny) {
            pools
                .warm
                .insert(Kind::Deny, vec![Wire::encode(&check_request(None, 0))]);
        }
        Ok(pools)
    }

    /// Unique requests for `n` uses of a cold kind.
    pub async fn cold_requests(&self, kind: Kind, n: usize) -> anyhow::Result<Vec<Wire>> {
        let toks = match kind {
            Kind::JwtCold => self.mint_jwts(n).await?,
            Kind::PatCold => self.create_pats(n, "cold").await?,
            _ => bail!("{kind} is not a cold kind"),
        };
        Ok(toks
            .iter()
            .enumerate()
            .map(|(i, t)| Wire::encode(&check_request(Some(t), i)))
            .collect())
    }

    /// `n` distinct dev-issuer tokens, minted on every core.
    pub async fn mint_jwts(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let issuer = self.issuer.clone();
        tokio::task::spawn_blocking(move || mint_many(&issuer, n))
            .await
            .context("minting tokens")?
    }

    /// `n` PATs inserted straight into the store (bypassing the per-user
    /// limit: 50 per synthetic user). Returns the raw tokens.
    pub async fn create_pats(&self, n: usize, tag: &str) -> anyhow::Result<Vec<String>> {
        let Some(store) = &self.store else {
            bail!(
                "PAT kinds need the token store: pass --store-url or --config (or use the in-process server)"
            );
        };
        let run = Uuid::new_v4().simple().to_string();
        let made: Vec<anyhow::Result<String>> = futures::stream::iter(0..n)
            .map(|i| {
                // Stamped as it is made: the server's resync picks up PATs
                // created after its watermark (minus a small overlap), so
                // one timestamp for a batch that takes a minute to insert
                // would leave most of it unknown.
                let now = Utc::now();
                let raw = format::generate(&self.pat_prefix);
                let user = format!("bench-{tag}-{}-{}", &run[..8], i / 50);
                let t = NewToken {
                    id: Uuid::new_v4(),
                    user_id: user.clone(),
                    // The dev issuer the server trusts: a PAT whose owner's
                    // issuer is not configured is refused.
                    user_issuer: self.issuer.issuer().into(),
                    username: user,
                    name: format!("bench {tag} {i}"),
                    description: Some("created by portcullis bench".into()),
                    token_hash: format::hash(&raw),
                    display_hint: format::display_hint(&self.pat_prefix, &raw),
                    scopes: vec!["bench:read".into()],
                    created_at: now,
                    expires_at: now + TimeDelta::hours(2),
                    rotated_from: None,
                    kind: TokenKind::Opaque,
                    jti: None,
                    hash_version: Default::default(),
                };
                async move {
                    store.insert(t).await.context("inserting a bench PAT")?;
                    Ok(raw)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let made: Vec<String> = made.into_iter().collect::<anyhow::Result<_>>()?;
        // They went straight into the store: the server adds them to its
        // known hashes at its next resync (`revocation.resync_interval`,
        // 5 s); until then it looks unknown PATs up within a small budget
        // and denies the rest as unknown, which no PAT kind means to measure.
        eprintln!("  {n} PATs created; waiting 6 s for the server's resync to learn of them");
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        Ok(made)
    }
}

/// Mints `n` tokens with distinct subjects on all cores.
fn mint_many(issuer: &DevIssuer, n: usize) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let chunk = n.div_ceil(threads).max(1);
    let run = Uuid::new_v4().simple().to_string();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|from| {
                let run = &run;
                s.spawn(move || {
                    (from..(from + chunk).min(n))
                        .map(|i| {
                            issuer.mint(&DevTokenSpec {
                                sub: format!("bench-{}-{i}", &run[..8]),
                                username: Some(format!("bench{i}")),
                                email: Some(format!("bench{i}@example.org")),
                                scopes: vec!["bench:read".into(), "bench:write".into()],
                                expires_in: Duration::from_secs(7200),
                                client: "portcullis-bench".into(),
                            })
                        })
                        .collect::<anyhow::Result<Vec<String>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("minting thread panicked"))??,
            );
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_cycles_in_proportion() {
        let m: Mix = "jwt-warm=70,pat-warm=20,deny=10".parse().unwrap();
        let c = m.cycle();
        assert_eq!(c.len(), 10);
        assert_eq!(c.iter().filter(|k| **k == Kind::JwtWarm).count(), 7);
        assert_eq!(
            m.count_in(Kind::Deny, 25),
            2 + c[..5].iter().filter(|k| **k == Kind::Deny).count()
        );
        assert!("jwt-warm=x".parse::<Mix>().is_err());
        assert!("nope=1".parse::<Mix>().is_err());
        assert!("deny=0".parse::<Mix>().is_err());
        assert_eq!("jwt-cold".parse::<Mix>().unwrap().to_string(), "jwt-cold=1");
    }
}
