//! A throwaway Postgres server for integration tests.
//!
//! `TempPostgres::start()` runs `initdb` and `postgres` (from
//! `/usr/lib/postgresql/<newest>/bin`, else `pg_config --bindir`) in a temp
//! dir on a free loopback port, as the `postgres` OS user when running as
//! root, and waits until it accepts queries. `fsync=off` for speed: data
//! survives `stop()`/`restart()` (a process crash), not an OS crash. `stop()` kills it (SIGQUIT:
//! immediate shutdown), `restart()` brings it back on the same port, and Drop
//! stops it and removes the directory.
//!
//! [`ScratchDb`] is a fresh, uniquely named database on a server that is
//! already running (this run's cluster, a `TempPostgres`, or a bench's
//! admin URL), so tests and benches stop repeating that set-up.
//!
//! Depends only on tokio, tokio-postgres, uuid and tempfile. Panics on
//! failure (except where a caller may want to skip): it is a test helper.

use std::cell::RefCell;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::{poll_until, reap};

pub struct TempPostgres {
    pub port: u16,
    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    pub bindir: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `(uid, gid)` to run as, when we are root.
    run_as: Option<(u32, u32)>,
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn find_bindir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let bin = output(Command::new("pg_config").arg("--bindir"))
        .expect("no /usr/lib/postgresql/<v>/bin and no pg_config: install postgresql");
    PathBuf::from(bin)
}

fn id(args: &[&str]) -> u32 {
    output(Command::new("id").args(args))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("`id {}` failed", args.join(" ")))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl TempPostgres {
    /// Initialises a cluster and starts it on a free port.
    pub async fn start() -> TempPostgres {
        let bindir = find_bindir();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .expect("create temp dir");
        let run_as = (id(&["-u"]) == 0).then(|| (id(&["-u", "postgres"]), id(&["-g", "postgres"])));
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .env("LC_ALL", "C")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut pg = TempPostgres {
            port,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bindir,
            dir,
            child: None,
            run_as,
        };
        pg.spawn().await;
        pg
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open postgres log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("spawn postgres"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        // Ok(None): ready; Ok(Some(status)): the postmaster exited early.
        let (child, url) = (RefCell::new(self.child.as_mut()), &self.url);
        let ready = poll_until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || {
                if let Some(child) = child.borrow_mut().as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Ok(Some(status));
                }
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let task = tokio::spawn(conn);
                let ok = client.simple_query("SELECT 1").await;
                drop(client);
                let _ = task.await;
                ok.map(|_| None).map_err(|e| e.to_string())
            },
        )
        .await;
        match ready {
            Ok(None) => {}
            Ok(Some(status)) => panic!("postgres exited early ({status}): {}", self.log_tail()),
            Err(last) => panic!("postgres not ready after 60s ({last}): {}", self.log_tail()),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        log.get(start..).unwrap_or_default().to_owned()
    }

    /// Immediate shutdown (SIGQUIT to the postmaster, SIGKILL after 10 s).
    /// Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        let _ = reap(&mut child, Duration::from_secs(10));
    }

    /// Stops (if running) and starts again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh database `<prefix>_<random>` on the server at an admin URL.
/// Drop it with [`ScratchDb::drop_db`] (an async drop is not possible).
pub struct ScratchDb {
    admin: tokio_postgres::Client,
    /// The database name.
    pub name: String,
    /// The admin URL with its database path replaced by [`Self::name`].
    pub url: String,
}

impl ScratchDb {
    /// Connects to `admin_url` and creates the database. An error means the
    /// server did not answer or refused: benches skip, tests panic.
    pub async fn create(admin_url: &str, prefix: &str) -> Result<ScratchDb, tokio_postgres::Error> {
        let (admin, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("the admin URL has a database path");
        let url = format!("{base}/{name}");
        Ok(ScratchDb { admin, name, url })
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_db(self) -> Result<(), tokio_postgres::Error> {
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
    }
}
