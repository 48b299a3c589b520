//! The group commit: one thread takes every append that is waiting and commits them in one
//! transaction (one fsync per batch, not one per request).

use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use super::{Destination, Queue, Shared, StoreError};

/// Appends gathered into one transaction at most.
pub(super) const MAX_BATCH: usize = 512;

/// One request's records waiting for their commit: the same record for each destination.
pub(super) struct Append {
    pub destinations: Vec<Destination>,
    pub record: Vec<u8>,
    /// The queues counted for it (see `Spool::store`): woken when committed, given their
    /// counts back when not.
    pub queues: Vec<Arc<Queue>>,
    pub size: u64,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// What the writer thread is sent.
pub(super) enum Message {
    Append(Append),
    /// Commit what was already handed over, then end.
    Stop,
}

/// The writer, on a thread of its own (a commit blocks on fsync): takes every append that is
/// waiting, commits them in one transaction, answers each, repeats, until told to stop.
pub(super) fn write(shared: &Shared, mut rx: mpsc::Receiver<Message>) {
    loop {
        let mut batch = Vec::new();
        let mut stop = false;
        match rx.blocking_recv() {
            Some(Message::Append(append)) => batch.push(append),
            Some(Message::Stop) | None => stop = true,
        }
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Append(append)) => batch.push(append),
                Ok(Message::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if stop {
            // Those already handed over are waiting on their commit.
            rx.close();
            while let Ok(message) = rx.try_recv() {
                if let Message::Append(append) = message {
                    batch.push(append);
                }
            }
        }
        if !batch.is_empty() {
            commit(shared, batch);
        }
        if stop {
            return;
        }
    }
}

fn commit(shared: &Shared, batch: Vec<Append>) {
    let groups: Vec<Vec<(&str, &[u8])>> = batch
        .iter()
        .map(|a| {
            a.destinations
                .iter()
                .map(|d| (d.name(), a.record.as_slice()))
                .collect()
        })
        .collect();
    let results: Vec<Result<(), StoreError>> = match shared.store.append(&groups) {
        Ok(results) => results,
        Err(error) => {
            tracing::error!(%error, "Spool commit failed; the requests were refused.");
            let reason = error.to_string();
            batch
                .iter()
                .map(|_| Err(StoreError::Commit(reason.clone())))
                .collect()
        }
    };
    drop(groups);
    for (append, result) in batch.into_iter().zip(results) {
        for queue in &append.queues {
            match result {
                Ok(()) => shared.forward(queue),
                Err(_) => queue.removed(1, append.size),
            }
        }
        let _ = append.done.send(result);
    }
}
