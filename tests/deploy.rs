//! Checks on everything under deploy/: each YAML/JSON file parses, and the
//! Envoy configs fail closed, normalise paths and validate with a real
//! Envoy (the k8s copy equals the shipped file; the Helm chart's render
//! with either gRPC transport validates too). The Kubernetes manifests,
//! the Helm chart, the realm and the Dockerfile: `tests/deploy_k8s.rs`.
//!
//! `envoy --mode validate` needs the binary from `scripts/install-envoy` (or
//! `$PORTCULLIS_ENVOY`): without it the validate test fails saying so.

use portcullis_testkit::deploy::{
    assert_envoy_properties, deploy_dir, files_under, helm_template, is_helm_template, k8s_objects,
    object, s, swap_pipe_cluster, yaml, yaml_docs,
};
use portcullis_testkit::envoy::{self, render};
use serde_json::Value;

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut files = Vec::new();
    files_under(&deploy_dir(), &mut files);
    files.sort();
    let mut checked = 0;
    for f in &files {
        let name = f.display().to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let text = std::fs::read_to_string(f).unwrap();
        match ext {
            "yaml" | "yml" if is_helm_template(f) => continue,
            "yaml" | "yml" => {
                let docs = yaml_docs(&text, &name);
                assert!(!docs.is_empty(), "{name}: no documents");
            }
            "json" => {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{name}: bad JSON: {e}"));
            }
            _ => continue,
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} files checked: {files:?}");
}

#[test]
fn shipped_envoy_fails_closed_and_normalises() {
    let root = yaml(&envoy::shipped(), "deploy/envoy.yaml");
    assert_envoy_properties(&root, "deploy/envoy.yaml");
}

#[test]
fn envoy_validates_every_config_we_ship() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped file itself, in place: it must run as it is.
    match envoy::validate(&envoy::shipped_path()) {
        Ok(out) => eprintln!("deploy/envoy.yaml: {}", out.trim()),
        Err(out) => panic!("envoy rejects deploy/envoy.yaml as shipped:\n{out}"),
    }
    let mut configs = Vec::new();
    configs.push((
        "deploy/envoy.yaml (e2e-style)",
        render(
            &envoy::shipped(),
            &[
                ("LISTEN_HOST", "127.0.0.1"),
                ("LISTEN_PORT", "18080"),
                ("EXT_AUTHZ_TIMEOUT", "5s"),
            ],
        ),
    ));
    let cm = k8s_objects();
    let cm = object(&cm, "ConfigMap");
    configs.push((
        "deploy/k8s/configmap.yaml envoy.yaml",
        s(cm, "/data/envoy.yaml").to_owned(),
    ));
    // The Helm chart's, with either gRPC transport.
    for (what, set) in [
        (
            "helm envoy.yaml (grpcTransport: unix)",
            "portcullis.grpcTransport=unix",
        ),
        (
            "helm envoy.yaml (grpcTransport: tcp)",
            "portcullis.grpcTransport=tcp",
        ),
    ] {
        let out = helm_template(&[set]).unwrap_or_else(|e| panic!("{what}: {e}"));
        let cm = yaml_docs(&out, what);
        configs.push((
            what,
            s(object(&cm, "ConfigMap"), "/data/envoy.yaml").to_owned(),
        ));
    }
    for (i, (what, text)) in configs.iter().enumerate() {
        let p = dir.path().join(format!("envoy-{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        match envoy::validate(&p) {
            Ok(out) => eprintln!("{what}: {}", out.trim()),
            Err(out) => panic!("envoy rejects {what}:\n{out}"),
        }
    }
}

#[test]
fn k8s_envoy_config_is_the_shipped_file() {
    let objs = k8s_objects();
    let cm = object(&objs, "ConfigMap");
    let k8s = yaml(s(cm, "/data/envoy.yaml"), "ConfigMap envoy.yaml");
    let want = yaml(&envoy::shipped(), "deploy/envoy.yaml");
    assert_envoy_properties(&k8s, "k8s ConfigMap");
    // One difference is intended: in the pod, portcullis listens on a Unix
    // socket (a STATIC cluster with a pipe address); the shipped file keeps
    // 127.0.0.1:9191 (its tagged values are what the tests render).
    let mut k8s = k8s;
    swap_pipe_cluster(&mut k8s, &want, "k8s");
    assert_eq!(
        k8s, want,
        "deploy/k8s/configmap.yaml envoy.yaml drifted from deploy/envoy.yaml (beyond the socket)"
    );
}
