//! A destination's queue as the running process sees it: its name, and counters kept in step
//! with the file by the only code that changes it (the writer and the forwarder).

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use tokio::sync::Notify;

use super::store::destination_id;

/// One destination of one webhook: `<namespace>/<webhook>#<index>:<module>`, and its id in the
/// file. Computed once when a route is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    name: Arc<str>,
    id: u64,
}

impl Destination {
    pub fn new(namespace: &str, webhook: &str, index: usize, module: &str) -> Self {
        Self::named(&format!("{namespace}/{webhook}#{index}:{module}"))
    }

    /// A destination by its full name (as stored).
    pub fn named(name: &str) -> Self {
        Self {
            id: destination_id(name),
            name: Arc::from(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// (namespace, webhook, index, module), when the name has that shape.
    pub fn parts(&self) -> Option<(&str, &str, usize, &str)> {
        let (namespace, rest) = self.name.split_once('/')?;
        let (webhook, tail) = rest.rsplit_once('#')?;
        let (index, module) = tail.split_once(':')?;
        Some((namespace, webhook, index.parse().ok()?, module))
    }
}

/// Live counters of one destination's queue.
#[derive(Debug)]
pub struct Queue {
    pub destination: Destination,
    depth: AtomicU64,
    pub bytes: AtomicU64,
    /// Failed forwarding attempts since start.
    pub retries: AtomicU64,
    /// Dead letters of this destination in the file.
    pub dead: AtomicU64,
    /// Records forwarded since start.
    pub delivered: AtomicU64,
    /// Wakes the forwarder when a record is added.
    pub appended: Notify,
    /// A forwarder runs for this queue.
    pub running: AtomicBool,
    /// Records queued across every destination (shared with the spool).
    backlog: Arc<AtomicU64>,
}

impl Queue {
    pub fn new(destination: Destination, backlog: Arc<AtomicU64>) -> Self {
        Self {
            destination,
            depth: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            appended: Notify::new(),
            running: AtomicBool::new(false),
            backlog,
        }
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Acquire)
    }

    /// `records` were added, taking `bytes`.
    pub fn added(&self, records: u64, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.backlog.fetch_add(records, Ordering::Relaxed);
        self.depth.fetch_add(records, Ordering::Release);
    }

    /// `records` taking `bytes` left the queue (delivered or dead-lettered).
    pub fn removed(&self, records: u64, bytes: u64) {
        let sub = |n: u64, by: u64| n.checked_sub(by);
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(sub(n, bytes).unwrap_or(0))
            });
        let _ = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(sub(n, records).unwrap_or(0))
            });
        let _ = self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(sub(n, records).unwrap_or(0))
            });
    }

    /// A queued record changed size (its retry state was rewritten).
    pub fn resized(&self, old: u64, new: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(old).saturating_add(new))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_name_splits_back_into_its_parts() {
        let d = Destination::new("team-a", "gh#1", 2, "redis_stream");
        assert_eq!(d.name(), "team-a/gh#1#2:redis_stream");
        assert_eq!(d.parts(), Some(("team-a", "gh#1", 2, "redis_stream")));
        assert_eq!(Destination::named("nonsense").parts(), None);
        assert_eq!(d.id(), Destination::named(d.name()).id());
    }

    #[test]
    fn counters_follow_adds_and_removals_and_never_wrap() {
        let backlog = Arc::new(AtomicU64::new(0));
        let q = Queue::new(Destination::named("a/b#0:log"), Arc::clone(&backlog));
        q.added(2, 100);
        q.removed(1, 40);
        assert_eq!((q.depth(), q.bytes.load(Ordering::Relaxed)), (1, 60));
        q.removed(1, 90);
        q.removed(1, 1);
        assert_eq!((q.depth(), q.bytes.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(backlog.load(Ordering::Relaxed), 0);
    }
}
