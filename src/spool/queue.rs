//! A destination's queue as the running process sees it: its name, and counters kept in step
//! with the file by the only code that changes it (the writer and the forwarder).

use std::sync::{
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    Arc,
};

use tokio::sync::Notify;

use super::{fresh::FreshQueue, store::destination_id};

/// One destination of one webhook: `<namespace>/<webhook>#<index>:<module>[@<connection>]`, and
/// its id in the file. Computed once when a route is built. The connection is part of the name,
/// so reordering a chain's destinations never sends a record to another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    name: Arc<str>,
    id: u64,
}

impl Destination {
    pub fn new(
        namespace: &str,
        webhook: &str,
        index: usize,
        module: &str,
        connection: Option<&str>,
    ) -> Self {
        Self::named(&match connection {
            Some(connection) => format!("{namespace}/{webhook}#{index}:{module}@{connection}"),
            None => format!("{namespace}/{webhook}#{index}:{module}"),
        })
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

    /// The parts of the name, when it has that shape.
    pub fn parts(&self) -> Option<Parts<'_>> {
        let (namespace, rest) = self.name.split_once('/')?;
        let (webhook, tail) = rest.rsplit_once('#')?;
        let (index, target) = tail.split_once(':')?;
        let (module, connection) = match target.split_once('@') {
            Some((module, connection)) => (module, Some(connection)),
            None => (target, None),
        };
        Some(Parts {
            namespace,
            webhook,
            index: index.parse().ok()?,
            module,
            connection,
        })
    }
}

/// What a destination name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub namespace: &'a str,
    pub webhook: &'a str,
    pub index: usize,
    pub module: &'a str,
    pub connection: Option<&'a str>,
}

/// A count that several tasks change in any order (an add may land after the matching
/// subtraction): signed, never clamped, so it always settles on the true value; read as 0 while
/// it is transiently negative.
#[derive(Debug, Default)]
pub struct Count(AtomicI64);

impl Count {
    pub fn add(&self, n: u64) {
        self.0
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    /// Adds `n`; returns the count after it.
    pub fn add_get(&self, n: u64) -> u64 {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        u64::try_from(self.0.fetch_add(n, Ordering::AcqRel).saturating_add(n)).unwrap_or(0)
    }

    pub fn sub(&self, n: u64) {
        self.0
            .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    pub fn set(&self, n: u64) {
        self.0
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        u64::try_from(self.0.load(Ordering::Acquire)).unwrap_or(0)
    }
}

/// Live counters of one destination's queue.
#[derive(Debug)]
pub struct Queue {
    pub destination: Destination,
    /// Records waiting, counted from the moment a request decides to spool (before its
    /// commit), so later requests queue behind it.
    pub depth: Count,
    pub bytes: Count,
    /// Dead letters of this destination in the file.
    pub dead: Count,
    /// Failed forwarding attempts since start.
    pub retries: AtomicU64,
    /// Records forwarded since start.
    pub delivered: AtomicU64,
    /// Wakes the forwarder when a record is added.
    pub appended: Notify,
    /// A forwarder runs for this queue.
    pub running: AtomicBool,
    /// Its records not in the file (journaled, waiting in memory).
    pub fresh: FreshQueue,
    /// Records queued across every destination (shared with the spool).
    backlog: Arc<Count>,
    /// Bytes queued by every destination of this one's namespace (its share of the spool).
    pub namespace: Arc<Count>,
}

impl Queue {
    pub fn new(destination: Destination, backlog: Arc<Count>, namespace: Arc<Count>) -> Self {
        Self {
            destination,
            depth: Count::default(),
            bytes: Count::default(),
            dead: Count::default(),
            retries: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            appended: Notify::new(),
            running: AtomicBool::new(false),
            fresh: FreshQueue::default(),
            backlog,
            namespace,
        }
    }

    pub fn depth(&self) -> u64 {
        self.depth.get()
    }

    /// `records` were added (or are about to be), taking `bytes`.
    pub fn added(&self, records: u64, bytes: u64) {
        self.namespace.add(bytes);
        self.bytes.add(bytes);
        self.backlog.add(records);
        self.depth.add(records);
    }

    /// `records` taking `bytes` left the queue (delivered, dead-lettered, or never committed).
    pub fn removed(&self, records: u64, bytes: u64) {
        self.namespace.sub(bytes);
        self.bytes.sub(bytes);
        self.backlog.sub(records);
        self.depth.sub(records);
    }

    /// A queued record changed size (its retry state was rewritten).
    pub fn resized(&self, old: u64, new: u64) {
        self.namespace.sub(old);
        self.namespace.add(new);
        self.bytes.sub(old);
        self.bytes.add(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_name_splits_back_into_its_parts() {
        let d = Destination::new("team-a", "gh#1", 2, "redis_stream", Some("cache"));
        assert_eq!(d.name(), "team-a/gh#1#2:redis_stream@cache");
        assert_eq!(
            d.parts(),
            Some(Parts {
                namespace: "team-a",
                webhook: "gh#1",
                index: 2,
                module: "redis_stream",
                connection: Some("cache")
            })
        );
        let log = Destination::new("a", "b", 0, "log", None);
        assert_eq!(
            log.parts().map(|p| (p.module, p.connection)),
            Some(("log", None))
        );
        assert_eq!(Destination::named("nonsense").parts(), None);
        assert_eq!(d.id(), Destination::named(d.name()).id());
    }

    #[test]
    fn counters_settle_whatever_order_adds_and_removals_land_in() {
        let backlog = Arc::new(Count::default());
        let namespace = Arc::new(Count::default());
        let q = Queue::new(
            Destination::named("a/b#0:log"),
            Arc::clone(&backlog),
            Arc::clone(&namespace),
        );
        q.added(2, 100);
        q.removed(1, 40);
        assert_eq!((q.depth(), q.bytes.get()), (1, 60));
        // A forwarder removed a record before its add landed: reads 0, then settles.
        q.removed(2, 60 + 30);
        assert_eq!((q.depth(), q.bytes.get(), backlog.get()), (0, 0, 0));
        q.added(1, 30);
        assert_eq!((q.depth(), q.bytes.get(), backlog.get()), (0, 0, 0));
        q.added(1, 5);
        assert_eq!((q.depth(), q.bytes.get(), backlog.get()), (1, 5, 1));
        assert_eq!(namespace.get(), 5);
        assert_eq!(namespace.add_get(10), 15);
    }
}
