//! The group commit: one thread takes every append that is waiting, journals them with one
//! fsync (not one per request), answers them, then applies them to the redb file.

use tokio::sync::{mpsc, oneshot};

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    journal::{self, Journal},
    Destination, Queue, Shared, StoreError,
};

/// Appends gathered into one journal write at most.
pub(super) const MAX_BATCH: usize = 512;

/// A journal that was written to is made durable in the redb file at least this often, so an
/// unclean stop re-applies little (and redelivers little of what was already forwarded).
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(1);

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
    /// Time passed (every [`SYNC_EVERY`]): make the redb file durable if it is due.
    Tick,
    /// Commit what was already handed over, then end.
    Stop,
}

/// The writer, on a thread of its own (a commit blocks on fsync): takes every append that is
/// waiting, journals them together, answers each, hands them to the applier (a second thread,
/// so applying one batch overlaps journaling the next), repeats, until told to stop.
pub(super) fn write(shared: &Shared, mut journal: Journal, mut rx: mpsc::Receiver<Message>) {
    let failing = AtomicBool::new(false);
    let (work, applier_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let applying = std::thread::Builder::new()
            .name("spool-applier".into())
            .spawn_scoped(scope, || apply_all(shared, &failing, applier_rx));
        if let Err(error) = applying {
            tracing::error!(%error, "Spool applier thread could not start.");
            return;
        }
        let mut writer = Writer {
            shared,
            journal: &mut journal,
            work,
            failing: &failing,
            other_free: true,
            pending: None,
            synced: Instant::now(),
            applier_gone: false,
        };
        loop {
            let mut batch = Vec::new();
            let mut stop = false;
            let mut tick = false;
            match rx.blocking_recv() {
                Some(Message::Append(append)) => batch.push(append),
                Some(Message::Tick) => tick = true,
                Some(Message::Stop) | None => stop = true,
            }
            while !stop && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Message::Append(append)) => batch.push(append),
                    Ok(Message::Tick) => tick = true,
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
                writer.commit(batch);
            }
            if stop {
                writer.sync_all();
            } else {
                writer.rotate(tick);
            }
            if stop {
                // Dropping the writer ends the applier once it applied what it was sent.
                return;
            }
            if writer.applier_gone {
                // Only a panic inside the store ends the applier early. What was answered is
                // in the journal (the next start applies it); the writer stops too, so /health
                // reports it and requests are refused instead of journaled unforwarded.
                tracing::error!("Spool applier stopped; the spool writer stops too.");
                return;
            }
        }
    });
}

/// One request's records, journaled and answered, not yet in the redb file: numbered from
/// `first`, one per destination.
struct Journaled {
    first: u64,
    destinations: Vec<Destination>,
    record: Vec<u8>,
    queues: Vec<Arc<Queue>>,
}

/// What the applier is sent, in journal order.
enum Work {
    Apply(Vec<Journaled>),
    /// Make everything sent before durable in the redb file; answers whether it is (the
    /// journal may then start over).
    Sync(std::sync::mpsc::Sender<bool>),
}

struct Writer<'a> {
    shared: &'a Shared,
    journal: &'a mut Journal,
    work: std::sync::mpsc::Sender<Work>,
    /// The applier cannot write the redb file: appends are refused until it can.
    failing: &'a AtomicBool,
    /// The journal file not being written holds only frames durably in the redb file.
    other_free: bool,
    /// The answer to the last sync asked for, until it comes.
    pending: Option<std::sync::mpsc::Receiver<bool>>,
    /// When the last sync was asked for.
    synced: Instant,
    /// The applier ended (a panic inside the store).
    applier_gone: bool,
}

