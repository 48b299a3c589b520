//! The spool: deliveries a destination could not take yet (or every delivery of a webhook with
//! `"spool": "always"`), stored on local disk until they are forwarded (`SPOOL_DIR`, one file
//! per instance).
//!
//! The record format ([`record`]), the file ([`store`]), the group commit ([`Spool::store`]: one
//! writer task gathers the appends that arrive while a commit is running into the next
//! transaction, so the spooled path pays one fsync per batch, not one per request), the live
//! per-destination queues ([`queue`]) and their forwarders ([`forward`]).

pub mod forward;
pub mod queue;
pub mod record;
pub mod store;

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use forward::{RetryPolicy, Target};
pub use queue::{Count, Destination, Parts, Queue};
pub use store::{destination_id, DeadLetter, Store, StoreError};

/// When a webhook's deliveries go through the spool (`"spool"` in its entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolMode {
    /// Deliver directly; a destination that fails, times out or already has a backlog gets
    /// the request spooled instead (202).
    #[default]
    OnFailure,
    /// Spool every request (202 once it is on disk); the forwarder delivers it.
    Always,
    /// Never spool: a destination that fails answers 503.
    Off,
}

/// Appends gathered into one transaction at most.
const MAX_BATCH: usize = 512;

/// One request's records waiting for their commit: the same record for each destination.
struct Append {
    destinations: Vec<Destination>,
    record: Vec<u8>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// One request's destinations and record, as the writer commits them.
type Request = (Vec<Destination>, Vec<u8>);

/// Handle to the spool; cloning is cheap.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    appends: mpsc::Sender<Message>,
}

/// What the writer, the forwarders and the handles share.
struct Shared {
    store: Arc<Store>,
    /// Destinations that have (or had) records, by id.
    queues: DashMap<u64, Arc<Queue>>,
    /// Records queued across every destination: 0 lets the request path skip the lookup.
    backlog: Arc<Count>,
    /// Where records go; set by [`Spool::start`] once the config is loaded.
    target: OnceLock<Arc<dyn Target>>,
    tasks: TaskTracker,
    token: CancellationToken,
    /// The runtime forwarders run on (the main one: an append may come from an HTTP worker's
    /// own runtime, which must not carry them).
    runtime: tokio::runtime::Handle,
}

/// Why a request could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the spool writer has stopped")]
    Stopped,
}

impl SpoolError {
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Store(StoreError::Full { .. }))
    }
}

/// One destination's queue, as `/status`, `/metrics` and `switchyard spool status` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueReport {
    pub destination: String,
    pub depth: u64,
    pub bytes: u64,
    /// Age of the oldest queued record, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// Failed attempts since start.
    pub retries: u64,
    pub dead_letters: u64,
    /// Records forwarded since start.
    pub delivered: u64,
}

/// The whole spool, as reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpoolReport {
    pub bytes_used: u64,
    pub bytes_max: u64,
    pub bytes_free: u64,
    /// Records waiting across every destination.
    pub backlog: u64,
    pub dead_letters: u64,
    pub queues: Vec<QueueReport>,
}

/// A dead letter, decoded for an operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterReport {
    pub id: u64,
    pub destination: String,
    pub request_id: String,
    pub received_at: String,
    pub attempts: u32,
    pub last_error: String,
    pub body_bytes: usize,
}

