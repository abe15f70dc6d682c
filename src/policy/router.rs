//! Compiled per-host-tier lookup structures (no regex, nothing built per request).

use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::Route;
use super::path::TemplateSeg;

/// Fast unkeyed string hasher (FxHash-style). HashDoS does not apply: the
/// tables are built from config only, requests merely probe them.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Route index into `Policy::routes`.
pub(crate) type Idx = u32;

/// The path matcher of one route, already validated.
#[derive(Debug, Clone)]
pub(crate) enum PathKind {
    Exact(String),
    Prefix(String),
    Template(Vec<TemplateSeg>),
}

impl PathKind {
    /// For `policy.case_insensitive_paths`: literal parts lower-cased.
    pub(crate) fn make_ascii_lowercase(&mut self) {
        match self {
            PathKind::Exact(p) | PathKind::Prefix(p) => p.make_ascii_lowercase(),
            PathKind::Template(segs) => {
                for seg in segs {
                    if let TemplateSeg::Literal(l) = seg {
                        l.make_ascii_lowercase();
                    }
                }
            }
        }
    }
}

/// Segment trie for templates. Each node is reached by exactly one sequence of
/// request segments, so a lookup visits every node at most once even with
/// backtracking (worst case linear in the trie size, normally one branch).
#[derive(Default, Debug)]
struct Node {
    /// Literal children, sorted by segment for binary search.
    literal: Vec<(Box<str>, Node)>,
    /// `{param}` child.
    param: Option<Box<Node>>,
    /// Routes whose template ends here, in config order.
    end: Vec<Idx>,
    /// Routes with a `{*catch_all}` here, in config order.
    catch_all: Vec<Idx>,
}

impl Node {
    fn insert(&mut self, segs: &[TemplateSeg], idx: Idx) {
        let Some((first, rest)) = segs.split_first() else {
            self.end.push(idx);
            return;
        };
        match first {
            TemplateSeg::CatchAll => self.catch_all.push(idx),
            TemplateSeg::Param => self.param.get_or_insert_default().insert(rest, idx),
            TemplateSeg::Literal(s) => {
                let k = match self
                    .literal
                    .binary_search_by(|(l, _)| (**l).cmp(s.as_str()))
                {
                    Ok(k) => k,
                    Err(k) => {
                        self.literal.insert(k, (s.as_str().into(), Node::default()));
                        k
                    }
                };
                self.literal[k].1.insert(rest, idx);
            }
        }
    }

    /// `rest` is the remaining path without its leading `/` ("" at the end).
    /// Priority per segment: literal > param > catch-all.
    fn find(&self, rest: &str, ok: &impl Fn(Idx) -> bool) -> Option<Idx> {
        if rest.is_empty() {
            if let Some(i) = self.end.iter().copied().find(|i| ok(*i)) {
                return Some(i);
            }
        } else {
            let (seg, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if let Ok(k) = self.literal.binary_search_by(|(l, _)| (**l).cmp(seg))
                && let Some(i) = self.literal[k].1.find(tail, ok)
            {
                return Some(i);
            }
            if let Some(i) = self.param.as_ref().and_then(|p| p.find(tail, ok)) {
                return Some(i);
            }
        }
        self.catch_all.iter().copied().find(|i| ok(*i))
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.param.is_none()
            && self.end.is_empty()
            && self.catch_all.is_empty()
    }
}

/// All routes that apply to one host tier (one exact host, one wildcard
/// suffix, or "any host").
#[derive(Default, Debug)]
pub(crate) struct Tier {
    exact: HashMap<Box<str>, Vec<Idx>>,
    prefix: HashMap<Box<str>, Vec<Idx>>,
    templates: Node,
}

impl Tier {
    pub(crate) fn add(&mut self, idx: Idx, path: &PathKind) {
        match path {
            PathKind::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(idx),
            PathKind::Prefix(p) => self.prefix.entry(p.as_str().into()).or_default().push(idx),
            PathKind::Template(segs) => self.templates.insert(segs, idx),
        }
    }

    /// Best route in this tier for an already normalised path.
    pub(crate) fn lookup(&self, routes: &[Route], method: &str, path: &str) -> Option<Idx> {
        let ok = |i: Idx| routes[i as usize].accepts_method(method);
        let first_ok = |v: &Vec<Idx>| v.iter().copied().find(|i| ok(*i));
        if let Some(i) = self.exact.get(path).and_then(first_ok) {
            return Some(i);
        }
        if !self.templates.is_empty()
            && let Some(i) = self.templates.find(&path[1..], &ok)
        {
            return Some(i);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Candidate prefixes are the segment boundaries of `path`, longest first.
        let mut end = if path == "/" { 0 } else { path.len() };
        loop {
            let cand = if end == 0 { "/" } else { &path[..end] };
            if let Some(i) = self.prefix.get(cand).and_then(first_ok) {
                return Some(i);
            }
            if end == 0 {
                return None;
            }
            end = path[..end].rfind('/').unwrap_or(0);
        }
    }
}

/// Host tiers: exact hosts, wildcard suffixes, any host.
#[derive(Default, Debug)]
pub(crate) struct Hosts {
    pub(crate) exact: HashMap<Box<str>, Tier>,
    /// Keyed by the suffix after `*.`.
    pub(crate) wildcard: HashMap<Box<str>, Tier>,
    pub(crate) any: Tier,
}

impl Hosts {
    /// Tiers applying to `host` (normalised), most specific first.
    pub(crate) fn tiers<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Tier> + 'a {
        let exact = self.exact.get(host);
        let wild = (!self.wildcard.is_empty())
            .then(|| {
                // Suffixes after each dot, longest first; the label before must be non-empty.
                host.match_indices('.')
                    .filter(|(i, _)| *i > 0)
                    .filter_map(|(i, _)| self.wildcard.get(&host[i + 1..]))
            })
            .into_iter()
            .flatten();
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(&self.any))
    }
}
