//! The one wait of the test kit. Tests and the kit itself never write their
//! own deadline loop:
//!
//! - [`eventually`] polls a probe until it returns `Ok` and panics with what
//!   was awaited and the last `Err` seen once the time is up;
//! - [`eventually_every`] is the same at another pace ([`ASAP`] measures how
//!   soon something happens);
//! - [`poll_until`] is the core of both: it returns the last `Err` instead of
//!   panicking, for callers that retry or report on their own;
//! - [`reap`] waits for a child process to exit (the exit itself is the
//!   signal: no polling), killing it once the grace period is over.
//!
//! Where a real signal exists (a channel, a log line, a task's end), await
//! it under `tokio::time::timeout` instead of polling.
//!
//! A probe is usually an `async ||` closure borrowing what it reads:
//!
//! ```ignore
//! eventually(Duration::from_secs(5), "revocation propagated", async || {
//!     let resp = check(srv.grpc_addr, &req).await;
//!     if code(&resp) != 0 { Ok(resp) } else { Err(resp) }
//! })
//! .await;
//! ```
//!
//! The bound is `FnMut() -> impl Future` (so a probe's future can be `Send`),
//! which an `async ||` closure meets as long as it captures by shared
//! reference; a probe that needs `&mut` clones per call (a tonic client) or
//! goes through a `RefCell` (a `Child`).

use std::fmt::Debug;
use std::future::Future;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(10);

/// A pace for [`eventually_every`]: poll again at once (yielding to other
/// tasks in between), to measure how soon something becomes true.
pub const ASAP: Duration = Duration::ZERO;

/// Runs `probe` every [`POLL`] until it returns `Ok`, and returns that
/// value. Panics once `within` has passed, naming `what` and the last `Err`
/// (so a failure shows what was seen, not only that time ran out).
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    eventually_every(within, POLL, what, probe).await
}

/// [`eventually`], polling every `every` ([`ASAP`]: as fast as possible).
pub async fn eventually_every<T, E, F, Fut>(
    within: Duration,
    every: Duration,
    what: &str,
    probe: F,
) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match poll_until(within, every, probe).await {
        Ok(v) => v,
        Err(last) => panic!("{what} not within {within:?}; last: {last:?}"),
    }
}

/// Runs `probe` every `every` until it returns `Ok`; once `within` has
/// passed, returns the last `Err`. The probe runs at least once.
pub async fn poll_until<T, E, F, Fut>(
    within: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => {}
        }
        if every.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(every).await;
        }
    }
}

/// Waits for `child` to exit: `Ok` with its status if it does within
/// `grace`, otherwise kills it (SIGKILL) and returns `Err` with the status
/// of the killed process. Blocks the calling thread, so it also serves
/// `Drop` impls; the exit is awaited on a helper thread, not polled.
pub fn reap(child: &mut Child, grace: Duration) -> Result<ExitStatus, ExitStatus> {
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(grace) {
            Ok(status) => Ok(status.expect("wait for the child process")),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                let status = rx.recv().expect("the waiting thread answers");
                Err(status.expect("wait for the child process"))
            }
        }
    })
}
