//! `deploy/envoy.yaml` runs as shipped: no placeholders, each `# render:
//! NAME` tagged value is its documented default, and rendering (the
//! testkit's and `scripts/render-envoy`) changes only tagged values.
//! (`tests/deploy.rs` checks its properties and runs `envoy --mode
//! validate` on it in place.)

use portcullis_testkit::envoy::{self, DEFAULTS, render, repo_root};

/// `deploy/envoy.yaml` runs as shipped: no `${...}` placeholder anywhere,
/// and each tagged value (`# render: NAME`) is the default its header
/// documents, exactly once per name.
#[test]
fn shipped_envoy_config_has_no_placeholders_and_documents_its_defaults() {
    let t = envoy::shipped();
    assert!(
        !t.contains("${"),
        "deploy/envoy.yaml must run as it is: no ${{...}} placeholders"
    );
    let tags = envoy::tagged(&t);
    let mut names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    let mut known: Vec<&str> = DEFAULTS.iter().map(|(k, _)| *k).collect();
    known.sort();
    assert_eq!(names, known, "tags in deploy/envoy.yaml vs DEFAULTS");
    for tag in &tags {
        let (k, v) = DEFAULTS.iter().find(|(k, _)| *k == tag.name).unwrap();
        assert_eq!(
            tag.value, *v,
            "deploy/envoy.yaml line {}: {k} ships as {} but its documented default is {v}",
            tag.line, tag.value
        );
        let documented = t.lines().any(|l| {
            let w: Vec<&str> = l.trim_start_matches('#').split_whitespace().collect();
            w.len() >= 2 && w[0] == *k && w[1] == *v
        });
        assert!(documented, "{k}'s default {v} is not in the header table");
    }
    for (k, v) in [
        ("LISTEN_PORT", "10000"),
        ("ADMIN_PORT", "9901"),
        ("PORTCULLIS_GRPC_PORT", "9191"),
        ("APP_PORT", "8080"),
    ] {
        assert!(DEFAULTS.contains(&(k, v)), "{k} default must be {v}");
    }
}

/// Rendering changes the tagged values and nothing else.
#[test]
fn rendering_changes_only_the_tagged_values() {
    let t = envoy::shipped();
    assert_eq!(
        render(&t, &[]),
        t,
        "rendering with no values is the identity"
    );
    let r = render(
        &t,
        &[("LISTEN_PORT", "12345"), ("APP_HOST", "app.internal")],
    );
    let changed: Vec<(&str, &str)> = t.lines().zip(r.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(
        changed,
        [
            (
                "          port_value: 10000 # render: LISTEN_PORT",
                "          port_value: 12345 # render: LISTEN_PORT"
            ),
            (
                "                      address: 127.0.0.1 # render: APP_HOST",
                "                      address: app.internal # render: APP_HOST"
            ),
        ]
    );
    let result = std::panic::catch_unwind(|| render(&t, &[("NO_SUCH_TAG", "1")]));
    assert!(result.is_err(), "a value for a missing tag must fail");
}

#[test]
fn render_script_matches_the_test_renderer() {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/render-envoy"))
        .env("LISTEN_PORT", "12345")
        .env("APP_HOST", "app.internal")
        .output()
        .expect("run scripts/render-envoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    let ours = render(
        &envoy::shipped(),
        &[("LISTEN_PORT", "12345"), ("APP_HOST", "app.internal")],
    );
    assert_eq!(script.trim_end(), ours.trim_end());
}
