//! The spool: deliveries a destination could not take yet (or every delivery of a webhook with
//! `"spool": "always"`), stored on local disk until they are forwarded (`SPOOL_DIR`: a journal
//! and a redb file, one directory per instance).
//!
//! [`record`] is the format, [`store`] the file, [`journal`] where an append becomes durable,
//! `writer` the group commit (the appends that arrive together share one durable journal
//! write, made by the spool's writer thread: no HTTP worker waits on the disk),
//! [`queue`] the live per-destination counters, [`forward`] the forwarders, [`report`] what
//! operators see. [`Spool`] is the handle that ties them together.

pub mod damage;
mod files;
pub mod forward;
pub mod fresh;
pub mod journal;
pub mod ledger;
#[cfg(test)]
mod model;
pub mod queue;
pub mod record;
pub mod report;
pub mod store;
mod writer;

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc, OnceLock},
    time::SystemTime,
};

use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::clock::now_ms;
pub use forward::{RetryPolicy, Target};
pub use ledger::Ledger;
pub use queue::{Destination, Parts, Place, Queue};
use report::oldest_age;
pub use report::{report_of, DeadLetterReport, QueueReport, SpoolReport};
pub use store::{destination_id, DeadLetter, Store, StoreError};
use writer::{Append, Message, SYNC_EVERY};

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

/// Clears a flag when dropped.
struct Alive<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How much the spool may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `SPOOL_MAX_BYTES`: the file's records and dead letters.
    pub max_bytes: u64,
    /// Queued bytes one namespace may hold (`SPOOL_NAMESPACE_SHARE` of `max_bytes`).
    pub namespace_max: u64,
    /// `SPOOL_MAX_FORWARDS`: forwarding steps running at once, whatever the number of
    /// destinations with a backlog (each step may hold a blocking thread and a batch).
    pub forwards: usize,
    /// `SPOOL_WRITE_TIMEOUT_MS`: a request whose commit takes longer is answered 503, never
    /// 202.
    pub write_timeout: std::time::Duration,
    /// `SPOOL_ON_DAMAGE`: refuse damaged files, or salvage what is readable.
    pub on_damage: damage::OnDamage,
}

/// How long a request waits for its commit by default.
pub const DEFAULT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Forwarding steps at once by default: a handful of destinations keep a blocking thread each
/// at most, so threads and memory do not grow with the destinations that have a backlog.
pub const DEFAULT_FORWARDS: usize = 16;

impl Limits {
    /// `share` percent of `max_bytes` for each namespace.
    pub fn new(max_bytes: u64, share: u8) -> Self {
        Self {
            max_bytes,
            namespace_max: max_bytes / 100 * u64::from(share.min(100)),
            forwards: DEFAULT_FORWARDS,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            on_damage: damage::OnDamage::Refuse,
        }
    }

    /// The same limits with damaged files handled as `on_damage` says.
    pub fn with_on_damage(self, on_damage: damage::OnDamage) -> Self {
        Self { on_damage, ..self }
    }

    /// The same limits with requests waiting at most `timeout` for their commit.
    pub fn with_write_timeout(self, timeout: std::time::Duration) -> Self {
        Self {
            write_timeout: timeout,
            ..self
        }
    }

    /// The same limits with `forwards` steps at once (at least 1).
    pub fn with_forwards(self, forwards: usize) -> Self {
        Self {
            forwards: forwards.max(1),
            ..self
        }
    }
}

/// The namespace whose share `destination`'s records count against.
fn namespace_of(destination: &Destination) -> &str {
    destination
        .parts()
        .map_or("", |p| p.webhook.namespace.as_str())
}

/// Handle to the spool; cloning is cheap.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    /// To the writer thread.
    handoff: tokio::sync::mpsc::Sender<Message>,
}

/// What the writer, the forwarders and the handles share.
struct Shared {
    store: Arc<Store>,
    /// Destinations that have (or had) records, by id.
    queues: DashMap<u64, Arc<Queue>>,
    /// The spool's numbers (the backlog, each destination's and namespace's counts).
    ledger: Ledger,
    /// Where records go; set by [`Spool::start`] once the config is loaded.
    target: OnceLock<Arc<dyn Target>>,
    tasks: TaskTracker,
    token: CancellationToken,
    /// Requests can be journaled (cleared on a stop, or by a panic inside the store or a
    /// commit).
    writer_alive: std::sync::atomic::AtomicBool,
    /// The runtime forwarders run on (the main one: an append may come from an HTTP worker's
    /// own runtime, which must not carry them).
    runtime: tokio::runtime::Handle,
    /// One permit per forwarding step running (`Limits::forwards`).
    forwards: Arc<tokio::sync::Semaphore>,
    /// How long the writer's commits take (`/health`), and how long a request waits for one.
    writes: writer::WriteTiming,
}

