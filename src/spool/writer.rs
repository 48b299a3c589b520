//! The group commit: the appends that arrive while a commit runs are journaled together with
//! one durable journal write (not one per request), answered, then handed to their queues in
//! memory (see `super::fresh`); a second thread makes the redb file hold what memory still has
//! whenever the journal switches files.
//!
//! Every durable write happens on the writer thread: requests hand their appends over and await
//! their batch's commit, so an HTTP worker never waits on the disk (a slow or stuck disk slows
//! the requests that need the spool, never the others, `/health` or the admin endpoints). The
//! periodic sync and the stop go the same way.

use tokio::sync::{mpsc, oneshot};

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{
    fresh,
    journal::{self, Journal},
    ledger::Reservation,
    Destination, Queue, Shared, StoreError,
};

/// Appends gathered into one journal write at most by the writer thread.
pub(super) const MAX_BATCH: usize = 512;

/// A journal that was written to is made durable in the redb file at least this often, so an
/// unclean stop re-applies little (and redelivers little of what was already forwarded).
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One request's records waiting for their commit: the same record for each destination.
pub(super) struct Append {
    pub destinations: Vec<Destination>,
    pub record: Vec<u8>,
    /// The queue of each destination: given the record and woken when committed.
    pub queues: Vec<Arc<Queue>>,
    /// Its counts in the ledger: kept when committed, given back when dropped.
    pub reservation: Reservation,
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

/// Starts the syncer for `journal`. The writer goes to the writer thread ([`serve`]) with the
/// receiver; requests, the periodic sync and the stop reach it through the sender.
pub(super) fn start(
    shared: Arc<Shared>,
    journal: Journal,
) -> std::io::Result<(Writer, mpsc::Sender<Message>, mpsc::Receiver<Message>)> {
    let writer = Writer::start(shared, journal)?;
    let (handoff, rx) = mpsc::channel(MAX_BATCH * 4);
    Ok((writer, handoff, rx))
}

/// How long the writer's commits take, for `/health`: a commit in progress for longer than the
/// write timeout, or one that took longer than it within the last [`SLOW_MEMORY`], makes the
/// spool `degraded` (the disk is slow: requests that need the spool may get 503, the others are
/// not affected).
#[derive(Debug)]
pub(super) struct WriteTiming {
    /// `SPOOL_WRITE_TIMEOUT_MS`.
    timeout: Duration,
    /// Unix milliseconds the commit in progress started at; 0 when none runs.
    since: AtomicU64,
    /// How long the last slow commit took, and when it ended (unix milliseconds).
    slow_ms: AtomicU64,
    slow_at: AtomicU64,
    /// Why the disk cannot be written, while it cannot (set and cleared by the writer).
    unavailable: std::sync::Mutex<Option<String>>,
}

/// How long a slow commit keeps the spool `degraded` after it ended.
const SLOW_MEMORY: Duration = Duration::from_secs(30);

/// Without requests, the redb file is synced (and its size measured) this often.
const IDLE_SYNC_EVERY: Duration = Duration::from_secs(10);

/// Failed journal writes in a row after which the spool is unavailable (requests that need it
/// are refused at once) until a probe succeeds.
const FAILURES_UNAVAILABLE: u32 = 3;

/// How often an unavailable spool probes its disk.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(2);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl WriteTiming {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            since: AtomicU64::new(0),
            slow_ms: AtomicU64::new(0),
            slow_at: AtomicU64::new(0),
            unavailable: std::sync::Mutex::new(None),
        }
    }

    /// Why the spool cannot store anything now (its disk fails writes), if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_unavailable(&self, reason: Option<String>) {
        *self
            .unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    /// The write timeout requests wait for their commit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn start(&self) -> Instant {
        self.since.store(super::now_ms().max(1), Ordering::Release);
        Instant::now()
    }

    fn end(&self, started: Instant) {
        self.since.store(0, Ordering::Release);
        let took = started.elapsed();
        if took >= self.timeout {
            self.slow_ms.store(millis(took), Ordering::Relaxed);
            self.slow_at.store(super::now_ms(), Ordering::Release);
        }
    }

    /// Why the disk counts as slow now, if it does.
    pub fn degraded(&self) -> Option<String> {
        let now = super::now_ms();
        let timeout = millis(self.timeout);
        let since = self.since.load(Ordering::Acquire);
        if since != 0 && now.saturating_sub(since) > timeout {
            return Some(format!(
                "a spool write has been running for {} ms (SPOOL_WRITE_TIMEOUT_MS is {timeout})",
                now.saturating_sub(since)
            ));
        }
        let at = self.slow_at.load(Ordering::Acquire);
        (at != 0 && now.saturating_sub(at) < millis(SLOW_MEMORY)).then(|| {
            format!(
                "a spool write took {} ms within the last {} s (SPOOL_WRITE_TIMEOUT_MS is {timeout})",
                self.slow_ms.load(Ordering::Relaxed),
                SLOW_MEMORY.as_secs()
            )
        })
    }
}

