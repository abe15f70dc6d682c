//! Every portcullis YAML example the project shows loads, so the docs
//! cannot drift from the code: each ```yaml block of the Markdown docs
//! (README.md first), the config in `deploy/k8s/configmap.yaml`, the one
//! the Helm chart renders from its values, and the one `scripts/demo`
//! writes. Each is parsed strictly (a repeated key is an error; the config
//! loader would silently keep the last one) and then run through
//! `portcullis config check`, with the secrets the Deployment supplies as
//! environment variables. (`tests/deploy.rs` runs `envoy --mode validate`
//! on the Envoy configs.) A block fenced as ```yaml envoy is an Envoy
//! snippet, not a portcullis config, and is skipped here.
//!
//! Rendering the chart needs `helm` (`scripts/install-helm`, or
//! `$PORTCULLIS_HELM`).

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_testkit::envoy::repo_root;
use serde::Deserialize;

/// Secrets the Deployment hands portcullis from its Secret.
const SECRET_ENV: [(&str, &str); 3] = [
    (
        "PORTCULLIS__STORE__URL",
        "postgres://portcullis:pw@127.0.0.1:5432/portcullis",
    ),
    ("PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET", "s3cret"),
    // The webhook key README's `notify.webhooks` example names.
    (
        "PORTCULLIS_WEBHOOK_SECRET",
        "an-example-webhook-key-0123456789",
    ),
];

/// One example: where it comes from, its text, and whether it is meant for
/// `--dev` (the demo).
struct Example {
    what: String,
    text: String,
    dev: bool,
}

/// The ```yaml blocks of a Markdown file, with the line of their opening
/// fence (from 1).
fn yaml_blocks(md: &str) -> Vec<(usize, String)> {
    enum State {
        Outside,
        Yaml(usize, String),
        Other,
    }
    let mut out = Vec::new();
    let mut state = State::Outside;
    for (i, line) in md.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```").map(str::trim);
        state = match (state, fence) {
            (State::Outside, Some("yaml" | "yml")) => State::Yaml(i + 1, String::new()),
            (State::Outside, Some(_)) => State::Other,
            (State::Yaml(n, text), Some(_)) => {
                out.push((n, text));
                State::Outside
            }
            (State::Yaml(n, mut text), None) => {
                text.push_str(line);
                text.push('\n');
                State::Yaml(n, text)
            }
            (State::Other, Some(_)) => State::Outside,
            (s, None) => s,
        };
    }
    assert!(
        matches!(state, State::Outside),
        "unclosed ``` block in Markdown"
    );
    out
}

/// Markdown files with examples: the repository root, deploy/ and benches/.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("deploy"), root.join("benches")] {
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() && d != root {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "md") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    files
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn configmap_config(objs: &[serde_json::Value], what: &str) -> String {
    let cms: Vec<_> = objs.iter().filter(|o| o["kind"] == "ConfigMap").collect();
    assert_eq!(cms.len(), 1, "{what}: one ConfigMap");
    cms[0]["data"]["config.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap lacks config.yaml"))
        .to_owned()
}

