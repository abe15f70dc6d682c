//! `portcullis-bench` end to end at a low rate for about a second: the CLI,
//! the in-process server, every workload kind, both no-op baselines, the
//! handler phase, and the JSON and SVG outputs. No timing assertions.

use std::process::Command;

#[test]
fn bench_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("bench.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis-bench"))
        .args([
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--tokens",
            "5",
            "--handler-calls",
            "500",
            "--mix",
            "jwt-warm=4,jwt-cold=2,pat-warm=2,pat-cold=1,deny=1",
            "--baseline",
            "noop,noop-shaped",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("run portcullis-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed\n{stdout}\n{stderr}");
    for needle in [
        "## Latency",
        "| jwt-cold |",
        "| pat-cold |",
        "portcullis vs no-op (noop)",
        "portcullis vs no-op (noop-shaped)",
        "## Targets",
    ] {
        assert!(
            stdout.contains(needle),
            "report lacks {needle:?}:\n{stdout}"
        );
    }

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(
        phases.len(),
        4,
        "handler, portcullis, noop and noop-shaped phases: {report:#}"
    );
    for p in phases {
        assert_eq!(
            p["errors"],
            serde_json::json!({}),
            "no request may fail: {p:#}"
        );
        assert!(p["ok"].as_u64().unwrap() > 0, "{p:#}");
    }
    let load = &phases[1];
    assert_eq!(load["server"], "portcullis");
    assert_eq!(load["scheduled"], 200);
    let kinds: Vec<&str> = load["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "all", "jwt-warm", "jwt-cold", "pat-warm", "pat-cold", "deny"
        ]
    );
    assert_eq!(report["targets"].as_array().unwrap().len(), 5);

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("no-op Check server"),
        "{svg:.200}"
    );
}

/// The saturation search in rounds: each server searched in every round,
/// the best kept, every round's figure and ratio reported.
#[test]
fn find_max_in_rounds_reports_each_round() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis-bench"))
        .args([
            "--rate",
            "500",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--tokens",
            "5",
            "--handler-calls",
            "0",
            "--mix",
            "jwt-warm=100",
            "--baseline",
            "noop",
            "--find-max",
            "--find-max-rounds",
            "2",
            "--step-duration",
            "200ms",
            "--search-precision",
            "0.5",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run portcullis-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed\n{stdout}\n{stderr}");
    assert!(stdout.contains("Best of 2 rounds"), "{stdout}");
    assert!(stdout.contains("portcullis / noop per round: "), "{stdout}");
    assert_eq!(stderr.matches("find-max round ").count(), 2, "{stderr}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let sat = &report["saturation_rps"];
    let ours = sat["portcullis"].as_f64().unwrap();
    let each: Vec<f64> = stdout
        .lines()
        .find(|l| l.starts_with("| portcullis |"))
        .unwrap()
        .split('|')
        .nth(3)
        .unwrap()
        .split(',')
        .map(|r| r.trim().parse().unwrap())
        .collect();
    assert_eq!(each.len(), 2, "{stdout}");
    assert_eq!(
        ours,
        each.iter().copied().fold(0.0, f64::max),
        "the best round is kept"
    );
    assert_eq!(report["settings"]["find_max_rounds"], 2);
}
