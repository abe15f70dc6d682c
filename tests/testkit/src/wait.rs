//! The one polling wait of the test kit: tests that wait for something to
//! become true (a replica ready, a revocation propagated) call
//! [`eventually`] instead of writing their own deadline loop.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(10);

/// Runs `probe` every [`POLL`] until it returns `Ok`, and returns that
/// value. Panics once `within` has passed, naming `what` and the last `Err`
/// (so a failure shows what was seen, not only that time ran out).
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what} not within {within:?}; last: {last:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}
