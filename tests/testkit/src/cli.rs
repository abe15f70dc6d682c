//! The `portcullis` binary as a user runs it, for the `login` and
//! `token --api` tests: its own home (`XDG_CONFIG_HOME`, `HOME`) so the
//! credentials file is the test's, and no client credentials in the
//! environment unless a test gives them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::wait::eventually;

/// One user's command line: the binary and a home of its own.
pub struct Cli {
    bin: PathBuf,
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts success; returns stdout.
    pub fn expect_ok(&self) -> &str {
        assert!(self.ok(), "command failed: {self:?}");
        &self.stdout
    }

    /// Asserts a non-zero exit whose stderr contains `needle`.
    pub fn expect_err(&self, needle: &str) {
        assert!(
            !self.ok() && self.code.is_some(),
            "expected a failure: {self:?}"
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:?}"
        );
    }
}

impl Cli {
    /// `bin`: `env!("CARGO_BIN_EXE_portcullis")` of the calling test.
    pub fn new(bin: &str) -> Cli {
        Cli {
            bin: bin.into(),
            home: tempfile::tempdir().expect("home"),
            env: Vec::new(),
        }
    }

    /// An environment variable for every later command.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(x, _)| x != k);
        self.env.push((k.into(), v.into()));
    }

    pub fn unset_env(&mut self, k: &str) {
        self.env.retain(|(x, _)| x != k);
    }

    /// `$XDG_CONFIG_HOME/portcullis/credentials`.
    pub fn credentials(&self) -> PathBuf {
        self.home.path().join("config/portcullis/credentials")
    }

    /// Takes the lock the CLI takes around a renewal (`credentials.lock`
    /// beside the file, `flock` exclusive), held until the file is dropped.
    pub fn hold_credentials_lock(&self) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.credentials().with_file_name("credentials.lock"))
            .expect("open credentials.lock");
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).expect("flock");
        f
    }

    /// Whether some process is blocked waiting for the lock
    /// [`Cli::hold_credentials_lock`] holds (a `->` line of /proc/locks on
    /// the lock file's inode): the kernel's own word that a command waits.
    pub fn someone_waits_on_credentials_lock(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(self.credentials().with_file_name("credentials.lock")) else {
            return false;
        };
        let inode = format!(":{} ", m.ino());
        std::fs::read_to_string("/proc/locks")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("-> FLOCK") && l.contains(&inode))
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to completion (bounded: 60 s).
    pub async fn run(&self, args: &[&str]) -> Ran {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("portcullis {args:?} did not finish in 60 s"))
            .expect("run portcullis");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `portcullis login ARGS` (the device grant) and waits until it
    /// has printed where to approve it.
    pub async fn start_device_login(&self, args: &[&str]) -> DeviceLogin {
        let mut all = vec!["login"];
        all.extend_from_slice(args);
        let mut child = self.command(&all).spawn().expect("start portcullis login");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = tokio::sync::watch::channel(String::new());
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tx.send_modify(|s| {
                    s.push_str(&l);
                    s.push('\n');
                });
            }
        });
        let printed = eventually(
            Duration::from_secs(30),
            "login prints the user code",
            async || {
                let s = rx.borrow().clone();
                let code = s
                    .lines()
                    .find_map(|l| l.split("enter the code: ").nth(1))
                    .map(str::to_owned);
                let url = s
                    .lines()
                    .find(|l| l.starts_with("  http"))
                    .map(|l| l.trim().to_owned());
                match (code, url) {
                    (Some(c), Some(u)) => Ok((c, u)),
                    _ => Err(s),
                }
            },
        )
        .await;
        DeviceLogin {
            child,
            reader,
            stderr: rx,
            user_code: printed.0,
            verification_uri_complete: printed.1,
        }
    }
}

/// A running `portcullis login` waiting for approval.
pub struct DeviceLogin {
    child: Child,
    /// Reads stderr until EOF.
    reader: tokio::task::JoinHandle<()>,
    stderr: tokio::sync::watch::Receiver<String>,
    pub user_code: String,
    pub verification_uri_complete: String,
}

impl DeviceLogin {
    /// Waits for it to exit (bounded by `within`); returns what it printed
    /// on stderr (stdout is unused by `login`).
    pub async fn finish(mut self, within: Duration) -> Ran {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "portcullis login still running after {within:?}: {}",
                    self.stderr.borrow().as_str()
                )
            })
            .expect("wait for login");
        // The reader drains the pipe until EOF, right after the exit.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.reader).await;
        Ran {
            code: status.code(),
            stdout: String::new(),
            stderr: self.stderr.borrow().clone(),
        }
    }
}

/// A plain-http listener on this machine's non-loopback address (the one
/// its default route leaves from), recording the head of every request it
/// gets: the far host a `--api`/`--issuer` over plain http must not reach.
pub struct Tripwire {
    pub url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tripwire {
    /// `None` when the machine has no non-loopback address to listen on.
    pub async fn start() -> Option<Tripwire> {
        // Connecting a UDP socket sends nothing; it picks the source address.
        let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        probe.connect("192.0.2.200:9").ok()?;
        let ip = probe.local_addr().ok()?.ip();
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        Tripwire::listen(ip).await
    }

    /// The same on 127.0.0.1: an endpoint of another origin than the
    /// provider's that must not be sent anything.
    pub async fn loopback() -> Tripwire {
        Tripwire::listen(std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .expect("listen on 127.0.0.1")
    }

    async fn listen(ip: std::net::IpAddr) -> Option<Tripwire> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind((ip, 0)).await.ok()?;
        let addr = l.local_addr().ok()?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        Some(Tripwire {
            url: format!("http://{addr}"),
            seen,
            task,
        })
    }

    /// The head (and start of the body) of each request received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Tripwire {
    fn drop(&mut self) {
        self.task.abort();
    }
}