/// The writer thread: takes every append handed to it that is waiting, commits them together,
/// syncs when told, until told to stop. The writer is this thread's alone: no request ever
/// waits on its disk writes, only on the answer.
pub(super) fn serve(mut writer: Writer, mut rx: mpsc::Receiver<Message>) {
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
            let timing = writer.shared.writes.start();
            writer.commit(batch);
            writer.shared.writes.end(timing);
        }
        if stop {
            writer.finish();
            return;
        }
        if writer.unavailable.is_some() && writer.probed.elapsed() >= PROBE_EVERY {
            writer.probe();
        }
        writer.rotate(tick);
        if writer.syncer_gone {
            // Only a panic inside the store ends the syncer early. What was answered is in the
            // journal (the next start applies it); writing stops too, so /health reports it
            // and requests are refused instead of journaled unforwarded.
            tracing::error!("Spool syncer stopped; the spool writer stops too.");
            writer.shared.writer_alive.store(false, Ordering::Release);
            rx.close();
            while let Ok(message) = rx.try_recv() {
                if let Message::Append(append) = message {
                    drop(append);
                }
            }
            return;
        }
    }
}

/// What the syncer is sent: make the redb file hold every record journaled so far that is
/// not delivered, durably; answers whether it does (the journal may then start over).
struct SyncRequest {
    reply: std::sync::mpsc::Sender<bool>,
    /// The queues given records since the last sync.
    queues: Vec<Arc<Queue>>,
    /// The highest sequence number journaled.
    journaled: u64,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    journal: Journal,
    /// To the syncer thread (`None` once finishing, which ends it).
    work: Option<std::sync::mpsc::Sender<SyncRequest>>,
    syncer: Option<JoinHandle<()>>,
    /// The queues given records since the last sync was asked for, and the highest number.
    touched: HashMap<u64, Arc<Queue>>,
    journaled: u64,
    /// The syncer cannot write the redb file: appends are refused until it can.
    failing: Arc<AtomicBool>,
    /// The journal file not being written holds only frames durably in the redb file.
    other_free: bool,
    /// The answer to the last sync asked for, until it comes.
    pending: Option<std::sync::mpsc::Receiver<bool>>,
    /// When the last sync was asked for.
    synced: Instant,
    /// The syncer ended (a panic inside the store).
    syncer_gone: bool,
    /// The number of the last acknowledged frame: the next frame's `prev`.
    acked: u64,
    /// Journal writes that failed in a row.
    failures: u32,
    /// The current journal file had a failed write: nothing more may be written to it.
    abandoned: bool,
    /// Why the spool is unavailable (requests refused at once), until a probe succeeds.
    unavailable: Option<String>,
    /// When the disk was last probed.
    probed: Instant,
}

impl Writer {
    /// A writer for `journal`, with its syncer thread running.
    fn start(shared: Arc<Shared>, journal: Journal) -> std::io::Result<Self> {
        let failing = Arc::new(AtomicBool::new(false));
        let (work, syncer_rx) = std::sync::mpsc::channel();
        let syncer = {
            let shared = Arc::clone(&shared);
            let failing = Arc::clone(&failing);
            std::thread::Builder::new()
                .name("spool-syncer".into())
                .spawn(move || syncer(&shared, &failing, syncer_rx))?
        };
        let acked = shared.store.applied();
        Ok(Self {
            shared,
            journal,
            work: Some(work),
            syncer: Some(syncer),
            touched: HashMap::new(),
            journaled: 0,
            failing,
            other_free: true,
            pending: None,
            synced: Instant::now(),
            syncer_gone: false,
            acked,
            failures: 0,
            abandoned: false,
            unavailable: None,
            probed: Instant::now(),
        })
    }

    /// At a stop: the redb file made durable with everything journaled, then the syncer ended.
    fn finish(mut self) {
        self.sync_all();
        self.work = None;
        if let Some(syncer) = self.syncer.take() {
            if syncer.join().is_err() {
                tracing::error!("Spool syncer panicked at the stop.");
            }
        }
    }

