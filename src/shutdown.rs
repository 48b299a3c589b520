//! Graceful shutdown: one cancellation token and one task tracker, the serving phase the HTTP
//! layer reads, plus the OS signal future.
//!
//! Behind a load balancer a stop goes: `Draining` (`/health` answers 503 while requests are still
//! served, so the balancer takes the instance out), then `Stopping` (no new connections; in-flight
//! requests finish, and any still waiting on a destination at the deadline is answered 503 rather
//! than cut off), then the background tasks stop.

use std::time::Duration;

use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Where the process is in its life, as the HTTP layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// `/health` says `draining`; everything else is served as usual.
    Draining,
    /// Not accepting; in-flight requests must be answered by `deadline`.
    Stopping {
        deadline: Instant,
    },
}

/// Every background task is spawned through `tasks` with a child of `token`.
#[derive(Clone)]
pub struct Shutdown {
    pub token: CancellationToken,
    pub tasks: TaskTracker,
    pub phase: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
            phase: watch::channel(Phase::Serving).0,
        }
    }
}

/// Resolves at the answer deadline of a stop (never while serving or draining).
pub async fn answer_deadline(mut phase: watch::Receiver<Phase>) {
    loop {
        if let Phase::Stopping { deadline } = *phase.borrow_and_update() {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if phase.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every task and waits up to `grace` for them to finish; `false` if time ran out.
    pub async fn stop_tasks(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down."),
        () = term => tracing::info!("SIGTERM received; shutting down."),
    }
}
