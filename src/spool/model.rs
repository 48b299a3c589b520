//! The spool checked against a model: random appends to three destinations, destinations
//! going down and coming back, graceful restarts, and crashes (the files as a SIGKILL leaves
//! them, taken while the spool runs, sometimes with a torn write after the last frame), with
//! the invariants checked at every reopen and at the end:
//! - nothing is delivered that was not acknowledged, and each destination gets its records in
//!   the order they were acknowledged (a crash may deliver some again, never out of order);
//! - every acknowledged record not yet delivered is in the spool's file;
//! - the spool's counters equal what its file holds;
//! - once every destination is up, every acknowledged record is delivered.
//!
//! Not modelled: power loss (writes the page cache held and the disk never got). The journal's
//! writes are durable when acknowledged (`O_DSYNC`); the redb file's unsynced commits are what
//! the journal replays.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use proptest::prelude::*;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    journal, queue::test_destination, record::SpooledDelivery, store, Destination, Limits,
    RetryPolicy, Spool, Target,
};
use crate::{
    keys::{Namespace, WebhookId},
    modules::{Delivery, DeliveryError},
};

const DESTINATIONS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// One request for these destinations.
    Append(Vec<usize>),
    Down(usize),
    Up(usize),
    Restart,
    Crash {
        torn: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::sample::subsequence((0..DESTINATIONS).collect::<Vec<_>>(), 1..=DESTINATIONS)
            .prop_map(Op::Append),
        2 => (0..DESTINATIONS).prop_map(Op::Down),
        2 => (0..DESTINATIONS).prop_map(Op::Up),
        1 => Just(Op::Restart),
        2 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
    ]
}

/// Destinations that are up or down; what each got (request ids, in order).
#[derive(Default)]
struct Fake {
    down: Mutex<[bool; DESTINATIONS]>,
    got: Mutex<[Vec<String>; DESTINATIONS]>,
}

fn index(destination: &Destination) -> usize {
    match destination.parts().map(|p| &p.place) {
        Some(super::Place::Target(Some(target))) => target.parse().unwrap_or(0),
        _ => 0,
    }
}

#[async_trait::async_trait]
impl Target for Fake {
    async fn deliver(
        &self,
        destination: &Destination,
        deliveries: &[Delivery],
    ) -> Vec<Result<(), DeliveryError>> {
        let i = index(destination);
        if self.down.lock().unwrap()[i] {
            return deliveries
                .iter()
                .map(|_| {
                    Err(DeliveryError::Unavailable {
                        module: "model",
                        reason: "down".into(),
                    })
                })
                .collect();
        }
        let mut got = self.got.lock().unwrap();
        got[i].extend(deliveries.iter().map(|d| d.request_id.clone()));
        deliveries.iter().map(|_| Ok(())).collect()
    }

    fn policy(&self, _: &Destination) -> RetryPolicy {
        RetryPolicy::default()
    }
}

fn destination(i: usize) -> Destination {
    test_destination("model", "w", &i.to_string())
}

fn record(id: &str) -> Vec<u8> {
    SpooledDelivery::encode_new(&Delivery {
        namespace: Namespace::parse("model").unwrap(),
        webhook: WebhookId::parse("w").unwrap(),
        request_id: id.to_owned(),
        received_at: SystemTime::now(),
        headers: Vec::new(),
        body: bytes::Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        json: true,
        trace: None,
        relayed: Vec::new(),
    })
}

struct Running {
    spool: Spool,
    tasks: TaskTracker,
    token: CancellationToken,
    dir: PathBuf,
}

/// Opens the spool in `dir`, checks its counters against its file and the model, then starts
/// forwarding.
fn open(dir: &Path, fake: &Arc<Fake>, acked: &[Vec<String>]) -> Running {
    let tasks = TaskTracker::new();
    let token = CancellationToken::new();
    let spool = Spool::open(dir, Limits::new(64 << 20, 100), &tasks, token.clone())
        .expect("the spool opens: a crash never damages it");
    // Before any forwarding: the counters against the file, the file against the model.
    let on_disk = spool.shared.store.queues().unwrap();
    let total: u64 = on_disk.iter().map(|q| q.depth).sum();
    assert_eq!(spool.backlog(), total, "the backlog is what the file holds");
    for (i, acked) in acked.iter().enumerate() {
        let name = destination(i);
        let queue = spool.shared.queue(&name);
        let depth = on_disk
            .iter()
            .find(|q| q.name == name.name())
            .map_or(0, |q| q.depth);
        assert_eq!(queue.depth(), depth, "destination {i}: counter and file");
        let delivered = distinct(&fake.got.lock().unwrap()[i]);
        let missing = acked.len() - delivered.len();
        assert!(
            depth >= missing as u64,
            "destination {i}: {missing} acknowledged records undelivered, {depth} in the file"
        );
    }
    spool.start(Arc::clone(fake) as Arc<dyn Target>);
    Running {
        spool,
        tasks,
        token,
        dir: dir.to_owned(),
    }
}

