//! A real Envoy for end-to-end tests: runs a copy of the shipped
//! `deploy/envoy.yaml` with only the `# render: NAME` tagged values (ports,
//! hosts, the ext_authz timeout) changed, starts the binary installed by
//! `scripts/install-envoy` (or `$PORTCULLIS_ENVOY`), waits until its admin
//! `/ready` says LIVE, and kills it on drop. Also a minimal raw HTTP/1.1
//! client, because a URL library would normalise the very paths the tests
//! want to send verbatim.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wait::poll_until;

/// The tagged values of `deploy/envoy.yaml` (`# render: NAME`) and the
/// defaults it ships with.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("LISTEN_HOST", "0.0.0.0"),
    ("LISTEN_PORT", "10000"),
    ("ADMIN_PORT", "9901"),
    ("PORTCULLIS_GRPC_HOST", "127.0.0.1"),
    ("PORTCULLIS_GRPC_PORT", "9191"),
    ("PORTCULLIS_HTTP_HOST", "127.0.0.1"),
    ("PORTCULLIS_HTTP_PORT", "9192"),
    ("APP_HOST", "127.0.0.1"),
    ("APP_PORT", "8080"),
    ("EXT_AUTHZ_TIMEOUT", "0.25s"),
];

/// The marker that tags a renderable value.
pub const TAG: &str = "# render: ";

/// The repository root (this crate lives in `tests/testkit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/testkit sits two levels below the repository root")
        .to_path_buf()
}

/// Path of the shipped Envoy config.
pub fn shipped_path() -> PathBuf {
    repo_root().join("deploy/envoy.yaml")
}

/// `deploy/envoy.yaml` as shipped (runs as it is).
pub fn shipped() -> String {
    let p = shipped_path();
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// One tagged line: `<key>: <value> # render: NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// Line number, from 1.
    pub line: usize,
    pub name: String,
    pub value: String,
}

/// Splits a tagged line into (text before the value, value, tag comment
/// with its leading spaces); `None` for a line without a tag, or a comment.
fn split_tagged(line: &str) -> Option<(&str, &str, &str)> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let tag_at = line.find(TAG)?;
    let head = line[..tag_at].trim_end();
    let colon = head.find(": ")?;
    let value = head[colon + 1..].trim_start();
    let value_at = head.len() - value.len();
    Some((&line[..value_at], value, &line[head.len()..]))
}

/// Every tagged value of a config, in file order.
pub fn tagged(config: &str) -> Vec<Tagged> {
    config
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (_, value, tag) = split_tagged(l)?;
            Some(Tagged {
                line: i + 1,
                name: tag.trim_start()[TAG.len()..].trim().to_owned(),
                value: value.to_owned(),
            })
        })
        .collect()
}

/// A copy of `config` with the value of each line tagged `# render: NAME`
/// replaced by NAME's value in `vars` (untouched when not given); every
/// other byte stays. Panics if a tag names no known variable (see
/// [`DEFAULTS`]) or a variable in `vars` tags no line.
pub fn render(config: &str, vars: &[(&str, &str)]) -> String {
    let mut used = vec![false; vars.len()];
    let mut out = String::with_capacity(config.len() + 64);
    for line in config.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        match split_tagged(body) {
            Some((head, _value, tag)) => {
                let name = tag.trim_start()[TAG.len()..].trim();
                assert!(
                    DEFAULTS.iter().any(|(k, _)| *k == name),
                    "unknown tag `{TAG}{name}` in the Envoy config"
                );
                match vars.iter().position(|(k, _)| *k == name) {
                    Some(i) => {
                        used[i] = true;
                        out.push_str(head);
                        out.push_str(vars[i].1);
                        out.push_str(tag);
                    }
                    None => out.push_str(body),
                }
            }
            None => out.push_str(body),
        }
        out.push_str(nl);
    }
    for (i, (k, _)) in vars.iter().enumerate() {
        assert!(used[i], "{k} is given but no line is tagged `{TAG}{k}`");
    }
    out
}

