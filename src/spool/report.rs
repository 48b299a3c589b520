//! The spool as operators see it: per-destination queues, the whole spool, dead letters.

use std::time::SystemTime;

use super::{destination_id, fresh::FreshQueue, record, Store, StoreError};

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
                    crate::modules::rfc3339(r.received_at),
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

/// Age of a queue's oldest record: the file's, else (a running instance) the oldest in
/// memory.
pub(super) fn oldest_age(
    store: &Store,
    id: u64,
    fresh: Option<&FreshQueue>,
    now: SystemTime,
) -> Option<f64> {
    let received = match store.oldest_received_at(id).ok().flatten() {
        Some(received) => received,
        None => record::Summary::decode(&fresh?.oldest()?).ok()?.received_at,
    };
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
            oldest_age_seconds: oldest_age(store, destination_id(&q.name), None, now),
            dead_letters: dead.get(&q.name).map_or(0, |c| c.0),
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
                dead_letters: count.0,
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
        dead_letters: dead.values().map(|c| c.0).sum(),
        queues,
    })
}