async fn stop(running: Running) {
    running.token.cancel();
    running.tasks.close();
    running.tasks.wait().await;
}

/// Each id once, in the order first seen.
fn distinct(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
}

/// The spool's files as a SIGKILL at this moment leaves them, in a new directory; with `torn`,
/// a write cut short after the newest frame.
fn crash_copy(running: &Running, torn: bool) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    running.spool.shared.store.quiesced(|| {
        for name in journal::FILE_NAMES.iter().chain([&store::FILE_NAME]) {
            std::fs::copy(running.dir.join(name), copy.path().join(name)).unwrap();
        }
    });
    if torn {
        tear(copy.path());
    }
    copy
}

/// Writes half of a frame after the newest whole one (a write that was never answered).
fn tear(dir: &Path) {
    let mut newest: Option<(&str, journal::Frame)> = None;
    for name in journal::FILE_NAMES {
        if let Some((_, scan)) = journal::read(dir, name).unwrap() {
            for frame in scan.frames {
                if newest.as_ref().is_none_or(|(_, n)| frame.seq > n.seq) {
                    newest = Some((name, frame));
                }
            }
        }
    }
    let Some((name, frame)) = newest else {
        return;
    };
    let path = dir.join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    let key = journal::key_in(dir, name).unwrap();
    let mut encoded = Vec::new();
    journal::encode(
        &mut encoded,
        key,
        frame.seq,
        frame.prev,
        &frame.destination,
        &frame.record,
    );
    let Some(at) = memchr::memmem::find(&bytes, &encoded) else {
        return;
    };
    let end = at + encoded.len();
    let mut next = Vec::new();
    journal::encode(
        &mut next,
        key,
        frame.seq + 1,
        frame.seq,
        &frame.destination,
        &frame.record,
    );
    let cut = (next.len() / 2).min(bytes.len() - end);
    bytes[end..end + cut].copy_from_slice(&next[..cut]);
    std::fs::write(&path, bytes).unwrap();
}

/// Delivered ids are acknowledged ones, in acknowledged order (duplicates aside).
fn check_order(fake: &Fake, acked: &[Vec<String>]) {
    let got = fake.got.lock().unwrap();
    for (i, acked) in acked.iter().enumerate() {
        let delivered = distinct(&got[i]);
        assert!(
            delivered.len() <= acked.len() && delivered[..] == acked[..delivered.len()],
            "destination {i}: delivered {delivered:?}, acknowledged {acked:?}"
        );
    }
}

async fn run(ops: Vec<Op>) {
    let fake = Arc::new(Fake::default());
    let mut acked: Vec<Vec<String>> = vec![Vec::new(); DESTINATIONS];
    // Directories left by crashes stay until the case ends.
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let mut running = open(dirs[0].path(), &fake, &acked);
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append(to) => {
                let id = format!("r{n}");
                let destinations = to.iter().map(|&i| destination(i)).collect();
                running
                    .spool
                    .store(destinations, record(&id))
                    .await
                    .expect("stored: the spool is far from full");
                for i in to {
                    acked[i].push(id.clone());
                }
            }
            Op::Down(i) => fake.down.lock().unwrap()[i] = true,
            Op::Up(i) => fake.down.lock().unwrap()[i] = false,
            Op::Restart => {
                let dir = running.dir.clone();
                stop(running).await;
                running = open(&dir, &fake, &acked);
            }
            Op::Crash { torn } => {
                let copy = crash_copy(&running, torn);
                stop(running).await;
                running = open(copy.path(), &fake, &acked);
                dirs.push(copy);
            }
        }
        check_order(&fake, &acked);
    }
    // Everything comes back: every acknowledged record is delivered (a restart forwards at
    // once, without waiting out a retry delay).
    *fake.down.lock().unwrap() = [false; DESTINATIONS];
    let dir = running.dir.clone();
    stop(running).await;
    let running = open(&dir, &fake, &acked);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = fake.got.lock().unwrap().clone();
        let all = acked
            .iter()
            .zip(&got)
            .all(|(acked, got)| distinct(got).len() == acked.len());
        if all && running.spool.backlog() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all delivered: acknowledged {acked:?}, delivered {got:?}, backlog {}",
            running.spool.backlog()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check_order(&fake, &acked);
    stop(running).await;
}

/// Cases per run: `MODEL_CASES`, or a few (each case opens the spool many times).
fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_spool_keeps_every_acknowledged_record_through_failures_crashes_and_restarts(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}