fn yaml_docs(text: &str, what: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| {
            serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: bad YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The config the chart renders, with `--set` values.
fn helm_config(set: &[&str]) -> String {
    let helm = std::env::var("PORTCULLIS_HELM").unwrap_or_else(|_| "helm".into());
    let out = Command::new(&helm)
        .args(["template", "t", "--kube-version", "1.31.0"])
        .args(set.iter().flat_map(|s| ["--set", s]))
        .arg(repo_root().join("deploy/helm/portcullis"))
        .output()
        .unwrap_or_else(|e| {
            panic!("helm {helm:?} not found ({e}); run scripts/install-helm, set PORTCULLIS_HELM")
        });
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = yaml_docs(&String::from_utf8_lossy(&out.stdout), "helm template");
    configmap_config(&objs, "helm template")
}

/// The heredoc `scripts/demo` writes as portcullis.yaml.
fn demo_config() -> String {
    let demo = std::fs::read_to_string(repo_root().join("scripts/demo")).unwrap();
    let start = demo
        .find("portcullis.yaml\" <<'YAML'\n")
        .expect("scripts/demo writes portcullis.yaml from a 'YAML' heredoc");
    let body = &demo[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let end = body.find("\nYAML\n").expect("heredoc end");
    body[..end + 1].to_owned()
}

fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    let mut readme = 0;
    for md in markdown_files() {
        let text = std::fs::read_to_string(&md).unwrap();
        for (line, block) in yaml_blocks(&text) {
            if md.ends_with("README.md") && md.parent() == Some(repo_root().as_path()) {
                readme += 1;
            }
            out.push(Example {
                what: format!("{}:{line}", rel(&md)),
                text: block,
                dev: false,
            });
        }
    }
    assert!(
        readme >= 2,
        "README.md: expected its configuration and policy examples, found {readme} yaml blocks"
    );
    let k8s = std::fs::read_to_string(repo_root().join("deploy/k8s/configmap.yaml")).unwrap();
    out.push(Example {
        what: "deploy/k8s/configmap.yaml config.yaml".into(),
        text: configmap_config(&yaml_docs(&k8s, "configmap.yaml"), "deploy/k8s"),
        dev: false,
    });
    out.push(Example {
        what: "deploy/helm/portcullis (helm template) config.yaml".into(),
        text: helm_config(&[]),
        dev: false,
    });
    out.push(Example {
        what: "deploy/helm/portcullis with portcullis.resourceMetadata set".into(),
        text: helm_config(&[
            "portcullis.resourceMetadata.resource=https://app.example.org",
            "portcullis.resourceMetadata.resource_name=Uploads",
        ]),
        dev: false,
    });
    out.push(Example {
        what: "scripts/demo portcullis.yaml".into(),
        text: demo_config(),
        dev: true,
    });
    out
}

/// Parses YAML refusing repeated keys (unlike the config loader).
fn strict(text: &str) -> Result<(), String> {
    for doc in serde_norway::Deserializer::from_str(text) {
        serde_norway::Value::deserialize(doc).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn config_check(text: &str, dev: bool) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["config", "check", "--config"]).arg(&cfg);
    if dev {
        cmd.arg("--dev").arg("--data-dir").arg(dir.path());
    }
    let out = cmd.envs(SECRET_ENV).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_yaml_example_passes_config_check() {
    let examples = examples();
    let mut failures = Vec::new();
    for ex in &examples {
        if let Err(e) = strict(&ex.text) {
            failures.push(format!("{}: not strict YAML: {e}", ex.what));
            continue;
        }
        let (code, out) = config_check(&ex.text, ex.dev);
        if code != 0 {
            failures.push(format!("{}: config check exited {code}:\n{out}", ex.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "checked: {}",
        examples
            .iter()
            .map(|e| e.what.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The chart's `portcullis.resourceMetadata` becomes
/// `api.resource_metadata`, next to whatever `api` keys the config has.
#[test]
fn helm_resource_metadata_value_reaches_the_config() {
    let off = yaml_docs(&helm_config(&[]), "helm")[0].clone();
    assert!(off["api"]["resource_metadata"].is_null(), "{off}");
    let on = yaml_docs(
        &helm_config(&[
            "portcullis.resourceMetadata.resource=https://app.example.org",
            "portcullis.config.api.ui=false",
        ]),
        "helm",
    )[0]
    .clone();
    assert_eq!(
        on["api"]["resource_metadata"]["resource"], "https://app.example.org",
        "{on}"
    );
    assert_eq!(on["api"]["ui"], false, "{on}");
}

/// The two checks each catch what they are for.
#[test]
fn the_checks_refuse_repeated_keys_and_unknown_keys() {
    let repeated = "pat:\n  prefix: pat_\n  exchange: {}\n  exchange: {}\n";
    assert!(strict(repeated).is_err(), "a repeated key must be refused");
    assert!(strict("pat:\n  prefix: pat_\n").is_ok());
    let (code, out) = config_check("pat:\n  prefx: pat_\n", false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("prefx"), "{out}");

    let md = "text\n```sh\necho\n```\n```yaml\na: 1\n```\n```yml\nb: 2\n```\n";
    let blocks = yaml_blocks(md);
    assert_eq!(
        blocks,
        [(5, "a: 1\n".to_owned()), (8, "b: 2\n".to_owned())],
        "{blocks:?}"
    );
}