impl Writer<'_> {
    /// Journals `batch` (one write, one fsync), answers each append, then hands what was
    /// journaled to the applier.
    fn commit(&mut self, batch: Vec<Append>) {
        let store = &self.shared.store;
        if self.failing.load(Ordering::Acquire) {
            refuse(batch, "the spool file cannot be written; see the log");
            return;
        }
        let sizes: Vec<(u64, u64)> = batch
            .iter()
            .map(|a| {
                let records = a.destinations.len() as u64;
                (a.size * records, records)
            })
            .collect();
        let admitted = store.admit(&sizes);
        let mut frames = Vec::new();
        for (append, first) in batch.iter().zip(&admitted) {
            if let Ok(first) = first {
                for (seq, destination) in (*first..).zip(&append.destinations) {
                    journal::encode(&mut frames, seq, destination.name(), &append.record);
                }
            }
        }
        let written = if frames.is_empty() {
            Ok(())
        } else {
            self.journal.write(&frames)
        };
        drop(frames);
        if let Err(error) = &written {
            tracing::error!(%error, "Spool journal write failed; the requests were refused.");
            let taken: u64 = sizes
                .iter()
                .zip(&admitted)
                .filter(|(_, a)| a.is_ok())
                .map(|((size, _), _)| size)
                .sum();
            store.release(taken);
        }
        let mut journaled = Vec::with_capacity(batch.len());
        for (append, admitted) in batch.into_iter().zip(admitted) {
            let result = match (admitted, &written) {
                (Ok(first), Ok(())) => Ok(first),
                (Ok(_), Err(error)) => Err(StoreError::Commit(error.to_string())),
                (Err(error), _) => Err(error),
            };
            match result {
                Ok(first) => {
                    let Append {
                        destinations,
                        record,
                        queues,
                        done,
                        ..
                    } = append;
                    let _ = done.send(Ok(()));
                    journaled.push(Journaled {
                        first,
                        destinations,
                        record,
                        queues,
                    });
                }
                Err(error) => append.refuse(error),
            }
        }
        if !journaled.is_empty() && self.work.send(Work::Apply(journaled)).is_err() {
            self.applier_gone = true;
        }
    }

    /// Moves the journal to its other file when the current one is full enough, or (`tick`)
    /// holds records and [`SYNC_EVERY`] has passed, asking the applier to make the redb file
    /// durable meanwhile. Waits only when the other file's sync has not finished yet.
    fn rotate(&mut self, tick: bool) {
        self.settle(false);
        let written = self.journal.written();
        let due = written >= journal::SWITCH_AT
            || (tick && written > 0 && self.synced.elapsed() >= SYNC_EVERY);
        if !due {
            return;
        }
        if !self.other_free {
            if self.pending.is_none() {
                // The last sync failed: ask again (it covers the other file's frames too).
                self.ask_sync();
            }
            self.settle(true);
            if !self.other_free {
                // Still failing: this file goes on growing (and the error is in the log).
                return;
            }
        }
        // Everything journaled was sent to the applier before this: the sync covers it.
        self.ask_sync();
        self.other_free = false;
        if let Err(error) = self.journal.switch() {
            tracing::error!(%error, "Spool journal could not be restarted.");
        }
    }

    /// At a stop: the redb file made durable with everything journaled.
    fn sync_all(&mut self) {
        self.settle(true);
        if self.journal.written() > 0 || !self.other_free {
            self.ask_sync();
            self.settle(true);
        }
    }

    fn ask_sync(&mut self) {
        let (reply, answer) = std::sync::mpsc::channel();
        if self.work.send(Work::Sync(reply)).is_err() {
            self.applier_gone = true;
        }
        self.pending = Some(answer);
        self.synced = Instant::now();
    }

    /// Takes the answer to the pending sync (waiting for it when `wait`): the other file is
    /// free once it succeeded.
    fn settle(&mut self, wait: bool) {
        let Some(answer) = &self.pending else {
            return;
        };
        let synced = if wait {
            answer.recv().unwrap_or(false)
        } else {
            match answer.try_recv() {
                Ok(synced) => synced,
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => false,
            }
        };
        self.pending = None;
        self.other_free = synced;
    }
}

/// The applier: puts journaled records into the redb file (no fsync: the journal holds them)
/// and wakes their forwarders; makes the file durable when the writer asks. What the file
/// refuses is kept and tried again with the next work, and `failing` is set meanwhile.
fn apply_all(shared: &Shared, failing: &AtomicBool, rx: std::sync::mpsc::Receiver<Work>) {
    let mut unapplied: Vec<Journaled> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut syncs = Vec::new();
        for work in std::iter::once(first).chain(rx.try_iter()) {
            match work {
                Work::Apply(journaled) => unapplied.extend(journaled),
                // Answered after what came with it is applied: a sync may cover more than
                // was asked, never less.
                Work::Sync(reply) => syncs.push(reply),
            }
        }
        if !unapplied.is_empty() {
            let records: Vec<(u64, &str, &[u8])> = unapplied
                .iter()
                .flat_map(|j| {
                    (j.first..)
                        .zip(&j.destinations)
                        .map(|(seq, d)| (seq, d.name(), j.record.as_slice()))
                })
                .collect();
            let applied = shared.store.apply(&records);
            drop(records);
            match applied {
                Ok(()) => {
                    failing.store(false, Ordering::Release);
                    for queue in unapplied.drain(..).flat_map(|j| j.queues) {
                        shared.forward(&queue);
                    }
                }
                Err(error) => {
                    failing.store(true, Ordering::Release);
                    tracing::error!(%error, "Spool file write failed; the journal keeps the records.");
                }
            }
        }
        for reply in syncs {
            let synced = unapplied.is_empty()
                && shared.store.sync().map_or_else(
                    |error| {
                        tracing::error!(%error, "Spool file sync failed; the journal keeps the records.");
                        false
                    },
                    |()| true,
                );
            let _ = reply.send(synced);
        }
    }
}

impl Append {
    /// Answers with `error` and gives the queues their counts back.
    fn refuse(self, error: StoreError) {
        for queue in &self.queues {
            queue.removed(1, self.size);
        }
        let _ = self.done.send(Err(error));
    }
}

/// Answers every append of `batch` with an error.
fn refuse(batch: Vec<Append>, reason: &str) {
    for append in batch {
        append.refuse(StoreError::Commit(reason.to_owned()));
    }
}
