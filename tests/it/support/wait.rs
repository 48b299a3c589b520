//! Waiting on conditions with a deadline, never on time alone.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Polls `condition` every 20 ms until it is true; panics with `what` after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until(deadline, condition).await {
        panic!("timed out after {deadline:?} waiting for: {what}");
    }
}

/// Polls `condition` every 20 ms until it is true (`true`) or `deadline` passed (`false`).
pub async fn poll_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
