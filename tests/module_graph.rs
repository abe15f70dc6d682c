//! The top-level modules of `src/` form no import cycle: each subsystem
//! owns its config section and types, and `config` only gathers them.
//! Reads the source and follows every `crate::<module>` path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut tops = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let name = name.trim_end_matches(".rs").to_owned();
        if name != "lib" && name != "main" {
            tops.insert(name);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for top in &tops {
        let mut files = Vec::new();
        collect(&src.join(top), &mut files);
        collect(&src.join(format!("{top}.rs")), &mut files);
        let out = edges.entry(top.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // A unit-test module may reach anywhere; it is not a layer.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for used in referenced(text) {
                if &used != top && tops.contains(&used) {
                    out.insert(used);
                }
            }
        }
    }
    edges
}

fn collect(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            collect(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") && p.exists() {
        out.push(p.to_owned());
    }
}

/// Names after `crate::`, including inside `use crate::{a, b::c}`.
fn referenced(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                out.push(ident(part.trim()));
            }
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// A cycle in `g`, as its path, if there is one (depth-first search; a
/// back edge closes a cycle).
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| p == n) {
            return Some(format!("{} -> {n}", path[i..].join(" -> ")));
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.contains_key("authz") && g.contains_key("config"), "{g:?}");
    assert_eq!(
        find_cycle(&g),
        None,
        "import cycle between top-level modules"
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    assert_eq!(
        referenced("use crate::{a, b::c};\nx(crate::d::e)"),
        ["a", "b", "d"]
    );
    let edge = |a: &str, b: &[&str]| (a.to_owned(), b.iter().map(|s| s.to_string()).collect());
    let g: BTreeMap<String, BTreeSet<String>> = [
        edge("config", &["tokens"]),
        edge("tokens", &["authz"]),
        edge("authz", &["config"]),
    ]
    .into();
    assert_eq!(
        find_cycle(&g).as_deref(),
        Some("authz -> config -> tokens -> authz")
    );
}