/// Where the Envoy binary is: `$PORTCULLIS_ENVOY`, else the path
/// `scripts/install-envoy` installs to. Panics, saying how to install it,
/// when there is none.
pub fn binary() -> PathBuf {
    let path = match std::env::var_os("PORTCULLIS_ENVOY") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".cache/envoy/bin/envoy"),
    };
    if !is_executable(&path) {
        panic!(
            "\n\nEnvoy binary not found at {}.\n\
             These tests need a real Envoy 1.40: run `scripts/test` (it installs one), or\n\
             `scripts/install-envoy` once, or set PORTCULLIS_ENVOY=/path/to/envoy.\n",
            path.display()
        );
    }
    path
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `envoy --mode validate -c <config>`: Ok(output) when Envoy accepts it,
/// Err(output) otherwise.
pub fn validate(config: &Path) -> Result<String, String> {
    let out = Command::new(binary())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(config)
        .output()
        .expect("running envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A running Envoy; killed on drop.
pub struct Envoy {
    /// The HTTP listener (clients talk to this).
    pub addr: SocketAddr,
    /// The admin interface.
    pub admin: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Envoy in front of `app`, asking portcullis at `grpc`. The ext_authz
    /// timeout is raised to 5s so a slow debug build under load is not
    /// mistaken for an outage; everything else is `deploy/envoy.yaml` as shipped.
    pub async fn start(grpc: SocketAddr, app: SocketAddr) -> Envoy {
        Envoy::start_with(grpc, app, &[("EXT_AUTHZ_TIMEOUT", "5s")]).await
    }

    /// As [`Envoy::start`] with extra tagged values (see [`DEFAULTS`]).
    pub async fn start_with(grpc: SocketAddr, app: SocketAddr, extra: &[(&str, &str)]) -> Envoy {
        Envoy::start_edited(grpc, app, extra, &|c| c).await
    }

    /// As [`Envoy::start`], with the shipped per-subject rate limit raised
    /// out of reach: for tests that poll one caller's token as fast as
    /// Envoy answers (the shipped bucket is 200, refilled 100/s).
    pub async fn start_unlimited(grpc: SocketAddr, app: SocketAddr) -> Envoy {
        Envoy::start_edited(grpc, app, &[("EXT_AUTHZ_TIMEOUT", "5s")], &|c| {
            let shipped = "token_bucket: { max_tokens: 200, tokens_per_fill: 100, fill_interval: 1s }";
            assert!(c.contains(shipped), "the shipped per-subject bucket changed: {shipped}");
            c.replace(
                shipped,
                "token_bucket: { max_tokens: 1000000, tokens_per_fill: 1000000, fill_interval: 1s }",
            )
        })
        .await
    }

    /// As [`Envoy::start_with`], with `edit` applied to the rendered config
    /// (say, a tiny rate limit for a test).
    pub async fn start_edited(
        grpc: SocketAddr,
        app: SocketAddr,
        extra: &[(&str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> Envoy {
        let mut last_log = String::new();
        // A port taken between free_port() and Envoy's bind makes Envoy exit:
        // try again with fresh ports.
        for _ in 0..3 {
            match Envoy::try_start(grpc, app, extra, edit).await {
                Ok(e) => return e,
                Err(log) => last_log = log,
            }
        }
        panic!("Envoy did not become ready; last log:\n{last_log}");
    }

    async fn try_start(
        grpc: SocketAddr,
        app: SocketAddr,
        extra: &[(&str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> Result<Envoy, String> {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = free_port();
        let admin = free_port();
        let (listen_s, admin_s) = (listen.to_string(), admin.to_string());
        let (grpc_host, grpc_port) = (grpc.ip().to_string(), grpc.port().to_string());
        let (app_host, app_port) = (app.ip().to_string(), app.port().to_string());
        let mut vars: Vec<(&str, &str)> = extra.to_vec();
        vars.extend([
            ("LISTEN_HOST", "127.0.0.1"),
            ("LISTEN_PORT", listen_s.as_str()),
            ("ADMIN_PORT", admin_s.as_str()),
            ("PORTCULLIS_GRPC_HOST", grpc_host.as_str()),
            ("PORTCULLIS_GRPC_PORT", grpc_port.as_str()),
            ("APP_HOST", app_host.as_str()),
            ("APP_PORT", app_port.as_str()),
        ]);
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, edit(render(&shipped(), &vars))).unwrap();
        let log_path = dir.path().join("envoy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let base_id = (std::process::id() % 100_000) * 100
            + NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 100;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--disable-hot-restart",
                // Access log lines reach the log file promptly (default 10s).
                "--file-flush-interval-msec",
                "50",
            ])
            .args(["--base-id", &base_id.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut envoy = Envoy {
            addr: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            child,
            dir,
        };
        // Ok(None): ready; Ok(Some(status)): Envoy exited.
        let (child, admin) = (RefCell::new(&mut envoy.child), envoy.admin);
        let ready = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(20),
            async || {
                if let Ok(Some(status)) = child.borrow_mut().try_wait() {
                    return Ok(Some(status));
                }
                match request(admin, "GET", "/ready", &[]).await {
                    Ok(r) if r.status == 200 => Ok(None),
                    Ok(r) => Err(format!("/ready answered {}", r.status)),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
        match ready {
            Ok(None) => Ok(envoy),
            Ok(Some(status)) => Err(format!("envoy exited with {status}:\n{}", envoy.log())),
            Err(last) => Err(format!("not ready after 30s ({last}):\n{}", envoy.log())),
        }
    }

    /// What Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The copy of the shipped config it runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("envoy.yaml")
    }

    /// A request through Envoy's listener.
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", target, headers)
            .await
            .unwrap_or_else(|e| panic!("GET {target} via Envoy: {e}\n{}", self.log()))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Sends one HTTP/1.1 request with `target` written verbatim on the request
/// line (no client-side normalisation), `Connection: close`, and reads the
/// whole response. Bounded by 10s.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse_response(&buf)
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{method} {target} to {addr}: no complete response in 10s"),
        )),
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no header end in {:?}",
                String::from_utf8_lossy(buf)
            ))
        })?;
    let head = std::str::from_utf8(&buf[..split]).map_err(|e| bad(e.to_string()))?;
    let rest = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&b[..eol]).map_err(|e| bad(e.to_string()))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .map_err(|e| bad(format!("chunk size {size_text:?}: {e}")))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
