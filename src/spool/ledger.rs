//! The spool's numbers, with one owner: depth, bytes and dead letters per destination, the
//! backlog across all of them, and each namespace's share. They change only through the verbs
//! here, one per thing that happens to a record: [`Ledger::reserve`] (a request decides to
//! spool; a [`Reservation`] not kept gives its counts back when dropped), [`Reservation::keep`]
//! (the record is journaled), [`Counts::settled`] (delivered or removed), [`Counts::rewritten`]
//! (its retry state grew or shrank), [`Counts::dead_lettered`], [`Counts::replayed`],
//! [`Counts::purged`], and [`Counts::restored`] at open. Everything else reads them. (The file's
//! own bytes and sequence numbers belong to `super::store`, which changes them only inside its
//! transactions.)

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use dashmap::DashMap;

/// A count that several tasks change in any order (an add may land after the matching
/// subtraction): signed, never clamped, so it always settles on the true value; read as 0 while
/// it is transiently negative.
#[derive(Debug, Default)]
struct Count(AtomicI64);

impl Count {
    fn add(&self, n: u64) {
        self.0
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    fn sub(&self, n: u64) {
        self.0
            .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    fn get(&self) -> u64 {
        u64::try_from(self.0.load(Ordering::Acquire)).unwrap_or(0)
    }
}

/// One destination's counts: read anywhere, changed only by the verbs below.
#[derive(Debug)]
pub struct Counts {
    /// Records waiting, counted from the moment a request decides to spool (before its
    /// commit), so later requests queue behind it.
    depth: Count,
    bytes: Count,
    /// Dead letters of this destination in the file.
    dead: Count,
    /// Records queued across every destination.
    backlog: Arc<Count>,
    /// Bytes held by every destination of this one's namespace (queued and dead letters).
    namespace: Arc<Count>,
    /// That namespace's name.
    namespace_name: Arc<str>,
}

impl Counts {
    pub fn depth(&self) -> u64 {
        self.depth.get()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    pub fn dead(&self) -> u64 {
        self.dead.get()
    }

    /// Bytes its namespace holds.
    pub fn namespace_bytes(&self) -> u64 {
        self.namespace.get()
    }

    fn add(&self, records: u64, bytes: u64) {
        self.namespace.add(bytes);
        self.bytes.add(bytes);
        self.backlog.add(records);
        self.depth.add(records);
    }

    /// `records` taking `bytes` left the queue: delivered, or removed from the file.
    pub fn settled(&self, records: u64, bytes: u64) {
        self.namespace.sub(bytes);
        self.bytes.sub(bytes);
        self.backlog.sub(records);
        self.depth.sub(records);
    }

    /// A queued record's retry state was rewritten: it takes `new` bytes instead of `old`.
    pub fn rewritten(&self, old: u64, new: u64) {
        self.namespace.sub(old);
        self.namespace.add(new);
        self.bytes.sub(old);
        self.bytes.add(new);
    }

    /// A record taking `queued` bytes became a dead letter taking `dead` (still held by its
    /// namespace until replayed or purged).
    pub fn dead_lettered(&self, queued: u64, dead: u64) {
        self.settled(1, queued);
        self.dead.add(1);
        self.namespace.add(dead);
    }

    /// A dead letter taking `dead` bytes is queued again, taking `queued`.
    pub fn replayed(&self, dead: u64, queued: u64) {
        self.dead.sub(1);
        self.namespace.sub(dead);
        self.add(1, queued);
    }

    /// A dead letter taking `dead` bytes was deleted.
    pub fn purged(&self, dead: u64) {
        self.dead.sub(1);
        self.namespace.sub(dead);
    }

    /// The file was reopened and holds `depth` records taking `bytes` for this destination:
    /// the counts become that (what memory held is in the file again).
    pub fn recounted(&self, depth: u64, bytes: u64) {
        let (old_depth, old_bytes) = (self.depth.get(), self.bytes.get());
        self.settled(old_depth, old_bytes);
        self.add(depth, bytes);
    }

    /// At open: what the file holds for this destination.
    pub fn restored(&self, depth: u64, bytes: u64, dead: u64, dead_bytes: u64) {
        self.add(depth, bytes);
        self.dead.add(dead);
        self.namespace.add(dead_bytes);
    }
}

/// The counts shared across destinations, and where each destination's come from.
#[derive(Debug, Default)]
pub struct Ledger {
    backlog: Arc<Count>,
    namespaces: DashMap<String, Arc<Count>>,
    /// Bytes one namespace may hold (`SPOOL_NAMESPACE_SHARE` of `SPOOL_MAX_BYTES`).
    namespace_max: u64,
}

/// Why a request cannot be spooled: its namespace holds its whole share.
#[derive(Debug)]
pub struct ShareTaken {
    pub namespace: String,
    pub max: u64,
}

impl Ledger {
    pub fn new(namespace_max: u64) -> Self {
        Self {
            namespace_max,
            ..Self::default()
        }
    }

    /// Records queued across every destination.
    pub fn backlog(&self) -> u64 {
        self.backlog.get()
    }

    /// Fresh counts for a destination of namespace `name` (linked to its namespace's share
    /// and the backlog).
    pub fn counts(&self, name: &str) -> Arc<Counts> {
        let namespace = match self.namespaces.get(name) {
            Some(count) => Arc::clone(count.value()),
            None => Arc::clone(
                self.namespaces
                    .entry(name.to_owned())
                    .or_insert_with(|| Arc::new(Count::default()))
                    .value(),
            ),
        };
        Arc::new(Counts {
            depth: Count::default(),
            bytes: Count::default(),
            dead: Count::default(),
            backlog: Arc::clone(&self.backlog),
            namespace,
            namespace_name: Arc::from(name),
        })
    }

    /// Counts one record of `size` bytes for each destination of `counts` (a request decided
    /// to spool): at once, so the requests after it queue behind it. Refused, counting
    /// nothing, when a namespace would hold more than its share.
    pub fn reserve(&self, counts: Vec<Arc<Counts>>, size: u64) -> Result<Reservation, ShareTaken> {
        for count in &counts {
            count.add(1, size);
        }
        let reservation = Reservation { counts, size };
        let over = reservation
            .counts
            .iter()
            .find(|c| c.namespace_bytes() > self.namespace_max);
        if let Some(over) = over {
            let namespace = over.namespace_name.to_string();
            // Dropped: the counts go back.
            drop(reservation);
            return Err(ShareTaken {
                namespace,
                max: self.namespace_max,
            });
        }
        Ok(reservation)
    }
}

/// One request's records, counted but not journaled yet: kept ([`Reservation::keep`]) once
/// they are, given back when dropped (refused, the writer stopped, the request went away).
#[derive(Debug)]
pub struct Reservation {
    counts: Vec<Arc<Counts>>,
    size: u64,
}

impl Reservation {
    /// The records are journaled: their counts stay.
    pub fn keep(mut self) {
        self.counts.clear();
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for count in &self.counts {
            count.settled(1, self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_settle_whatever_order_adds_and_removals_land_in() {
        let ledger = Ledger::new(1 << 20);
        let c = ledger.counts("a");
        c.add(2, 100);
        c.settled(1, 40);
        assert_eq!((c.depth(), c.bytes()), (1, 60));
        // A forwarder removed a record before its add landed: reads 0, then settles.
        c.settled(2, 60 + 30);
        assert_eq!((c.depth(), c.bytes(), ledger.backlog()), (0, 0, 0));
        c.add(1, 30);
        assert_eq!((c.depth(), c.bytes(), ledger.backlog()), (0, 0, 0));
        c.add(1, 5);
        assert_eq!((c.depth(), c.bytes(), ledger.backlog()), (1, 5, 1));
        assert_eq!(c.namespace_bytes(), 5);
    }

    #[test]
    fn a_reservation_not_kept_gives_its_counts_back_and_a_full_share_refuses() {
        let ledger = Ledger::new(100);
        let c = ledger.counts("a");
        let kept = ledger.reserve(vec![Arc::clone(&c)], 40).unwrap();
        drop(ledger.reserve(vec![Arc::clone(&c)], 40).unwrap());
        assert_eq!((c.depth(), ledger.backlog()), (1, 1));
        kept.keep();
        assert_eq!(c.bytes(), 40);
        let refused = ledger.reserve(vec![Arc::clone(&c)], 61).unwrap_err();
        assert_eq!((refused.namespace.as_str(), refused.max), ("a", 100));
        assert_eq!((c.depth(), c.namespace_bytes()), (1, 40));
        // Another namespace has a share of its own.
        assert!(ledger.reserve(vec![ledger.counts("b")], 61).is_ok());
    }
}
