//! The spool: deliveries a destination could not take yet, stored on local disk until they are
//! forwarded (`SPOOL_DIR`, one file per instance).
//!
//! The record format ([`record`]), the file ([`store`]), the group commit ([`Spool::append`]: one
//! writer task gathers the appends that arrive while a commit is running into the next
//! transaction, so the spooled path pays one fsync per batch, not one per request) and the
//! per-destination forwarder ([`forward`]). The request path is not wired to it yet (#9).

pub mod forward;
pub mod record;
pub mod store;

use std::{path::Path, sync::Arc};

use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use store::{destination_id, QueueStats, Store, StoreError};

/// Appends gathered into one transaction at most.
const MAX_BATCH: usize = 512;

/// One append waiting for its commit.
struct Append {
    destination: String,
    record: Vec<u8>,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// Handle to the spool; cloning is cheap.
#[derive(Clone)]
pub struct Spool {
    store: Arc<Store>,
    appends: mpsc::Sender<Append>,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the spool writer has stopped")]
    Stopped,
}

impl Spool {
    /// Opens the spool file in `dir` and starts its writer as a tracked task.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        tasks: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let store = Arc::new(Store::open(&dir.join("spool.redb"), max_bytes)?);
        let (appends, rx) = mpsc::channel(MAX_BATCH * 4);
        tasks.spawn(write(Arc::clone(&store), rx, token));
        Ok(Self { store, appends })
    }

    /// Stores `record` for `destination`; returns once it is on disk (fsync), with its sequence
    /// number. Concurrent appends share one commit.
    pub async fn append(&self, destination: &str, record: Vec<u8>) -> Result<u64, SpoolError> {
        let (done, result) = oneshot::channel();
        self.appends
            .send(Append {
                destination: destination.to_owned(),
                record,
                done,
            })
            .await
            .map_err(|_| SpoolError::Stopped)?;
        Ok(result.await.map_err(|_| SpoolError::Stopped)??)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// The writer: takes every append that is waiting, commits them in one transaction, answers
/// each, repeats. Runs until cancelled and every sender is gone.
async fn write(store: Arc<Store>, mut rx: mpsc::Receiver<Append>, token: CancellationToken) {
    loop {
        let first = tokio::select! {
            () = token.cancelled() => None,
            next = rx.recv() => next,
        };
        let Some(first) = first else {
            // Drain what was already handed over: those requests are waiting on their commit.
            rx.close();
            let rest: Vec<Append> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
            if !rest.is_empty() {
                commit(&store, rest).await;
            }
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit(&store, batch).await;
    }
}

async fn commit(store: &Arc<Store>, batch: Vec<Append>) {
    let store = Arc::clone(store);
    let (items, replies): (Vec<(String, Vec<u8>)>, Vec<_>) = batch
        .into_iter()
        .map(|a| ((a.destination, a.record), a.done))
        .unzip();
    let result = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &[u8])> = items
            .iter()
            .map(|(d, r)| (d.as_str(), r.as_slice()))
            .collect();
        store.append(&refs)
    })
    .await;
    match result {
        Ok(Ok(results)) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "Spool commit failed; the requests were refused.");
            let reason = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Commit(reason.clone())));
            }
        }
        Err(error) => {
            tracing::error!(%error, "Spool commit task failed; the requests were refused.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_appends_are_all_stored_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let token = CancellationToken::new();
        let spool = Spool::open(dir.path(), 1 << 30, &tasks, token.clone()).unwrap();
        let appends = (0..500).map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                spool
                    .append(&format!("d{}", i % 3), format!("r{i}").into_bytes())
                    .await
            })
        });
        let results = futures_util::future::join_all(appends).await;
        assert!(results.iter().all(|r| matches!(r, Ok(Ok(_)))));
        drop(spool);
        token.cancel();
        tasks.close();
        tasks.wait().await;

        let store = Store::open(&dir.path().join("spool.redb"), 1 << 30).unwrap();
        let depth: u64 = store.queues().unwrap().iter().map(|q| q.depth).sum();
        assert_eq!(depth, 500);
    }
}