/// Why a request could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the spool writer has stopped")]
    Stopped,
    /// The commit did not finish within `SPOOL_WRITE_TIMEOUT_MS` (a slow or stuck disk).
    #[error("the spool's disk did not finish the write within {} ms", timeout.as_millis())]
    SlowDisk { timeout: std::time::Duration },
    /// The namespace holds its whole share of the spool (`SPOOL_NAMESPACE_SHARE`).
    #[error("namespace `{namespace}` holds its share of the spool ({max} bytes)")]
    NamespaceFull { namespace: String, max: u64 },
}

impl SpoolError {
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Full { .. }) | Self::NamespaceFull { .. }
        )
    }
}

impl Spool {
    /// Opens the spool file in `dir` (created if missing; a file left by a crash is repaired by
    /// redb here) and starts its writer. Must run inside the runtime the forwarders will use.
    /// Forwarding starts with [`Spool::start`].
    pub fn open(
        dir: &Path,
        limits: Limits,
        tasks: &TaskTracker,
        token: CancellationToken,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let (store, salvaged) = Store::open_with(
            &dir.join(store::FILE_NAME),
            limits.max_bytes,
            limits.on_damage,
        )?;
        if let Some(damage) = salvaged {
            tracing::error!(
                dir = %dir.display(),
                damage = %damage,
                "Spool files were damaged; every readable record was kept (SPOOL_ON_DAMAGE=salvage)."
            );
        }
        let store = Arc::new(store);
        // After the store, which applied what the journal held.
        let journal = journal::Journal::open(dir)?;
        store.journal_created()?;
        let ledger = Ledger::new(limits.namespace_max);
        let queues: DashMap<u64, Arc<Queue>> = DashMap::new();
        let queue_of = |name: &str| {
            let destination = Destination::named(name);
            Arc::clone(
                queues
                    .entry(destination.id())
                    .or_insert_with(|| {
                        let counts = ledger.counts(namespace_of(&destination));
                        Arc::new(Queue::new(destination, counts))
                    })
                    .value(),
            )
        };
        for stats in store.queues()? {
            let queue = queue_of(&stats.name);
            queue.counts.restored(stats.depth, stats.bytes, 0, 0);
            queue.fresh.mark_in_file();
        }
        // Dead letters count against their namespace's share too (until replayed or purged).
        for (name, (count, bytes)) in store.dead_counts()? {
            queue_of(&name).counts.restored(0, 0, count, bytes);
        }
        let shared = Arc::new(Shared {
            store,
            queues,
            ledger,
            target: OnceLock::new(),
            tasks: tasks.clone(),
            token,
            runtime: tokio::runtime::Handle::current(),
            writer_alive: std::sync::atomic::AtomicBool::new(true),
            forwards: Arc::new(tokio::sync::Semaphore::new(limits.forwards)),
            writes: writer::WriteTiming::new(limits.write_timeout),
        });
        let (writer, handoff, rx) = writer::start(Arc::clone(&shared), journal)?;
        let (ended, writer_ended) = oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                {
                    // Cleared however the writer ends, a panic included: /health says so.
                    let _alive = Alive(&serving.writer_alive);
                    writer::serve(writer, rx);
                }
                // The files are closed once the last handle is gone: the writer's went with
                // it, this one goes before the stop task hears that the writer ended.
                drop(serving);
                let _ = ended.send(());
            })?;
        // A stop reaches the writer as a message; the task ends when the writer has committed
        // what it was handed, so the shutdown waits for it.
        let stop = handoff.clone();
        let token = shared.token.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(SYNC_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = ticks.tick() => {
                        // A full channel means the writer is busy and syncs by itself.
                        let _ = stop.try_send(Message::Tick);
                    }
                }
            }
            let _ = stop.send(Message::Stop).await;
            let _ = writer_ended.await;
        });
        Ok(Self { shared, handoff })
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

    /// Keeps `destination`'s forwarder from calling it for `wait` (it asked for a pause).
    pub fn hold(&self, destination: &Destination, wait: std::time::Duration) {
        let queue = self.shared.queue(destination);
        let until = std::time::Instant::now() + wait;
        if let Ok(mut held) = queue.held_until.lock() {
            *held = Some(held.map_or(until, |at| at.max(until)));
        };
    }

    /// Whether `destination` has records waiting (new deliveries then queue behind them).
    pub fn has_backlog(&self, destination: &Destination) -> bool {
        self.shared.ledger.backlog() > 0
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
        // One namespace may not take the whole spool from the others.
        let counts = queues.iter().map(|q| Arc::clone(&q.counts)).collect();
        let reservation = self.shared.ledger.reserve(counts, size).map_err(|taken| {
            SpoolError::NamespaceFull {
                namespace: taken.namespace,
                max: taken.max,
            }
        })?;
        // The reservation travels with the append: dropped anywhere before its commit (this
        // future dropped, the writer stopped, the commit refused), it gives the counts back.
        let (done, result) = oneshot::channel();
        let append = Append {
            destinations,
            record,
            queues,
            reservation,
            done,
        };
        // The writer thread commits; this request waits for its batch, at most the write
        // timeout (a full hand-over queue means a stuck disk too). Past it the answer is 503:
        // the record may still be committed and delivered later (a duplicate for a sender that
        // retries, never a loss), but no request is told 202 before its record is durable.
        let timeout = self.shared.writes.timeout();
        let committed = tokio::time::timeout(timeout, async {
            // A closed channel: the writer has stopped.
            if self.handoff.send(Message::Append(append)).await.is_err() {
                return Err(SpoolError::Stopped);
            }
            match result.await {
                Ok(committed) => committed.map_err(SpoolError::from),
                Err(_) => Err(SpoolError::Stopped),
            }
        })
        .await;
        committed.unwrap_or(Err(SpoolError::SlowDisk { timeout }))
    }

    /// Why the spool's disk counts as slow now (`/health` shows the spool `degraded`).
    pub fn degraded(&self) -> Option<String> {
        self.shared.writes.degraded()
    }

    /// Why the spool cannot store anything now (its disk fails writes; it probes and comes
    /// back by itself), if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.shared.writes.unavailable()
    }

    /// Whether requests can still be stored (the writer runs).
    pub fn is_writing(&self) -> bool {
        self.shared.writer_alive.load(Ordering::Acquire)
    }

    /// Records waiting across every destination.
    pub fn backlog(&self) -> u64 {
        self.shared.ledger.backlog()
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
                    bytes: q.counts.bytes(),
                    oldest_age_seconds: if depth > 0 {
                        oldest_age(store, q.destination.id(), Some(&q.fresh), now)
                    } else {
                        None
                    },
                    retries: q.retries.load(Ordering::Relaxed),
                    dead_letters: q.counts.dead(),
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
        for (name, dead_bytes, bytes) in &moved {
            let queue = self.shared.queue(&Destination::named(name));
            queue.counts.replayed(*dead_bytes, *bytes);
            queue.fresh.mark_in_file();
            self.shared.forward(&queue);
        }
        Ok(moved.len())
    }

    /// Deletes dead letters (all, or `ids`); returns how many.
    pub async fn purge(&self, ids: Option<Vec<u64>>) -> Result<usize, StoreError> {
        let store = Arc::clone(&self.shared.store);
        let purged = blocking(move || store.purge(ids.as_deref())).await?;
        for (name, bytes) in &purged {
            let queue = self.shared.queue(&Destination::named(name));
            queue.counts.purged(*bytes);
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
                    Arc::new(Queue::new(
                        destination.clone(),
                        self.ledger.counts(namespace_of(destination)),
                    ))
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
            Arc::clone(&self.forwards),
        );
        self.tasks
            .spawn_on(forwarder.run(self.token.clone()), &self.runtime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// On an HTTP worker's runtime (single-threaded) and on a multi-threaded one alike, appends
    /// go to the writer thread and are committed in batches.
    #[tokio::test]
    async fn concurrent_appends_are_all_stored_and_survive_a_reopen() {
        appends_are_all_stored_and_survive_a_reopen().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_from_a_multi_threaded_runtime_are_all_stored_and_survive_a_reopen() {
        appends_are_all_stored_and_survive_a_reopen().await;
    }

    #[tokio::test]
    async fn a_request_whose_client_went_away_after_the_hand_over_is_still_committed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open_small(dir.path());
        let one = || vec![queue::test_destination("acme", "gh", "0")];
        let mut leader = Box::pin(spool.store(one(), b"first".to_vec()));
        assert!(futures_util::poll!(leader.as_mut()).is_pending());
        let mut follower = Box::pin(spool.store(one(), b"second".to_vec()));
        assert!(futures_util::poll!(follower.as_mut()).is_pending());
        // The client of the first request disconnects once its record was handed over, before
        // it was answered: the record is committed and counted all the same.
        drop(leader);
        let answered = tokio::time::timeout(Duration::from_secs(5), follower).await;
        assert!(
            matches!(answered, Ok(Ok(()))),
            "the second request is committed: {answered:?}"
        );
        assert_eq!(
            spool.backlog(),
            2,
            "the first request's record was handed over and stays counted"
        );
        let report = spool.report();
        assert_eq!(report.queues.iter().map(|q| q.depth).sum::<u64>(), 2);
    }

    /// A spool of 1 MiB in `dir`, never stopped.
    fn open_small(dir: &Path) -> Spool {
        let tasks = TaskTracker::new();
        Spool::open(
            dir,
            Limits::new(1 << 20, 100),
            &tasks,
            CancellationToken::new(),
        )
        .unwrap()
    }

    async fn appends_are_all_stored_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let token = CancellationToken::new();
        let spool =
            Spool::open(dir.path(), Limits::new(1 << 30, 100), &tasks, token.clone()).unwrap();
        let appends = (0..500).map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let destination = queue::test_destination("acme", "gh", &(i % 3).to_string());
                spool
                    .store(vec![destination], format!("r{i}").into_bytes())
                    .await
            })
        });
        let results = futures_util::future::join_all(appends).await;
        assert!(results.iter().all(|r| matches!(r, Ok(Ok(())))));
        assert_eq!(spool.backlog(), 500);
        assert!(spool.has_backlog(&queue::test_destination("acme", "gh", "1")));
        assert!(!spool.has_backlog(&queue::test_destination("acme", "gh", "9")));
        drop(spool);
        token.cancel();
        tasks.close();
        tasks.wait().await;

        let tasks = TaskTracker::new();
        let spool = Spool::open(
            dir.path(),
            Limits::new(1 << 30, 100),
            &tasks,
            CancellationToken::new(),
        )
        .unwrap();
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
        let spool = open_small(dir.path());
        let two = || {
            vec![
                queue::test_destination("acme", "gh", "0"),
                queue::test_destination("acme", "gh", "1"),
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

#[cfg(test)]
mod share_tests {
    use super::*;

    #[tokio::test]
    async fn one_namespace_cannot_take_the_others_share_of_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let limits = Limits::new(1 << 20, 25);
        let spool = Spool::open(dir.path(), limits, &tasks, CancellationToken::new()).unwrap();
        let hostile = || vec![queue::test_destination("hostile", "w", "0")];
        let mut stored = 0;
        let refusal = loop {
            match spool.store(hostile(), vec![0; 10_000]).await {
                Ok(()) => stored += 1,
                Err(error) => break error,
            }
            assert!(stored < 100, "the share must run out");
        };
        assert!(refusal.is_full(), "{refusal}");
        assert!(refusal.to_string().contains("`hostile`"), "{refusal}");
        assert_eq!(
            stored,
            (1 << 20) / 100 * 25 / store::footprint(&[0; 10_000]),
            "a quarter of 1 MiB in 10 kB records"
        );
        let victim = vec![queue::test_destination("victim", "w", "0")];
        spool.store(victim, vec![0; 10_000]).await.unwrap();
        assert_eq!(
            spool.backlog(),
            stored + 1,
            "the refused request left nothing behind"
        );
    }
}

#[cfg(test)]
mod dead_share_tests {
    use super::*;
    use crate::modules::Delivery;

    /// A destination that is always down, with one attempt per record.
    struct Down;

    #[async_trait::async_trait]
    impl Target for Down {
        async fn deliver(
            &self,
            _: &Destination,
            deliveries: &[Delivery],
        ) -> Vec<Result<(), crate::modules::DeliveryError>> {
            deliveries
                .iter()
                .map(|_| {
                    Err(crate::modules::DeliveryError::Unavailable {
                        module: "test",
                        reason: "down".into(),
                    })
                })
                .collect()
        }

        fn policy(&self, _: &Destination) -> RetryPolicy {
            RetryPolicy {
                max_attempts: Some(1),
                ..RetryPolicy::default()
            }
        }
    }

    #[tokio::test]
    async fn dead_letters_keep_counting_against_their_namespace_until_purged() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = TaskTracker::new();
        let limits = Limits::new(1 << 20, 25);
        let spool = Spool::open(dir.path(), limits, &tasks, CancellationToken::new()).unwrap();
        spool.start(Arc::new(Down));
        let hostile = || vec![queue::test_destination("hostile", "w", "0")];
        let delivery = Delivery {
            namespace: crate::keys::Namespace::parse("hostile").unwrap(),
            webhook: crate::keys::WebhookId::parse("w").unwrap(),
            request_id: "r".into(),
            received_at: SystemTime::now(),
            headers: vec![],
            body: bytes::Bytes::from(vec![b'1'; 10_000]),
            json: false,
            trace: None,
            relayed: Vec::new(),
        };
        let record = || record::SpooledDelivery::encode_new(&delivery);
        let mut stored = 0;
        while spool.store(hostile(), record()).await.is_ok() {
            stored += 1;
            assert!(
                stored < 100,
                "records turned dead letters must not free the share"
            );
            // Let the forwarder fail it into the dead letters.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while spool.report().dead_letters < stored {
                assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        assert!(stored >= 20, "{stored}");
        assert_eq!(spool.purge(None).await.unwrap(), stored as usize);
        spool.store(hostile(), record()).await.unwrap();
    }
}
