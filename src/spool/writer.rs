//! The group commit: one thread takes every append that is waiting and commits them in one
//! transaction (one fsync per batch, not one per request).

use tokio::sync::{mpsc, oneshot};

use super::{Destination, Store, StoreError};

/// Appends gathered into one transaction at most.
pub(super) const MAX_BATCH: usize = 512;

/// One request's records waiting for their commit: the same record for each destination.
pub(super) struct Append {
    pub destinations: Vec<Destination>,
    pub record: Vec<u8>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// One request's destinations and record, as the writer commits them.
type Request = (Vec<Destination>, Vec<u8>);

/// What the writer thread is sent.
pub(super) enum Message {
    Append(Append),
    /// Commit what was already handed over, then end.
    Stop,
}

/// The writer, on a thread of its own (a commit blocks on fsync): takes every append that is
/// waiting, commits them in one transaction, answers each, repeats, until told to stop.
pub(super) fn write(store: &Store, mut rx: mpsc::Receiver<Message>) {
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
            commit(store, batch);
        }
        if stop {
            return;
        }
    }
}

fn commit(store: &Store, batch: Vec<Append>) {
    let (items, replies): (Vec<Request>, Vec<_>) = batch
        .into_iter()
        .map(|a| ((a.destinations, a.record), a.done))
        .unzip();
    let groups: Vec<Vec<(&str, &[u8])>> = items
        .iter()
        .map(|(destinations, record)| {
            destinations
                .iter()
                .map(|d| (d.name(), record.as_slice()))
                .collect()
        })
        .collect();
    match store.append(&groups) {
        Ok(results) => {
            // The callers count and wake their queues (`Spool::store`).
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            tracing::error!(%error, "Spool commit failed; the requests were refused.");
            let reason = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Commit(reason.clone())));
            }
        }
    }
}