    /// Journals `batch` (one durable write), answers each append, then puts what was
    /// journaled in its queues' memory and wakes their forwarders.
    fn commit(&mut self, batch: Vec<Append>) {
        let store = &self.shared.store;
        if self.failing.load(Ordering::Acquire) {
            refuse(batch, "the spool file cannot be written; see the log");
            return;
        }
        if let Some(reason) = &self.unavailable {
            let reason = reason.clone();
            refuse(batch, &reason);
            return;
        }
        let sizes: Vec<(u64, u64)> = batch
            .iter()
            .map(|a| {
                let records = a.destinations.len() as u64;
                (a.reservation.size() * records, records)
            })
            .collect();
        let admitted = store.admit(&sizes);
        let mut frames = Vec::new();
        let mut prev = self.acked;
        let key = self.journal.key();
        for (append, first) in batch.iter().zip(&admitted) {
            if let Ok(first) = first {
                for (seq, destination) in (*first..).zip(&append.destinations) {
                    let name = destination.name();
                    journal::encode(&mut frames, key, seq, prev, name, &append.record);
                    prev = seq;
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
            let taken: u64 = sizes
                .iter()
                .zip(&admitted)
                .filter(|(_, a)| a.is_ok())
                .map(|((size, _), _)| size)
                .sum();
            store.release(taken);
            self.failed(error, prev);
        } else {
            self.failures = 0;
            self.acked = prev;
        }
        // Each queue given records is woken once, after the whole batch is in memory.
        let mut woken: HashMap<u64, Arc<Queue>> = HashMap::new();
        for (append, admitted) in batch.into_iter().zip(admitted) {
            let result = match (admitted, &written) {
                (Ok(first), Ok(())) => Ok(first),
                (Ok(_), Err(error)) => Err(StoreError::Commit(error.to_string())),
                (Err(error), _) => Err(error),
            };
            match result {
                Ok(first) => {
                    let Append {
                        record,
                        queues,
                        reservation,
                        done,
                        ..
                    } = append;
                    reservation.keep();
                    let _ = done.send(Ok(()));
                    // Answered first; then into memory, where the forwarders take them.
                    let record = Bytes::from(record);
                    for (seq, queue) in (first..).zip(queues) {
                        queue.fresh.push(seq, record.clone());
                        self.journaled = seq;
                        woken.entry(queue.destination.id()).or_insert(queue);
                    }
                }
                Err(error) => append.refuse(error),
            }
        }
        for (id, queue) in woken {
            self.shared.forward(&queue);
            self.touched.insert(id, queue);
        }
    }

    /// After a failed journal write: its frames (up to `last`) were never acknowledged and their
    /// numbers are never used again; the file is abandoned for the other one (the disk may hold
    /// part of the write, or after a failed sync the page cache may hold bytes the disk does
    /// not). Repeated failures, or no other file to go on in, make the spool unavailable.
    fn failed(&mut self, error: &std::io::Error, last: u64) {
        self.journaled = self.journaled.max(last);
        self.failures += 1;
        self.abandoned = true;
        let moved = self.move_on();
        tracing::error!(
            %error,
            failures = self.failures,
            moved,
            "Spool journal write failed; its requests were answered 503."
        );
        if self.failures >= FAILURES_UNAVAILABLE || !moved {
            self.unavailable_for(format!(
                "the spool's disk failed {} write(s) in a row ({error}); requests that need the \
                 spool are refused until a probe succeeds (every {} s)",
                self.failures,
                PROBE_EVERY.as_secs()
            ));
        }
    }

    /// Leaves an abandoned journal file for the other one, once the redb file durably holds
    /// what the abandoned one held. Whether the writer may write again.
    fn move_on(&mut self) -> bool {
        if !self.abandoned {
            return true;
        }
        self.settle(true);
        if !self.other_free {
            self.ask_sync();
            self.settle(true);
            if !self.other_free {
                return false;
            }
        }
        self.ask_sync();
        self.settle(true);
        if !self.other_free {
            return false;
        }
        match self.journal.switch() {
            Ok(()) => {
                self.abandoned = false;
                // The abandoned file's frames are all in the redb file now.
                self.other_free = true;
                true
            }
            Err(error) => {
                tracing::error!(%error, "Spool journal could not be restarted.");
                false
            }
        }
    }

    /// An unavailable spool tries its disk: a fresh journal file, a durable write to it and a
    /// durable commit of the redb file (reopened if it refuses to go on after an error). The
    /// first success puts it back in service.
    fn probe(&mut self) {
        self.probed = Instant::now();
        let store = super::store::FILE_NAME;
        let shared = Arc::clone(&self.shared);
        // The redb file first: after an I/O error it takes nothing until it is reopened, and
        // moving to a fresh journal file needs it.
        let reopened = shared
            .store
            .probe(self.acked, self.journaled, || {
                // The reopened file will hold what memory holds: forwarders take it from there.
                for queue in &shared.queues {
                    queue.fresh.all_in_file();
                }
            })
            .map_err(|e| format!("{store}: {e}"));
        if reopened == Ok(true) {
            self.recount();
        }
        let outcome = reopened
            .and_then(|_| {
                if self.move_on() {
                    Ok(())
                } else {
                    Err(format!(
                        "{store} cannot be made durable, so no fresh journal file"
                    ))
                }
            })
            .and_then(|()| self.journal.probe().map_err(|e| format!("journal: {e}")))
            .and_then(|()| {
                // A sync that succeeds also clears the syncer's failure.
                self.ask_sync();
                self.settle(true);
                if self.other_free {
                    Ok(())
                } else {
                    Err(format!("{store} cannot be made durable"))
                }
            });
        match outcome {
            Ok(()) => {
                tracing::warn!("Spool disk writes succeed again; the spool is back in service.");
                self.failures = 0;
                self.unavailable = None;
                self.shared.writes.set_unavailable(None);
            }
            Err(error) => tracing::warn!(%error, "Spool disk probe failed; still unavailable."),
        }
    }

    /// After the redb file was reopened: each queue's counts are what the file holds for it,
    /// and its forwarder takes them from there.
    fn recount(&self) {
        let held = match self.shared.store.queues() {
            Ok(held) => held,
            Err(error) => {
                tracing::error!(%error, "Spool file unreadable after reopening it.");
                return;
            }
        };
        for queue in &self.shared.queues {
            let (depth, bytes) = held
                .iter()
                .find(|q| q.name == queue.destination.name())
                .map_or((0, 0), |q| (q.depth, q.bytes));
            queue.counts.recounted(depth, bytes);
            self.shared.forward(queue.value());
        }
    }

    /// Moves the journal to its other file when the current one is full enough, or (`tick`)
    /// holds records and [`SYNC_EVERY`] has passed, asking the syncer to make the redb file
    /// durable meanwhile. Waits only when the other file's sync has not finished yet.
    fn rotate(&mut self, tick: bool) {
        self.settle(false);
        let written = self.journal.written();
        let due = written >= journal::SWITCH_AT
            || (tick && written > 0 && self.synced.elapsed() >= SYNC_EVERY);
        if !due {
            if tick && self.pending.is_none() && self.synced.elapsed() >= IDLE_SYNC_EVERY {
                // Nothing written for a while: a sync all the same, so the file's size is
                // measured (and compacted once a backlog was delivered) without new requests.
                self.ask_sync();
            }
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
        // Everything journaled is in memory or delivered: the sync covers it.
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
        let sync = SyncRequest {
            reply,
            queues: self.touched.drain().map(|(_, q)| q).collect(),
            journaled: self.journaled,
        };
        if self.work.as_ref().is_none_or(|w| w.send(sync).is_err()) {
            self.syncer_gone = true;
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
        if !synced && self.unavailable.is_none() {
            self.unavailable_for(format!(
                "{} cannot be made durable (see the log)",
                super::store::FILE_NAME
            ));
        }
    }

    /// Refuses requests at once, and says why on `/health`, until a probe succeeds.
    fn unavailable_for(&mut self, reason: String) {
        tracing::error!(reason = %reason, "Spool unavailable.");
        self.shared.writes.set_unavailable(Some(reason.clone()));
        self.unavailable = Some(reason);
        self.probed = Instant::now();
    }
}

/// The syncer: when the writer asks for a sync, moves what memory still holds to the redb
/// file and makes it durable (on its own thread, so the writer never waits for that fsync). A
/// failed sync sets `failing` (appends are refused: the journal cannot start over) until one
/// succeeds; its queues are tried again with the next.
fn syncer(shared: &Shared, failing: &AtomicBool, rx: std::sync::mpsc::Receiver<SyncRequest>) {
    let mut queues: HashMap<u64, Arc<Queue>> = HashMap::new();
    let mut journaled = 0;
    while let Ok(first) = rx.recv() {
        let mut replies = Vec::new();
        for sync in std::iter::once(first).chain(rx.try_iter()) {
            queues.extend(sync.queues.into_iter().map(|q| (q.destination.id(), q)));
            journaled = journaled.max(sync.journaled);
            replies.push(sync.reply);
        }
        let synced = match fresh::spill(
            &shared.store,
            queues.values().map(|q| (q.destination.name(), &q.fresh)),
            journaled,
            Some(journaled),
        ) {
            Ok(_) => {
                queues.clear();
                failing.store(false, Ordering::Release);
                true
            }
            Err(error) => {
                failing.store(true, Ordering::Release);
                tracing::error!(%error, "Spool file sync failed; the journal keeps the records.");
                false
            }
        };
        for reply in replies {
            let _ = reply.send(synced);
        }
        // After the answer: the writer never waits for a measure or a compaction.
        if synced {
            shared.store.settle_disk();
        }
    }
}

impl Append {
    /// Answers with `error`; its reservation, dropped, gives the counts back.
    fn refuse(self, error: StoreError) {
        let _ = self.done.send(Err(error));
    }
}

/// Answers every append of `batch` with an error.
fn refuse(batch: Vec<Append>, reason: &str) {
    for append in batch {
        append.refuse(StoreError::Commit(reason.to_owned()));
    }
}
