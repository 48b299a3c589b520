//! Fresh records: journaled (so durable), held in memory by their queue, and delivered from
//! there while the destination keeps up, so most records never touch the redb file (no insert,
//! no read, no removal). A record goes to the file ("spills") when its delivery fails (with every
//! newer one of its queue), and the records a journal file holds that are still in memory go
//! there when the journal switches files (`super::writer`): that sync is what lets a journal
//! file be written again, so memory holds at most what one journal file holds, and a crash
//! loses nothing (what the file lacks, the journal replays).
//!
//! Order: a queue's records in memory are always newer than its records in the file (a spill
//! moves the oldest ones, and new records get higher numbers), and the forwarder takes the
//! file's first. Only a dead letter replayed while records are in memory goes ahead of them
//! (it is in the file).

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;

use super::store::{footprint, Store, StoreError};

/// One queue's records in memory, and whether its file part may hold any.
#[derive(Debug, Default)]
pub struct Fresh {
    /// (sequence number, encoded record), oldest first. A forwarder delivering some of them
    /// leaves them here until they are acknowledged.
    records: VecDeque<(u64, Bytes)>,
    /// The file may hold records of this queue: they are older, so they go first.
    in_file: bool,
    /// Counts the times records entered the file, so a forwarder that found none there can
    /// tell whether more came since.
    spills: u64,
}

/// A queue's [`Fresh`] records behind their lock, which is only ever held briefly (the writer
/// adds to it after each journal write). `turn` is held by a spill across its redb transaction
/// and by the forwarder while it settles what it delivered, so the two never cross (the writer
/// never takes it).
#[derive(Debug, Default)]
pub struct FreshQueue {
    fresh: Mutex<Fresh>,
    turn: Mutex<()>,
}

/// What a forwarder may take next.
pub enum Next {
    /// The file may hold records (taken from there first); `spills` as of this check.
    File { spills: u64 },
    /// The oldest records in memory (none when the queue is empty).
    Memory(Vec<(u64, Bytes)>),
}

/// What became of delivered records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Taken out of memory: (records, bytes).
    pub records: u64,
    pub bytes: u64,
    /// Spilled meanwhile: they are to be removed from the file.
    pub in_file: Vec<u64>,
}

impl FreshQueue {
    fn lock(&self) -> MutexGuard<'_, Fresh> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a journaled record (numbers only grow).
    pub fn push(&self, seq: u64, record: Bytes) {
        self.lock().records.push_back((seq, record));
    }

    /// Records may be in the file (at open, or a dead letter was replayed).
    pub fn mark_in_file(&self) {
        let mut fresh = self.lock();
        fresh.in_file = true;
        fresh.spills += 1;
    }

    /// Every record is in the file now (it was reopened and the journal applied to it again):
    /// memory lets go of them, as after a spill.
    pub fn all_in_file(&self) {
        let _turn = self.turn();
        let mut fresh = self.lock();
        fresh.records.clear();
        fresh.in_file = true;
        fresh.spills += 1;
    }

    /// The file held none of this queue's records when `spills` was read: unless records were
    /// spilled since, memory is where the next ones are.
    pub fn file_empty(&self, spills: u64) {
        let mut fresh = self.lock();
        if fresh.spills == spills {
            fresh.in_file = false;
        }
    }

    /// Where the next records are: the file, or up to `limit` records (and `max_bytes`, always
    /// at least one) from memory, left there until [`FreshQueue::settle`].
    pub fn next(&self, limit: usize, max_bytes: usize) -> Next {
        let fresh = self.lock();
        if fresh.in_file {
            return Next::File {
                spills: fresh.spills,
            };
        }
        let mut taken = 0;
        let mut out = Vec::new();
        for (seq, record) in &fresh.records {
            if out.len() >= limit || (taken >= max_bytes && !out.is_empty()) {
                break;
            }
            taken += record.len();
            out.push((*seq, record.clone()));
        }
        Next::Memory(out)
    }

    /// Delivered records (ascending numbers, taken by [`FreshQueue::next`]) leave memory; those
    /// spilled meanwhile are named for removal from the file (waits for a spill under way, so
    /// they are in the file by then).
    pub fn settle(&self, delivered: &[u64]) -> Settled {
        let _turn = self.turn();
        let mut fresh = self.lock();
        let mut settled = Settled::default();
        for &seq in delivered {
            match fresh.records.front() {
                Some((front, _)) if *front == seq => {
                    if let Some((_, record)) = fresh.records.pop_front() {
                        settled.records += 1;
                        settled.bytes += footprint(&record);
                    }
                }
                // The forwarder took the oldest records, and only a spill removes others: a
                // record not in front was spilled.
                _ => settled.in_file.push(seq),
            }
        }
        settled
    }

    /// The oldest record in memory, encoded.
    pub fn oldest(&self) -> Option<Bytes> {
        self.lock().records.front().map(|(_, r)| r.clone())
    }
}

/// A queue's records being spilled: its destination name, the queue, copies of the records.
type Copied<'a> = (&'a str, &'a FreshQueue, Vec<(u64, Bytes)>);

