//! The forwarder of one destination: hands its spooled records over in arrival order, retries a
//! failure with exponential backoff and jitter, and moves a record that ran out of retries to
//! the dead letters. A record leaves the queue only once the destination acknowledged it.
//!
//! It knows destinations only through [`Target`], so the request path can plug in the live
//! routes and tests a fake.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use super::{
    fresh::{self, Next},
    queue::{Destination, Queue},
    record::SpooledDelivery,
    store::{footprint, Store, StoreError},
};
use crate::modules::{Delivery, DeliveryError};

/// Where a destination's records go.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// Hands deliveries to `destination` in order, all at once; one result each, `Ok` once it
    /// acknowledged. A permanent error sends the record to the dead letters at once.
    async fn deliver(
        &self,
        destination: &Destination,
        deliveries: &[Delivery],
    ) -> Vec<Result<(), DeliveryError>>;
    /// The retry horizon of `destination`'s webhook (as configured now).
    fn policy(&self, destination: &Destination) -> RetryPolicy;
}

/// How long and how often a record is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A record older than this goes to the dead letters (`retry.max_age_seconds`).
    pub max_age: Duration,
    /// At most this many attempts (`retry.max_attempts`), when set.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    /// Three days, no attempt limit (the default horizon).
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(3 * 24 * 3600),
            max_attempts: None,
        }
    }
}

/// The first retry delay; doubled after each failure up to [`MAX_RETRY_DELAY`].
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// At most a minute between attempts, so a destination that is back is used again soon.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The delay after `failures` consecutive failures (1 or more), jittered down by up to 25% so
/// many instances do not retry a recovering destination in step. `jitter` is in [0, 1).
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = MIN_RETRY_DELAY
        .saturating_mul(1 << exponent)
        .min(MAX_RETRY_DELAY);
    base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

/// Longest destination error kept with a record.
const MAX_ERROR_LEN: usize = 1024;

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// What a forwarding step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing queued.
    Idle,
    /// Every record taken was delivered (more may be waiting).
    Delivered,
    /// A record failed; try again after the delay.
    Retry(Duration),
    /// A record ran out of retries (or was unreadable) and moved to the dead letters.
    DeadLettered,
}

/// Records taken per step, and at most this many bytes of them: delivered one by one in order,
/// then removed in one commit (a crash in between redelivers them: duplicates, never a loss).
const BATCH: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// While records keep coming, a forwarder that emptied its queue waits until this long after
/// its last delivery before the next, so the records of those milliseconds go in one batch:
/// one round trip and, for Redis, one AOF fsync for all of them (measured: +8% spooled
/// throughput, see BENCHMARKS.md). After a quiet spell the first record goes at once.
const GATHER: Duration = Duration::from_millis(2);

/// Why a record was not delivered.
enum Failure {
    /// The record no longer makes a delivery (a name that no longer parses).
    Damaged(super::record::Damaged),
    /// The destination refused or could not be reached.
    Refused(DeliveryError),
}

impl Failure {
    /// Whether another attempt cannot help: the record goes to the dead letters now.
    fn is_final(&self) -> bool {
        match self {
            Self::Damaged(_) => true,
            Self::Refused(error) => error.is_permanent(),
        }
    }

    fn into_string(self) -> String {
        match self {
            Self::Damaged(damaged) => damaged.to_string(),
            Self::Refused(error) => error.to_string(),
        }
    }
}

/// One destination's forwarder.
pub struct Forwarder {
    store: Arc<Store>,
    queue: Arc<Queue>,
    target: Arc<dyn Target>,
    /// Whether the next step sends its first record alone: at start and after a failure.
    probing: AtomicBool,
    /// Held for each step: bounds the steps running at once across every forwarder.
    steps: Arc<tokio::sync::Semaphore>,
}

