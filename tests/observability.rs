//! The real binary: metrics exposition, graceful SIGTERM (exit 0), and a
//! full run's logs never containing a raw token, PAT or secret.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis_testkit::check::{Req, allowed, check, denied};
use portcullis_testkit::wait::reap;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

#[tokio::test]
async fn item3_logs_never_contain_credentials_even_in_query_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .env(
            "PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET",
            "s3cr3t-exchange-value",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let (grpc, http) = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its addresses");
        lines.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "portcullis serving" {
            break (
                v["grpc"].as_str().unwrap().parse().unwrap(),
                v["http"].as_str().unwrap().to_string(),
            );
        }
    };

    let jwt = DevIssuer::load_existing(dir.path(), None)
        .unwrap()
        .mint(&DevTokenSpec {
            sub: "alice".into(),
            username: None,
            email: None,
            scopes: vec!["a:read".into()],
            expires_in: Duration::from_secs(600),
            client: "web".into(),
        })
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--dev",
            "--user",
            "alice",
            "--username",
            "alice",
            "--name",
            "ci",
            "--scopes",
            "a:read",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pat = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(pat.starts_with("pat_"));
    let bad_pat = format!("{}x", &pat[..pat.len() - 1]);

    allowed(
        &check(
            grpc,
            &Req::get("/a")
                .bearer(&jwt)
                .header("cookie", "session=cookie-secret-value"),
        )
        .await,
    );
    allowed(&check(grpc, &Req::get("/a").bearer(&pat)).await);
    denied(&check(grpc, &Req::get("/a").bearer(&bad_pat)).await);
    denied(&check(grpc, &Req::get("/a").bearer(&format!("{jwt}x"))).await);
    denied(&check(grpc, &Req::get("/a").bearer("not-a-token")).await);
    // A token in the query string (`?access_token=`, as browsers do
    // for WebSockets), a client-chosen request ID and Host never reach logs.
    denied(
        &check(
            grpc,
            &Req::get("/a?access_token=query-secret-value&x=1")
                .host("host-secret-value.example")
                .header("x-request-id", "request-id-secret-value"),
        )
        .await,
    );
    denied(
        &check(
            grpc,
            &Req::get(&format!("/a?access_token={pat}")).bearer("not-a-token"),
        )
        .await,
    );
    // Review: `;` path parameters carry session IDs (`;jsessionid=`, the
    // servlet session cookie in the URL) and are refused (logged) by
    // default (`policy.matrix_params: reject`).
    for path in [
        "/a;jsessionid=matrix-secret-value/b",
        "/a/b;access_token=matrix2-secret-value",
        "/a%3Bjsessionid=matrix3-secret-value/b",
    ] {
        denied(&check(grpc, &Req::get(path).bearer(&jwt)).await);
    }
    let r = reqwest::Client::new()
        .get(format!(
            "http://{http}/api/v1/tokens?access_token=http-query-secret-value"
        ))
        .header("authorization", "Bearer not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "portcullis_decisions_total{result=\"allow\",method=\"GET\",route=\"(default)\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_decisions_total{result=\"unauthenticated\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_check_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_cache_lookups_total{cache=\"pat\",outcome=\"miss\"}"),
        "{metrics}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = reap(&mut child, Duration::from_secs(20))
        .unwrap_or_else(|killed| panic!("no exit within the shutdown deadline ({killed})"));
    assert!(code.success(), "SIGTERM must exit 0, got {code:?}");
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(l);
    }
    let all = lines.join("\n");
    assert!(
        all.contains("\"deny\"") || all.contains("deny"),
        "denials are logged"
    );
    let jwt_sig = jwt.rsplit('.').next().unwrap();
    for secret in [
        jwt.as_str(),
        jwt_sig,
        pat.as_str(),
        bad_pat.as_str(),
        &pat[4..20],
        "cookie-secret-value",
        "s3cr3t-exchange-value",
        "query-secret-value",
        "host-secret-value",
        "request-id-secret-value",
        "http-query-secret-value",
        "matrix-secret-value",
        "matrix2-secret-value",
        "matrix3-secret-value",
    ] {
        assert!(!all.contains(secret), "logs leak {secret:?}");
    }
}