impl DeadLetterReport {
    /// From a stored dead letter's record, without copying its body.
    pub fn from_stored(seq: u64, destination: &str, record: &[u8]) -> Self {
        let (request_id, received_at, attempts, last_error, body_bytes) =
            match record::Summary::decode(record) {
                Ok(r) => (
                    r.request_id,
                    humantime::format_rfc3339_millis(r.received_at).to_string(),
                    r.attempts,
                    r.last_error,
                    r.body_bytes,
                ),
                Err(damaged) => (String::new(), String::new(), 0, damaged.to_string(), 0),
            };
        Self {
            id: seq,
            destination: destination.to_owned(),
            request_id,
            received_at,
            attempts,
            last_error,
            body_bytes,
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Age of a queue's oldest record.
fn oldest_age(store: &Store, id: u64, now: SystemTime) -> Option<f64> {
    let received = store.oldest_received_at(id).ok()??;
    Some(
        now.duration_since(received)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

/// The spool as its file tells it (no instance running: no live counters since start).
pub fn report_of(store: &Store) -> Result<SpoolReport, StoreError> {
    let now = SystemTime::now();
    let dead = store.dead_counts()?;
    let mut queues: Vec<QueueReport> = store
        .queues()?
        .into_iter()
        .map(|q| QueueReport {
            oldest_age_seconds: oldest_age(store, destination_id(&q.name), now),
            dead_letters: dead.get(&q.name).copied().unwrap_or(0),
            destination: q.name,
            depth: q.depth,
            bytes: q.bytes,
            retries: 0,
            delivered: 0,
        })
        .collect();
    for (name, count) in &dead {
        if !queues.iter().any(|q| &q.destination == name) {
            queues.push(QueueReport {
                destination: name.clone(),
                depth: 0,
                bytes: 0,
                oldest_age_seconds: None,
                retries: 0,
                dead_letters: *count,
                delivered: 0,
            });
        }
    }
    queues.sort_by(|a, b| a.destination.cmp(&b.destination));
    let used = store.used();
    Ok(SpoolReport {
        bytes_used: used,
        bytes_max: store.max_bytes(),
        bytes_free: store.max_bytes().saturating_sub(used),
        backlog: queues.iter().map(|q| q.depth).sum(),
        dead_letters: dead.values().sum(),
        queues,
    })
}

impl Spool {
    /// Opens the spool file in `dir` (created if missing; a file left by a crash is repaired by
    /// redb here) and starts its writer. Must run inside the runtime the forwarders will use. Forwarding starts with
    /// [`Spool::start`].
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        tasks: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let store = Arc::new(Store::open(&dir.join(store::FILE_NAME), max_bytes)?);
        let backlog = Arc::new(Count::default());
        let queues = DashMap::new();
        let dead = store.dead_counts()?;
        for stats in store.queues()? {
            let queue = Queue::new(Destination::named(&stats.name), Arc::clone(&backlog));
            queue.added(stats.depth, stats.bytes);
            if let Some(count) = dead.get(&stats.name) {
                queue.dead.set(*count);
            }
            queues.insert(queue.destination.id(), Arc::new(queue));
        }
        for (name, count) in dead {
            let destination = Destination::named(&name);
            queues
                .entry(destination.id())
                .or_insert_with(|| Arc::new(Queue::new(destination, Arc::clone(&backlog))))
                .dead
                .set(count);
        }
        let shared = Arc::new(Shared {
            store,
            queues,
            backlog,
            target: OnceLock::new(),
            tasks: tasks.clone(),
            token,
            runtime: tokio::runtime::Handle::current(),
        });
        let (appends, rx) = mpsc::channel(MAX_BATCH * 4);
        let writer = Arc::clone(&shared.store);
        let (ended, writer_ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                write(&writer, rx);
                // The file is closed once the last handle is gone: this one goes first.
                drop(writer);
                let _ = ended.send(());
            })?;
        // A stop reaches the writer as a message; the task ends when the writer has committed
        // what it was handed, so the shutdown waits for it.
        let stop = appends.clone();
        let token = shared.token.clone();
        tasks.spawn(async move {
            token.cancelled().await;
            let _ = stop.send(Message::Stop).await;
            let _ = writer_ended.await;
        });
        Ok(Self { shared, appends })
    }

    /// Starts forwarding to `target`: a forwarder for every destination with records now, and
    /// for each one that gets its first record later.
    pub fn start(&self, target: Arc<dyn Target>) {
        if self.shared.target.set(target).is_err() {
            return;
        }
        for queue in self.shared.queues.iter() {
            if queue.depth() > 0 {
                self.shared.forward(queue.value());
            }
        }
    }

    /// Whether `destination` has records waiting (new deliveries then queue behind them).
    pub fn has_backlog(&self, destination: &Destination) -> bool {
        self.shared.backlog.get() > 0
            && self
                .shared
                .queues
                .get(&destination.id())
                .is_some_and(|q| q.depth() > 0)
    }

    /// Stores one request's `record` for each of `destinations`, all or none; returns once it
    /// is on disk (fsync). Concurrent calls share one commit.
    pub async fn store(
        &self,
        destinations: Vec<Destination>,
        record: Vec<u8>,
    ) -> Result<(), SpoolError> {
        // Counted before the commit, so requests that arrive meanwhile queue behind this one
        // instead of overtaking it; taken back if the commit does not happen.
        let size = store::footprint(&record);
        let queues: Vec<Arc<Queue>> = destinations.iter().map(|d| self.shared.queue(d)).collect();
        for queue in &queues {
            queue.added(1, size);
        }
        let (done, result) = oneshot::channel();
        let sent = self
            .appends
            .send(Message::Append(Append {
                destinations,
                record,
                done,
            }))
            .await;
        let outcome = match sent {
            Ok(()) => match result.await {
                Ok(committed) => committed.map_err(SpoolError::from),
                Err(_) => Err(SpoolError::Stopped),
            },
            Err(_) => Err(SpoolError::Stopped),
        };
        for queue in &queues {
            match outcome {
                Ok(()) => self.shared.forward(queue),
                Err(_) => queue.removed(1, size),
            }
        }
        outcome
    }

    /// Records waiting across every destination.
    pub fn backlog(&self) -> u64 {
        self.shared.backlog.get()
    }

    /// Bytes in the file's records (kept in memory: no read per call).
    pub fn bytes_used(&self) -> u64 {
        self.shared.store.used()
    }

    pub fn bytes_max(&self) -> u64 {
        self.shared.store.max_bytes()
    }

    /// Every destination that has records or dead letters, or had some since start. Reads the
    /// file (the age of each oldest record): call it off the async threads.
    pub fn report(&self) -> SpoolReport {
        let now = SystemTime::now();
        let store = &self.shared.store;
        // Taken out of the map first: no shard lock is held while the file is read.
        let live: Vec<Arc<Queue>> = self
            .shared
            .queues
            .iter()
            .map(|q| Arc::clone(q.value()))
            .collect();
        let mut queues: Vec<QueueReport> = live
            .iter()
            .map(|q| {
                let depth = q.depth();
                QueueReport {
                    destination: q.destination.name().to_owned(),
                    depth,
                    bytes: q.bytes.get(),
                    oldest_age_seconds: if depth > 0 {
                        oldest_age(store, q.destination.id(), now)
                    } else {
                        None
                    },
                    retries: q.retries.load(Ordering::Relaxed),
                    dead_letters: q.dead.get(),
                    delivered: q.delivered.load(Ordering::Relaxed),
                }
            })
            .collect();
        queues.sort_by(|a, b| a.destination.cmp(&b.destination));
        let used = self.bytes_used();
        SpoolReport {
            bytes_used: used,
            bytes_max: self.bytes_max(),
            bytes_free: self.bytes_max().saturating_sub(used),
            backlog: self.backlog(),
            dead_letters: queues.iter().map(|q| q.dead_letters).sum(),
            queues,
        }
    }

    /// Up to `limit` dead letters, oldest first (bodies are not read).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterReport>, StoreError> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || store.dead_letter_reports(limit)).await
    }

    /// Puts dead letters (all, or `ids`) back into their forwarders' queues; returns how many.
    pub async fn replay(&self, ids: Option<Vec<u64>>) -> Result<usize, StoreError> {
        let store = Arc::clone(&self.shared.store);
        let moved = blocking(move || store.replay(ids.as_deref(), now_ms())).await?;
        for (name, bytes) in &moved {
            let queue = self.shared.queue(&Destination::named(name));
            queue.dead.sub(1);
            queue.added(1, *bytes);
            self.shared.forward(&queue);
        }
        Ok(moved.len())
    }

    /// Deletes dead letters (all, or `ids`); returns how many.
    pub async fn purge(&self, ids: Option<Vec<u64>>) -> Result<usize, StoreError> {
        let store = Arc::clone(&self.shared.store);
        let purged = blocking(move || store.purge(ids.as_deref())).await?;
        for name in &purged {
            if let Some(queue) = self.shared.queues.get(&Destination::named(name).id()) {
                queue.dead.sub(1);
            }
        }
        Ok(purged.len())
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Commit(e.to_string()))?
}

impl Shared {
    /// The live queue of `destination`, created on first use.
    fn queue(&self, destination: &Destination) -> Arc<Queue> {
        Arc::clone(
            self.queues
                .entry(destination.id())
                .or_insert_with(|| {
                    Arc::new(Queue::new(destination.clone(), Arc::clone(&self.backlog)))
                })
                .value(),
        )
    }

    /// Wakes the forwarder of `queue`, starting it if it is not running (and forwarding has
    /// started).
    fn forward(&self, queue: &Arc<Queue>) {
        queue.appended.notify_one();
        let Some(target) = self.target.get() else {
            return;
        };
        if queue.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let forwarder = forward::Forwarder::new(
            Arc::clone(&self.store),
            Arc::clone(queue),
            Arc::clone(target),
        );
        self.tasks
            .spawn_on(forwarder.run(self.token.clone()), &self.runtime);
    }
}

/// What the writer thread is sent.
enum Message {
    Append(Append),
    /// Commit what was already handed over, then end.
    Stop,
}

/// The writer, on a thread of its own (a commit blocks on fsync): takes every append that is
/// waiting, commits them in one transaction, answers each, repeats, until told to stop.
fn write(store: &Store, mut rx: mpsc::Receiver<Message>) {
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
                let destination = Destination::new("acme", "gh", i % 3, "log", None);
                spool
                    .store(vec![destination], format!("r{i}").into_bytes())
                    .await
            })
        });
        let results = futures_util::future::join_all(appends).await;
        assert!(results.iter().all(|r| matches!(r, Ok(Ok(())))));
        assert_eq!(spool.backlog(), 500);
        assert!(spool.has_backlog(&Destination::new("acme", "gh", 1, "log", None)));
        assert!(!spool.has_backlog(&Destination::new("acme", "gh", 9, "log", None)));
        drop(spool);
        token.cancel();
        tasks.close();
        tasks.wait().await;

        let tasks = TaskTracker::new();
        let spool = Spool::open(dir.path(), 1 << 30, &tasks, CancellationToken::new()).unwrap();
        assert_eq!(
            spool.backlog(),
            500,
            "the live counts are rebuilt from the file"
        );
        let report = spool.report();
        assert_eq!(report.queues.len(), 3);
        assert_eq!(report.queues.iter().map(|q| q.depth).sum::<u64>(), 500);
    }

    #[tokio::test]
    async fn a_request_for_several_destinations_is_stored_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let spool = Spool::open(dir.path(), 1 << 20, &tasks, CancellationToken::new()).unwrap();
        let two = || {
            vec![
                Destination::new("acme", "gh", 0, "log", None),
                Destination::new("acme", "gh", 1, "log", None),
            ]
        };
        spool.store(two(), vec![0; 400 * 1024]).await.unwrap();
        let full = spool.store(two(), vec![0; 400 * 1024]).await.unwrap_err();
        assert!(full.is_full(), "{full}");
        assert_eq!(
            spool.backlog(),
            2,
            "the refused request left nothing behind"
        );
    }
}
