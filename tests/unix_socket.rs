//! `listen.grpc: unix:/path`: portcullis serves Check on a Unix socket, and
//! a real Envoy (deploy/envoy.yaml, its portcullis cluster switched to a
//! `pipe` address, as deploy/ documents) reaches it: a token is allowed
//! with its identity headers, no token is a 401 from portcullis. The socket
//! file is 0660 and gone after shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use portcullis::config::Config;
use portcullis::dev::{DevIssuer, DevTokenSpec};
use portcullis::server::{ServeOptions, start};
use portcullis_testkit::echo::Echo;
use portcullis_testkit::envoy::Envoy;

/// The rendered shipped config with the `portcullis` cluster pointed at
/// `sock` through a `pipe` address (a STATIC cluster: no DNS for a path).
fn to_pipe(config: String, sock: &Path) -> String {
    let lines: Vec<&str> = config.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut in_cluster = false;
    let mut skip_port = false;
    for line in &lines {
        if skip_port {
            skip_port = false;
            assert!(line.contains("# render: PORTCULLIS_GRPC_PORT"), "{line}");
            continue;
        }
        if line.trim() == "- name: portcullis" {
            in_cluster = true;
        }
        if in_cluster && line.trim() == "type: STRICT_DNS" {
            out.push(line.replace("STRICT_DNS", "STATIC"));
            in_cluster = false;
            continue;
        }
        if line.contains("# render: PORTCULLIS_GRPC_HOST") {
            let prev = out.pop().expect("socket_address line");
            assert_eq!(prev.trim(), "socket_address:", "{prev}");
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push(prev.replace("socket_address:", "pipe:"));
            out.push(format!("{indent}path: {}", sock.display()));
            skip_port = true;
            continue;
        }
        out.push((*line).to_owned());
    }
    let edited = out.join("\n");
    assert!(
        edited.contains("pipe:"),
        "the portcullis address was not found"
    );
    edited
}

#[tokio::test]
async fn envoy_reaches_portcullis_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run").join("grpc.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let mut cfg = Config::default();
    cfg.listen.grpc = format!("unix:{}", sock.display()).parse().unwrap();
    cfg.listen.http = "127.0.0.1:0".parse().unwrap();
    cfg.data_dir = dir.path().join("data");
    cfg.apply_dev_defaults(false);
    let running = start(ServeOptions {
        config: cfg,
        dev: true,
    })
    .await
    .expect("portcullis starts on a socket");
    assert_eq!(running.grpc_socket.as_deref(), Some(sock.as_path()));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    let echo = Echo::start().await;
    let envoy = Envoy::start_edited(
        running.grpc_addr,
        echo.addr,
        &[("EXT_AUTHZ_TIMEOUT", "5s")],
        &|c| to_pipe(c, &sock),
    )
    .await;
    let token = DevIssuer::load_existing(&dir.path().join("data"), None)
        .expect("dev issuer")
        .mint(&DevTokenSpec {
            sub: "sock-user".into(),
            username: Some("sock-user".into()),
            email: None,
            scopes: vec!["a:read".into()],
            expires_in: Duration::from_secs(600),
            client: "cli".into(),
        })
        .unwrap();

    let r = envoy
        .get("/things", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(r.status, 200, "{}", envoy.log());
    let seen = echo.seen();
    let last = seen.last().expect("the upstream saw the request");
    assert_eq!(last.header("x-auth-subject"), Some("sock-user"));

    let r = envoy.get("/things", &[]).await;
    assert_eq!(r.status, 401, "{}", envoy.log());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        echo.seen().len(),
        1,
        "the denied request never reached the app"
    );

    running.shutdown(Duration::from_secs(5)).await;
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}
