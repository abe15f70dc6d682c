//! A throwaway `redis-server` for integration tests that must kill it.
//!
//! `TempRedis::start()` runs the installed `redis-server` on a free loopback
//! port with persistence off (`--save "" --appendonly no`) in a temp dir and
//! waits until it answers PING. `stop()` kills it (SIGKILL), `restart()`
//! brings it back on the same port, Drop kills it. Panics on failure: it is
//! a test helper.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::eventually_every;

pub struct TempRedis {
    pub port: u16,
    /// `redis://127.0.0.1:<port>`
    pub url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn pong(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl TempRedis {
    pub async fn start() -> TempRedis {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-redis-")
            .tempdir()
            .expect("create temp dir");
        let port = free_port();
        let mut r = TempRedis {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            dir,
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (install redis-server; scripts/test does)");
        self.child = Some(child);
        let port = self.port;
        let what = "redis-server answering PING";
        eventually_every(
            Duration::from_secs(10),
            Duration::from_millis(20),
            what,
            async || {
                if pong(port) { Ok(()) } else { Err("no PONG") }
            },
        )
        .await;
    }

    /// Kills the server (connections drop at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