/// Moves the records in memory of `queues` (destination name, records) numbered up to `up_to`
/// (the oldest: memory keeps only records newer than the file's) to the file in one
/// transaction, without an fsync. The queues' `turn` is held throughout, their records' lock
/// only to copy them out and, once the file has them, to take them out of memory: the writer
/// adding records never waits for the transaction, and a forwarder that took some of them
/// meanwhile finds them in the file when it settles. With `synced_to`, the file is then made
/// durable (see [`Store::spill`]). Returns how many records moved.
pub fn spill<'a>(
    store: &Store,
    queues: impl IntoIterator<Item = (&'a str, &'a FreshQueue)>,
    up_to: u64,
    synced_to: Option<u64>,
) -> Result<usize, StoreError> {
    let moved = {
        let turns: Vec<(&str, &FreshQueue, MutexGuard<'_, ()>)> = queues
            .into_iter()
            .map(|(name, queue)| (name, queue, queue.turn()))
            .collect();
        let copied: Vec<Copied<'_>> = turns
            .iter()
            .map(|(name, queue, _)| {
                let fresh = queue.lock();
                let oldest = fresh.records.iter().take_while(|(seq, _)| *seq <= up_to);
                (*name, *queue, oldest.cloned().collect::<Vec<_>>())
            })
            .filter(|(_, _, records)| !records.is_empty())
            .collect();
        let records: Vec<(u64, &str, &[u8])> = copied
            .iter()
            .flat_map(|(name, _, records)| {
                records
                    .iter()
                    .map(|(seq, record)| (*seq, *name, record.as_ref()))
            })
            .collect();
        let moved = records.len();
        if moved > 0 {
            store.spill(&records, None)?;
        }
        for (_, queue, records) in &copied {
            // Still the oldest in memory: only `settle` (held off by the turn) removes records.
            let mut fresh = queue.lock();
            fresh.records.drain(..records.len());
            fresh.in_file = true;
            fresh.spills += 1;
        }
        moved
    };
    if let Some(journaled) = synced_to {
        store.spill(&[], Some(journaled))?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::store::destination_id;

    const NAME: &str = "a/b:log";

    fn memory(next: Next) -> Vec<u64> {
        match next {
            Next::Memory(records) => records.into_iter().map(|(seq, _)| seq).collect(),
            Next::File { .. } => panic!("expected memory"),
        }
    }

    #[test]
    fn delivered_records_leave_memory_and_spilled_ones_are_named_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        let q = FreshQueue::default();
        for seq in 1..=4 {
            q.push(seq, Bytes::from(vec![b'x'; 10]));
        }
        assert_eq!(memory(q.next(2, 1 << 20)), [1, 2]);
        let settled = q.settle(&[1, 2]);
        assert_eq!(
            (settled.records, settled.bytes),
            (2, 2 * footprint(&[0; 10]))
        );
        assert!(settled.in_file.is_empty());

        // 3 and 4 taken, then spilled while being delivered; 5 arrives after the spill.
        assert_eq!(memory(q.next(10, 1 << 20)), [3, 4]);
        assert_eq!(spill(&store, [(NAME, &q)], u64::MAX, None).unwrap(), 2);
        q.push(5, Bytes::from_static(b"5"));
        let Next::File { spills } = q.next(10, 1 << 20) else {
            panic!("the spilled records go first");
        };
        assert_eq!(
            q.settle(&[3, 4]).in_file,
            [3, 4],
            "to be removed from the file"
        );
        let id = destination_id(NAME);
        let in_file: Vec<u64> = store
            .oldest_n(id, 10, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(in_file, [3, 4]);
        store.remove_all(id, &[3, 4]).unwrap();
        q.file_empty(spills);
        assert_eq!(memory(q.next(10, 1 << 20)), [5]);
    }

    #[test]
    fn a_spill_after_the_file_was_found_empty_keeps_the_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        let q = FreshQueue::default();
        q.mark_in_file();
        let Next::File { spills } = q.next(10, 1 << 20) else {
            panic!("marked");
        };
        // The forwarder found the file empty, but a record spilled before it said so.
        q.push(1, Bytes::from_static(b"1"));
        spill(&store, [(NAME, &q)], u64::MAX, None).unwrap();
        q.file_empty(spills);
        assert!(matches!(q.next(10, 1 << 20), Next::File { .. }));
    }

    #[test]
    fn a_sync_spill_records_the_journal_as_applied_even_with_nothing_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
            let q = FreshQueue::default();
            assert_eq!(spill(&store, [(NAME, &q)], u64::MAX, Some(7)).unwrap(), 0);
        }
        // Frames 1..=7 were delivered from memory: a restart must not bring them back.
        let mut journal = crate::spool::journal::Journal::open(dir.path()).unwrap();
        let mut bytes = Vec::new();
        crate::spool::journal::encode(&mut bytes, journal.key(), 7, 6, "a/b:log", b"7");
        crate::spool::journal::encode(&mut bytes, journal.key(), 8, 7, "a/b:log", b"8");
        journal.write(&bytes).unwrap();
        drop(journal);
        let store = Store::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        let kept: Vec<u64> = store
            .oldest_n(destination_id(NAME), 10, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(kept, [8]);
    }
}