impl Forwarder {
    /// A forwarder whose steps each take a permit of `steps`, shared by every forwarder.
    pub fn new(
        store: Arc<Store>,
        queue: Arc<Queue>,
        target: Arc<dyn Target>,
        steps: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            store,
            queue,
            target,
            probing: AtomicBool::new(true),
            steps,
        }
    }

    fn name(&self) -> &str {
        self.queue.destination.name()
    }

    /// Forwards the oldest records (the file's first, then memory's: see `super::fresh`) at
    /// once, handed over in order (`Module::deliver_all`: one Redis transaction, or sends
    /// queued in order on one connection, so a batch costs one round trip, not one per record).
    /// At start and after a failure the first one goes alone (a probe: while the destination is
    /// down, nothing else is tried), then the rest. Only a failure inside a batch can let a
    /// later record arrive before an earlier one's retry. Stops early when `token` is cancelled
    /// (the rest stays on disk).
    pub async fn step(
        &self,
        now: SystemTime,
        token: &CancellationToken,
    ) -> Result<Step, StoreError> {
        let (batch, from_file) = self.take().await?;
        let mut records = Vec::with_capacity(batch.len());
        for (seq, bytes) in batch {
            match SpooledDelivery::decode(&bytes) {
                // Refused for good when first tried: straight to the dead letters.
                Ok(record) if record.refused && records.is_empty() => {
                    if !from_file {
                        self.spill().await?;
                    }
                    tracing::warn!(
                        destination = %self.name(),
                        request_id = %record.delivery.request_id,
                        error = %record.last_error,
                        "Refused for good when first tried; moved to the dead letters."
                    );
                    self.dead_letter(seq, bytes.to_vec()).await?;
                    return Ok(Step::DeadLettered);
                }
                // Handled when it is first in line.
                Ok(record) if record.refused => break,
                Ok(record) => records.push((seq, record)),
                // Dealt with from the file (next step).
                Err(_) if records.is_empty() && !from_file => {
                    self.spill().await?;
                    return Ok(Step::Delivered);
                }
                Err(_) if records.is_empty() => {
                    // Never delivered, never dropped: kept where an operator can see it.
                    tracing::error!(
                        destination = %self.name(),
                        seq,
                        "Unreadable spooled record moved to the dead letters."
                    );
                    self.dead_letter(seq, bytes.to_vec()).await?;
                    return Ok(Step::DeadLettered);
                }
                // Handled when it is first in line.
                Err(_) => break,
            }
        }
        if records.is_empty() || token.is_cancelled() {
            return Ok(Step::Idle);
        }
        // After a failure (or at start) the first record goes alone: while the destination is
        // down, nothing else is tried. Once it took one, whole batches go at once.
        let alone = if self.probing.load(Ordering::Relaxed) {
            1
        } else {
            records.len()
        };
        let (head, rest) = records.split_at(alone);
        let mut delivered = Vec::with_capacity(records.len());
        let mut step = Ok(Step::Delivered);
        for part in [head, rest] {
            if part.is_empty() || !matches!(step, Ok(Step::Delivered)) {
                break;
            }
            let outcomes = self.deliver(part).await;
            for ((seq, record), outcome) in part.iter().zip(outcomes) {
                match outcome {
                    Ok(()) => delivered.push(*seq),
                    Err(error) if matches!(step, Ok(Step::Delivered)) => {
                        step = self
                            .failed(from_file, *seq, record.clone(), error, now)
                            .await;
                    }
                    // Tried again in a later step, with the first failure's delay.
                    Err(_) => {}
                }
            }
        }
        self.probing
            .store(!matches!(step, Ok(Step::Delivered)), Ordering::Relaxed);
        // What was delivered is removed even when another record hit a store error, so it is
        // not sent again.
        let sent = delivered.len() as u64;
        let (mut removed, mut freed) = (0, 0);
        let mut in_file = delivered;
        if !from_file {
            let settled = self.queue.fresh.settle(&in_file);
            self.store.release(settled.bytes);
            (removed, freed) = (settled.records, settled.bytes);
            in_file = settled.in_file;
        }
        if !in_file.is_empty() {
            let (count, bytes) = self
                .blocking(move |store, id| store.remove_all(id, &in_file))
                .await?;
            removed += count;
            freed += bytes;
        }
        self.queue.counts.settled(removed, freed);
        self.queue.delivered.fetch_add(sent, Ordering::Relaxed);
        step
    }

    /// The oldest records: the file's while it holds any, else those in memory; and whether
    /// they came from the file.
    async fn take(&self) -> Result<(Vec<(u64, Bytes)>, bool), StoreError> {
        loop {
            match self.queue.fresh.next(BATCH, BATCH_BYTES) {
                Next::Memory(records) => return Ok((records, false)),
                Next::File { spills } => {
                    let batch = self
                        .blocking(|store, id| store.oldest_n(id, BATCH, BATCH_BYTES))
                        .await?;
                    if !batch.is_empty() {
                        let batch = batch.into_iter().map(|(seq, r)| (seq, Bytes::from(r)));
                        return Ok((batch.collect(), true));
                    }
                    self.queue.fresh.file_empty(spills);
                }
            }
        }
    }

    /// Moves this queue's records in memory to the file (before a failure is recorded there).
    async fn spill(&self) -> Result<(), StoreError> {
        let queue = Arc::clone(&self.queue);
        self.blocking(move |store, _| {
            fresh::spill(
                store,
                [(queue.destination.name(), &queue.fresh)],
                u64::MAX,
                None,
            )
        })
        .await?;
        Ok(())
    }

    /// Hands records to the destination at once, in order; one outcome each.
    async fn deliver(&self, records: &[(u64, SpooledDelivery)]) -> Vec<Result<(), Failure>> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut deliveries = Vec::with_capacity(records.len());
        for (_, record) in records {
            match record.delivery.to_delivery() {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    outcomes.push(None);
                }
                Err(damaged) => outcomes.push(Some(Err(Failure::Damaged(damaged)))),
            }
        }
        let mut answers = if deliveries.is_empty() {
            Vec::new()
        } else {
            self.target
                .deliver(&self.queue.destination, &deliveries)
                .await
        }
        .into_iter();
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    answers
                        .next()
                        .unwrap_or_else(|| {
                            Err(DeliveryError::NoRoute(
                                "the destination gave no answer".into(),
                            ))
                        })
                        .map_err(Failure::Refused)
                })
            })
            .collect()
    }

    /// Records a failed attempt: the retry state is written, or the record moves to the dead
    /// letters when it is out of attempts or time (or can no longer become a delivery). A
    /// record in memory goes to the file first, with every newer one (order is kept).
    async fn failed(
        &self,
        from_file: bool,
        seq: u64,
        mut record: SpooledDelivery,
        failure: Failure,
        now: SystemTime,
    ) -> Result<Step, StoreError> {
        if !from_file {
            self.spill().await?;
        }
        self.queue.retries.fetch_add(1, Ordering::Relaxed);
        record.attempts = record.attempts.saturating_add(1);
        let last = failure.is_final();
        // A destination that said when to come back (HTTP 429 `Retry-After`) is not called
        // sooner; the backoff still applies when it asked for less.
        let asked = match &failure {
            Failure::Refused(error) => error.retry_after(),
            Failure::Damaged(_) => None,
        };
        record.last_error = truncate(failure.into_string(), MAX_ERROR_LEN);
        let policy = self.target.policy(&self.queue.destination);
        let age = now.duration_since(record.retry_from()).unwrap_or_default();
        let out_of_attempts = policy
            .max_attempts
            .is_some_and(|max| record.attempts >= max);
        let bytes = record.encode();
        if out_of_attempts || age >= policy.max_age || last {
            self.dead_letter(seq, bytes).await?;
            tracing::warn!(
                destination = %self.name(),
                request_id = %record.delivery.request_id,
                attempts = record.attempts,
                error = %record.last_error,
                "Spooled delivery moved to the dead letters."
            );
            return Ok(Step::DeadLettered);
        }
        let size = footprint(&bytes);
        let old = self
            .blocking(move |store, id| store.update(id, seq, &bytes))
            .await?;
        self.queue.counts.rewritten(old, size);
        tracing::info!(
            destination = %self.name(),
            request_id = %record.delivery.request_id,
            attempts = record.attempts,
            error = %record.last_error,
            "Spooled delivery failed; will retry."
        );
        let delay = retry_delay(record.attempts, fastrand::f64());
        Ok(Step::Retry(asked.map_or(delay, |asked| asked.max(delay))))
    }

    async fn dead_letter(&self, seq: u64, bytes: Vec<u8>) -> Result<(), StoreError> {
        let killed = self
            .blocking(move |store, id| store.kill(id, seq, &bytes))
            .await?;
        if let Some(replaced) = killed.replaced {
            self.queue.counts.purged(replaced);
        }
        self.queue.counts.dead_lettered(killed.queued, killed.dead);
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        let id = self.queue.destination.id();
        tokio::task::spawn_blocking(move || work(&store, id))
            .await
            .map_err(|e| StoreError::Commit(e.to_string()))?
    }

    /// Forwards until cancelled: waits for an append while the queue is empty, and between
    /// retries. A step under way when cancelled finishes the record it is on; the rest stay on
    /// disk for the next start.
    pub async fn run(self, token: CancellationToken) {
        // However this ends (cancelled, or a panic in a module), the queue may get a forwarder
        // again on its next append.
        struct Running<'a>(&'a Queue);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::Release);
            }
        }
        let _running = Running(&self.queue);
        let mut store_failures = 0;
        let mut delivered_at: Option<tokio::time::Instant> = None;
        loop {
            if token.is_cancelled() {
                return;
            }
            let held = self
                .queue
                .held_until
                .lock()
                .ok()
                .and_then(|mut held| held.take());
            if let Some(until) = held {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep_until(until.into()) => {}
                }
            }
            // Registered before the queue is read, so an append in between is not missed.
            let notified = self.queue.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A step holds a permit; waiting for an append or a retry holds none.
            let permit = tokio::select! {
                () = token.cancelled() => return,
                permit = Arc::clone(&self.steps).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    // Never closed; were it, forwarding would stop until the next append.
                    Err(_) => return,
                },
            };
            let step = self.step(SystemTime::now(), &token).await;
            drop(permit);
            if step.is_ok() {
                store_failures = 0;
            }
            let wait = match step {
                Ok(Step::Delivered) => {
                    delivered_at = Some(tokio::time::Instant::now());
                    continue;
                }
                Ok(Step::DeadLettered) => continue,
                Ok(Step::Retry(delay)) => Some(delay),
                Ok(Step::Idle) => None,
                Err(error) => {
                    // The disk, not the destination: back off the same way.
                    store_failures += 1;
                    tracing::error!(destination = %self.name(), %error, "Spool store failed.");
                    Some(retry_delay(store_failures, fastrand::f64()))
                }
            };
            tokio::select! {
                () = token.cancelled() => return,
                () = &mut notified, if wait.is_none() => {}
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            }
            let gather =
                delivered_at.map_or(Duration::ZERO, |at| GATHER.saturating_sub(at.elapsed()));
            if wait.is_none() && !gather.is_zero() {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(gather) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Namespace, WebhookId};
    use std::sync::Mutex;

    /// A destination that fails its first `failures` attempts, then records what it got.
    struct Flaky {
        failures: Mutex<u32>,
        got: Mutex<Vec<Delivery>>,
        /// How many records each call was given.
        calls: Mutex<Vec<usize>>,
        policy: RetryPolicy,
        /// Failures are 429s asking for this wait.
        throttle: Mutex<Option<Duration>>,
    }

    #[async_trait::async_trait]
    impl Target for Flaky {
        async fn deliver(
            &self,
            _: &Destination,
            deliveries: &[Delivery],
        ) -> Vec<Result<(), DeliveryError>> {
            self.calls.lock().unwrap().push(deliveries.len());
            let mut left = self.failures.lock().unwrap();
            deliveries
                .iter()
                .map(|delivery| {
                    if *left > 0 {
                        *left -= 1;
                        if let Some(wait) = *self.throttle.lock().unwrap() {
                            return Err(DeliveryError::Throttled {
                                module: "test",
                                reason: "429".into(),
                                retry_after: Some(wait),
                            });
                        }
                        return Err(DeliveryError::Unavailable {
                            module: "test",
                            reason: "down".into(),
                        });
                    }
                    self.got.lock().unwrap().push(delivery.clone());
                    Ok(())
                })
                .collect()
        }

        fn policy(&self, _: &Destination) -> RetryPolicy {
            self.policy
        }
    }

    const NAME: &str = "acme/gh:log";

    fn delivery(n: u32) -> Delivery {
        Delivery {
            namespace: Namespace::parse("acme").unwrap(),
            webhook: WebhookId::parse("gh").unwrap(),
            request_id: format!("r{n}"),
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            headers: vec![("x-n".into(), n.to_string())],
            body: bytes::Bytes::from(format!("{{\"n\":{n}}}")),
            json: true,
            trace: None,
            relayed: Vec::new(),
        }
    }

    fn setup(
        failures: u32,
        policy: RetryPolicy,
    ) -> (tempfile::TempDir, Arc<Store>, Arc<Flaky>, Forwarder) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), 1 << 20).unwrap());
        let target = Arc::new(Flaky {
            failures: Mutex::new(failures),
            got: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            policy,
            throttle: Mutex::new(None),
        });
        let destination = super::super::Destination::named(NAME);
        let counts = super::super::Ledger::new(1 << 20).counts("acme");
        let queue = Arc::new(Queue::new(destination, counts));
        let forwarder = Forwarder::new(
            Arc::clone(&store),
            queue,
            Arc::clone(&target) as Arc<dyn Target>,
            Arc::new(tokio::sync::Semaphore::new(1)),
        );
        (dir, store, target, forwarder)
    }

    /// Puts record `n` in the file (as a spill or a restart would).
    fn spool(store: &Store, queue: &Queue, n: u32) {
        let record = SpooledDelivery::new(&delivery(n)).encode();
        store.append(&[vec![(NAME, record.as_slice())]]).unwrap()[0]
            .as_ref()
            .unwrap();
        queue.counts.restored(1, footprint(&record), 0, 0);
        queue.fresh.mark_in_file();
    }

    /// Journals record `n` and hands it to memory, as the writer does.
    fn fresh(store: &Store, queue: &Queue, n: u32) {
        let record = SpooledDelivery::new(&delivery(n)).encode();
        let seq = *store.admit(&[(footprint(&record), 1)])[0].as_ref().unwrap();
        queue.counts.restored(1, footprint(&record), 0, 0);
        queue.fresh.push(seq, Bytes::from(record));
    }

    fn ids(target: &Flaky) -> Vec<String> {
        let got = target.got.lock().unwrap();
        got.iter().map(|d| d.request_id.clone()).collect()
    }

    #[tokio::test]
    async fn records_in_memory_go_after_the_file_s_and_never_touch_the_file() {
        let (_dir, store, target, forwarder) = setup(1, RetryPolicy::default());
        spool(&store, &forwarder.queue, 1);
        for n in 2..=4 {
            fresh(&store, &forwarder.queue, n);
        }
        assert_eq!(
            store.queues().unwrap()[0].depth,
            1,
            "only r1 is in the file"
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert!(matches!(step(&forwarder, now).await, Step::Retry(_)));
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(step(&forwarder, now).await, Step::Idle);
        assert_eq!(ids(&target), ["r1", "r2", "r3", "r4"]);
        assert!(store.queues().unwrap().is_empty());
        assert_eq!(store.used(), 0, "memory's records gave their room back");
        assert_eq!(forwarder.queue.depth(), 0);
    }

    #[tokio::test]
    async fn a_destination_that_asks_to_wait_is_not_called_sooner_nor_later_than_the_backoff() {
        let (_dir, store, target, forwarder) = setup(2, RetryPolicy::default());
        fresh(&store, &forwarder.queue, 1);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        *target.throttle.lock().unwrap() = Some(Duration::from_secs(120));
        assert_eq!(
            step(&forwarder, now).await,
            Step::Retry(Duration::from_secs(120))
        );
        // Asked for less than the backoff (the second failure's 2 s, less jitter): the backoff.
        *target.throttle.lock().unwrap() = Some(Duration::ZERO);
        let Step::Retry(delay) = step(&forwarder, now).await else {
            panic!("a retry");
        };
        assert!(delay >= Duration::from_millis(1500), "{delay:?}");
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(ids(&target), ["r1"]);
    }

    #[tokio::test]
    async fn a_failure_in_memory_moves_the_queue_to_the_file_in_order() {
        let (_dir, store, target, forwarder) = setup(1, RetryPolicy::default());
        for n in 1..=3 {
            fresh(&store, &forwarder.queue, n);
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert!(matches!(step(&forwarder, now).await, Step::Retry(_)));
        let in_file = store.queues().unwrap();
        assert_eq!(
            in_file[0].depth, 3,
            "all three spilled, with r1's retry state"
        );
        let id = forwarder.queue.destination.id();
        let first = SpooledDelivery::decode(&store.oldest_n(id, 1, 1 << 20).unwrap()[0].1);
        assert_eq!(first.unwrap().attempts, 1);
        fresh(&store, &forwarder.queue, 4);
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(step(&forwarder, now).await, Step::Idle);
        assert_eq!(ids(&target), ["r1", "r2", "r3", "r4"]);
        assert_eq!((store.used(), forwarder.queue.depth()), (0, 0));
    }

    #[tokio::test]
    async fn one_record_probes_after_a_failure_then_whole_batches_go_in_one_call() {
        let (_dir, store, target, forwarder) = setup(1, RetryPolicy::default());
        for n in 1..=3 {
            fresh(&store, &forwarder.queue, n);
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert!(matches!(step(&forwarder, now).await, Step::Retry(_)));
        assert_eq!(
            *target.calls.lock().unwrap(),
            [1],
            "at start one record goes alone"
        );
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(
            *target.calls.lock().unwrap(),
            [1, 1, 2],
            "after the failure: the probe, then the rest"
        );
        for n in 4..=6 {
            fresh(&store, &forwarder.queue, n);
        }
        assert_eq!(step(&forwarder, now).await, Step::Delivered);
        assert_eq!(
            *target.calls.lock().unwrap(),
            [1, 1, 2, 3],
            "once the destination took records, no probe"
        );
        assert_eq!(ids(&target), ["r1", "r2", "r3", "r4", "r5", "r6"]);
        assert_eq!((store.used(), forwarder.queue.depth()), (0, 0));
    }

    /// One step, not cancelled.
    async fn step(forwarder: &Forwarder, now: SystemTime) -> Step {
        forwarder
            .step(now, &CancellationToken::new())
            .await
            .unwrap()
    }

    #[test]
    fn retry_delays_grow_to_the_cap_and_jitter_only_shortens_them() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(5, 0.0), Duration::from_secs(16));
        assert_eq!(retry_delay(40, 0.0), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(2, 0.999_999).as_millis(), 1500);
    }

    #[tokio::test]
    async fn records_are_redelivered_in_order_byte_identical_after_failures() {
        let (_dir, store, target, forwarder) = setup(2, RetryPolicy::default());
        for n in 0..3 {
            spool(&store, &forwarder.queue, n);
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert!(matches!(step(&forwarder, now).await, Step::Retry(_)));
        assert!(matches!(step(&forwarder, now).await, Step::Retry(_)));
        assert_eq!(
            step(&forwarder, now).await,
            Step::Delivered,
            "all three in one step"
        );
        assert_eq!(step(&forwarder, now).await, Step::Idle);
        assert_eq!(
            ids(&target),
            ["r0", "r1", "r2"],
            "arrival order, original request ids"
        );
        let got = target.got.lock().unwrap();
        assert_eq!(got[0].body, delivery(0).body);
        assert_eq!(got[0].received_at, delivery(0).received_at);
        assert_eq!(got[0].headers, delivery(0).headers);
        assert_eq!(store.used(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_forwarder_stops_even_with_a_backlog_and_leaves_it_on_disk() {
        let (_dir, store, target, forwarder) = setup(0, RetryPolicy::default());
        for n in 0..5 {
            spool(&store, &forwarder.queue, n);
        }
        let token = CancellationToken::new();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), forwarder.run(token))
            .await
            .expect("returns at once");
        assert!(target.got.lock().unwrap().is_empty());
        assert_eq!(store.queues().unwrap()[0].depth, 5);
    }

    #[tokio::test]
    async fn an_append_while_idle_wakes_the_forwarder() {
        let (_dir, store, target, forwarder) = setup(0, RetryPolicy::default());
        let queue = Arc::clone(&forwarder.queue);
        let token = CancellationToken::new();
        let running = tokio::spawn(forwarder.run(token.clone()));
        spool(&store, &queue, 7);
        queue.appended.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while target.got.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        token.cancel();
        running.await.unwrap();
    }

    /// In a steady stream the records that come within [`GATHER`] of a delivery go in one
    /// batch; after a quiet spell a record goes at once.
    #[tokio::test(start_paused = true)]
    async fn records_arriving_right_after_a_delivery_are_gathered_into_one_batch() {
        let (_dir, store, target, forwarder) = setup(0, RetryPolicy::default());
        let queue = Arc::clone(&forwarder.queue);
        let token = CancellationToken::new();
        let running = tokio::spawn(forwarder.run(token.clone()));
        let delivered = |n: usize| {
            let target = &target;
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while target.got.lock().unwrap().len() < n {
                    assert!(tokio::time::Instant::now() < deadline, "not delivered");
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
            }
        };
        fresh(&store, &queue, 1);
        queue.appended.notify_one();
        delivered(1).await;
        fresh(&store, &queue, 2);
        fresh(&store, &queue, 3);
        queue.appended.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        fresh(&store, &queue, 4);
        queue.appended.notify_one();
        delivered(4).await;
        assert_eq!(*target.calls.lock().unwrap(), [1, 3], "2, 3 and 4 together");

        tokio::time::sleep(Duration::from_millis(50)).await;
        let quiet = tokio::time::Instant::now();
        fresh(&store, &queue, 5);
        queue.appended.notify_one();
        delivered(5).await;
        assert!(quiet.elapsed() < GATHER, "{:?}", quiet.elapsed());
        assert_eq!(*target.calls.lock().unwrap(), [1, 3, 1]);
        token.cancel();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn out_of_attempts_or_too_old_goes_to_the_dead_letters() {
        let policy = RetryPolicy {
            max_age: Duration::from_secs(3600),
            max_attempts: Some(2),
        };
        let (_dir, store, _target, forwarder) = setup(10, policy);
        spool(&store, &forwarder.queue, 0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert!(matches!(step(&forwarder, now).await, Step::Retry(_)));
        assert_eq!(step(&forwarder, now).await, Step::DeadLettered);
        let dead = store.dead_letters(100).unwrap();
        assert_eq!(dead.len(), 1);
        let record = SpooledDelivery::decode(&dead[0].record).unwrap();
        assert_eq!(
            (record.attempts, record.last_error.as_str()),
            (2, "module `test` could not deliver: down")
        );

        spool(&store, &forwarder.queue, 1);
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 3600);
        assert_eq!(step(&forwarder, later).await, Step::DeadLettered, "too old");
        assert_eq!(store.dead_letters(100).unwrap().len(), 2);
    }
}
