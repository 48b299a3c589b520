//! The spool's file: one redb database (the only file that imports redb).
//!
//! Tables: `queue` holds each destination's records in arrival order, keyed by (destination
//! id, sequence); `destinations` names the ids; `dead_letters` keeps what ran out of retries.
//! `meta` keeps the highest sequence number of the journal the file accounts for (each record up
//! to it is here or was delivered). The next sequence number and the bytes in use are counted at
//! open and kept in memory. An append is made durable by the journal (`super::journal`); only
//! records not delivered from memory in time come here (`super::fresh`), without an fsync of
//! their own; the file is made durable before the journal starts over, and what the journal
//! holds beyond it is applied again at open.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use super::{
    damage::{self, Damage, OnDamage, Problem},
    journal,
    record::{SpooledDelivery, Summary},
    DeadLetterReport,
};

use redb::{
    Database, Durability, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};

/// (destination id, sequence) -> encoded record.
const QUEUE: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("queue");
/// destination id -> destination name (`namespace/webhook#index:module`).
const DESTINATIONS: TableDefinition<'_, u64, &str> = TableDefinition::new("destinations");
/// sequence -> destination name length (u32 LE) + name + encoded record.
const DEAD: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("dead_letters");
/// [`APPLIED`] -> the highest journal sequence number the file accounts for (each record up to
/// it is in the file or was delivered).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const APPLIED: &str = "applied";
/// Present once the journal files were created beside the file: from then on, a missing
/// journal file is damage.
const JOURNALED: &str = "journaled";

/// A store failure (the disk, or a damaged file).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("spool store: {0}")]
    Redb(#[from] redb::Error),
    #[error("the spool is full ({used} of {max} bytes in use)")]
    Full { used: u64, max: u64 },
    #[error("spool directory: {0}")]
    Io(#[from] std::io::Error),
    /// The file is being reopened after an I/O error.
    #[error("the spool file is closed after an I/O error (it is reopened when the disk works)")]
    Closed,
    /// The batch this append was part of could not be committed.
    #[error("spool commit failed: {0}")]
    Commit(String),
    /// The files are damaged (found at open, refused by `SPOOL_ON_DAMAGE=refuse`).
    #[error("{0}")]
    Damaged(Box<Damage>),
}

impl StoreError {
    /// Another process (a running instance) has the file open.
    pub fn in_use(&self) -> bool {
        matches!(self, Self::Redb(redb::Error::DatabaseAlreadyOpen))
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A destination's stable id: the first 8 bytes of SHA-256 of its name.
pub fn destination_id(name: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id)
}

/// One destination's queue, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    pub depth: u64,
    pub bytes: u64,
    /// Sequence number of the oldest record (lower is older).
    pub oldest: Option<u64>,
}

/// A record that ran out of retries, with the destination it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: u64,
    pub destination: String,
    /// The encoded [`SpooledDelivery`], with its attempts and last error.
    pub record: Vec<u8>,
}

/// What moving a record to the dead letters changed: the space it took queued, the space it
/// takes as a dead letter, and the space of the dead letter it replaced, if it was one already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed {
    pub queued: u64,
    pub dead: u64,
    pub replaced: Option<u64>,
}

/// A stored dead letter: name length (u32 LE), name, record.
fn split_dead(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = value
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    Some((value.get(4..4 + len)?, value.get(4 + len..)?))
}

impl DeadLetter {
    fn split(seq: u64, value: &[u8]) -> Option<Self> {
        let (destination, record) = split_dead(value)?;
        Some(Self {
            seq,
            destination: String::from_utf8_lossy(destination).into_owned(),
            record: record.to_vec(),
        })
    }
}

/// The dead letters `seqs` names, or all of them.
fn chosen(
    dead: &redb::Table<'_, u64, &[u8]>,
    seqs: Option<&[u64]>,
) -> Result<Vec<u64>, StoreError> {
    match seqs {
        Some(seqs) => Ok(seqs.to_vec()),
        None => dead
            .iter()?
            .map(|entry| entry.map(|(key, _)| key.value()).map_err(StoreError::from))
            .collect(),
    }
}

/// The spool file.
pub struct Store {
    /// `None` only while it is reopened after an I/O error (see [`Store::probe`]).
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: std::path::PathBuf,
    max_bytes: u64,
    /// `counters.used`, readable without the lock.
    used: AtomicU64,
    /// Held only while the counters change, never across a transaction: the writer's admit
    /// must not wait for a forwarder's or the syncer's commit.
    counters: std::sync::Mutex<Counters>,
    /// Forwarder commits so far (see [`Store::lazy`]).
    lazy_commits: AtomicU64,
    /// The highest sequence number the file durably accounts for (see [`Store::spill`]).
    applied: AtomicU64,
    /// What the file takes on disk, as of the last sync (see [`Store::settle_disk`]).
    on_disk: AtomicU64,
}

/// What the store counts in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    /// The next sequence number.
    next: u64,
    /// Bytes held by queued records and dead letters (their footprints).
    used: u64,
}

/// The bytes one write transaction takes and gives back; added to the counters once it
/// committed.
#[derive(Debug, Default)]
struct Usage {
    added: u64,
    freed: u64,
}

/// Inserts journaled records (sequence number, destination, record) under their own numbers.
fn insert_journaled(
    txn: &redb::WriteTransaction,
    records: &[(u64, &str, &[u8])],
) -> Result<(), StoreError> {
    let mut queue = txn.open_table(QUEUE)?;
    let mut names = txn.open_table(DESTINATIONS)?;
    for &(seq, destination, record) in records {
        let id = destination_id(destination);
        if names.get(id)?.is_none() {
            names.insert(id, destination)?;
        }
        queue.insert((id, seq), record)?;
    }
    Ok(())
}

/// The highest journal number the file accounts for, and whether it holds or held records (a
/// new file holds nothing and has no tables yet).
fn read_applied(db: &Database) -> Result<(u64, bool), StoreError> {
    let txn = db.begin_read()?;
    let missing =
        |error: &redb::TableError| matches!(error, redb::TableError::TableDoesNotExist(_));
    let applied = match txn.open_table(META) {
        Ok(meta) => meta.get(APPLIED)?.map_or(0, |v| v.value()),
        Err(error) if missing(&error) => 0,
        Err(error) => return Err(error.into()),
    };
    let queued = match txn.open_table(QUEUE) {
        Ok(queue) => !queue.is_empty()?,
        Err(error) if missing(&error) => false,
        Err(error) => return Err(error.into()),
    };
    let dead = match txn.open_table(DEAD) {
        Ok(dead) => !dead.is_empty()?,
        Err(error) if missing(&error) => false,
        Err(error) => return Err(error.into()),
    };
    let journaled = match txn.open_table(META) {
        Ok(meta) => meta.get(JOURNALED)?.is_some(),
        Err(error) if missing(&error) => false,
        Err(error) => return Err(error.into()),
    };
    Ok((applied, journaled || applied > 0 || queued || dead))
}

/// Reads every record once: the highest sequence number and the bytes in use.
fn scan(db: &Database) -> Result<Counters, StoreError> {
    let txn = db.begin_read()?;
    let queue = txn.open_table(QUEUE)?;
    let dead = txn.open_table(DEAD)?;
    let mut counters = Counters { next: 1, used: 0 };
    for entry in queue.iter()? {
        let (key, value) = entry?;
        counters.next = counters.next.max(key.value().1.saturating_add(1));
        counters.used += footprint(value.value());
    }
    for entry in dead.iter()? {
        let (key, value) = entry?;
        counters.next = counters.next.max(key.value().saturating_add(1));
        counters.used += footprint(value.value());
    }
    Ok(counters)
}

/// One forwarder commit in this many is fsynced.
const LAZY_COMMITS: u64 = 32;

/// redb's page cache.
const CACHE_BYTES: usize = 32 << 20;

/// The file's name inside `SPOOL_DIR`.
pub const FILE_NAME: &str = super::files::STORE;

/// What a record costs in the file beside its value and key: its entry in a B-tree leaf and
/// its share of the pages' unused room, so the file's size follows what is counted.
const ENTRY_OVERHEAD: u64 = 128;

/// Space a record takes, for `SPOOL_MAX_BYTES` (the value, its key and its entry's overhead).
pub fn footprint(record: &[u8]) -> u64 {
    record.len() as u64 + 16 + ENTRY_OVERHEAD
}

/// Bytes the file at `path` takes on disk (its allocated blocks: a file grown but not yet
/// written takes none).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

impl Store {
    /// Opens the spool file, refusing damaged files (see [`Store::open_with`]).
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(path, max_bytes, OnDamage::Refuse).map(|(store, _)| store)
    }

    /// Opens (or creates) the spool file; a file left by a crash is repaired by redb here, and
    /// the journal beside it (`journal::FILE_NAMES`) applied: its acknowledged frames past the
    /// file's last durable commit go back in (under their own numbers, so applying one twice
    /// changes nothing). Damage (`super::damage`) is refused before anything is written, or
    /// with [`OnDamage::Salvage`] every readable record is kept and the damage returned.
    pub fn open_with(
        path: &Path,
        max_bytes: u64,
        on_damage: OnDamage,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        let files = damage::read_journal(path.parent().unwrap_or(Path::new(".")))?;
        let mut problems = Vec::new();
        let store_there = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if !store_there && files.iter().any(|(_, found)| found.is_some()) {
            let journal_records = damage::chain(&files, 0).frames.len();
            problems.push(Problem::StoreMissing { journal_records });
            if on_damage == OnDamage::Refuse {
                return Err(StoreError::Damaged(Box::new(Damage {
                    problems,
                    readable: journal_records,
                })));
            }
        }
        let refuse = |problems: Vec<Problem>, readable: usize| {
            StoreError::Damaged(Box::new(Damage { problems, readable }))
        };
        // A bounded page cache: memory must not grow with the spool's depth (redb's default
        // cache is far larger than the router needs).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let (applied, holds) = read_applied(&db)?;
        if store_there && holds {
            for (file, found) in &files {
                match found {
                    None => problems.push(Problem::JournalMissing { file, len: None }),
                    Some((len, _)) if *len < journal::PREALLOCATED => {
                        problems.push(Problem::JournalMissing {
                            file,
                            len: Some(*len),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        let chain = damage::chain(&files, applied);
        problems.extend(chain.lost.iter().cloned().map(Problem::Lost));
        let found = (!problems.is_empty()).then_some(Damage {
            problems,
            readable: chain.frames.len(),
        });
        if let (Some(found), OnDamage::Refuse) = (&found, on_damage) {
            return Err(refuse(found.problems.clone(), found.readable));
        }
        let missing: Vec<(u64, &str, &[u8])> = chain
            .frames
            .iter()
            .map(|f| (f.seq, f.destination.as_str(), f.record.as_slice()))
            .collect();
        let txn = db.begin_write()?;
        txn.open_table(DEAD)?;
        // Also creates the tables on a new file.
        insert_journaled(&txn, &missing)?;
        // Every number the journal holds is taken: a frame off the chain is never read again.
        let applied = applied.max(chain.highest);
        txn.open_table(META)?.insert(APPLIED, applied)?;
        if !missing.is_empty() {
            tracing::info!(
                records = missing.len(),
                "Spool journal applied after an unclean stop."
            );
        }
        txn.commit()?;
        // Counted once here rather than written at every commit (one page less per fsync):
        // the next sequence number follows the highest one stored and the highest one ever
        // journaled, so a number is never reused while its record exists, and a new frame is
        // never taken for one already applied.
        let mut counters = scan(&db)?;
        counters.next = counters.next.max(applied.saturating_add(1));
        let store = Self {
            db: std::sync::RwLock::new(Some(Arc::new(db))),
            path: path.to_owned(),
            max_bytes,
            used: AtomicU64::new(counters.used),
            counters: std::sync::Mutex::new(counters),
            lazy_commits: AtomicU64::new(0),
            applied: AtomicU64::new(applied),
            on_disk: AtomicU64::new(allocated(path)),
        };
        Ok((store, found))
    }

    /// Runs `work` while no transaction uses the file (tests: the files as a crash at this
    /// moment leaves them).
    #[cfg(test)]
    pub fn quiesced<T>(&self, work: impl FnOnce() -> T) -> T {
        let slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) {
            std::thread::yield_now();
        }
        work()
    }

    /// What the file takes on disk.
    pub fn on_disk(&self) -> u64 {
        self.on_disk.load(Ordering::Acquire)
    }

    /// After a sync: measures what the file takes on disk and compacts it when the room left
    /// free inside it is more than a tenth of `SPOOL_MAX_BYTES` and either the file is past
    /// its bound or at least half of it is free (a compaction copies what is in use: when it
    /// is little, after a backlog was delivered, it is quick). Skipped while any other
    /// operation holds the file (the next sync tries again). Runs on the syncer's thread.
    pub fn settle_disk(&self) {
        let before = allocated(&self.path);
        self.on_disk.store(before, Ordering::Release);
        let used = self.used();
        let slack = before.saturating_sub(used);
        let over = before > self.max_bytes + self.max_bytes / 10;
        if slack <= self.max_bytes / 10 || !(over || used <= before / 2) {
            return;
        }
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(db) = slot.as_mut().and_then(Arc::get_mut) else {
            return;
        };
        match db.compact() {
            Ok(_) => {
                let after = allocated(&self.path);
                self.on_disk.store(after, Ordering::Release);
                tracing::info!(before, after, used, "Spool file compacted.");
            }
            // A transaction under way (a forwarder's): the next sync tries again.
            Err(redb::CompactionError::TransactionInProgress) => {}
            Err(error) => tracing::warn!(%error, "Spool file compaction failed."),
        }
    }

    /// Records (durably) that the journal files exist beside the file: from then on a missing
    /// one is damage, not a first start interrupted before it created them.
    pub fn journal_created(&self) -> Result<(), StoreError> {
        let db = self.db()?;
        if db.begin_read()?.open_table(META)?.get(JOURNALED)?.is_some() {
            return Ok(());
        }
        self.write(Durability::Immediate, |txn, _| {
            txn.open_table(META)?.insert(JOURNALED, 1)?;
            Ok(())
        })
    }

    /// The highest journal number the file accounts for: after it, the first frame's `prev`.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The database (a handle: the file stays open while a transaction uses it).
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Whether the file takes a durable commit. After an I/O error redb refuses every later
    /// transaction until the file is closed and opened again: then it is reopened (which also
    /// repairs it: commits made without an fsync since the last durable one are gone) and tried
    /// once more. Before it is, `before_reopen` runs (memory lets go of its records: the file
    /// will hold them); the journal is then applied to it again along the chain from `acked`
    /// (the last acknowledged frame: frames of failed writes after it are not), and it accounts
    /// for every number up to `journaled`. `Ok(true)` when it was reopened.
    pub fn probe(
        &self,
        acked: u64,
        journaled: u64,
        before_reopen: impl FnOnce(),
    ) -> Result<bool, StoreError> {
        let commit = || -> Result<(), StoreError> {
            let mut txn = self.db()?.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.open_table(META)?.insert(APPLIED, self.applied())?;
            txn.commit()?;
            Ok(())
        };
        match commit() {
            Ok(()) => Ok(false),
            Err(error) => {
                tracing::warn!(%error, "Spool file refused a commit; reopening it.");
                before_reopen();
                self.reopen(acked, journaled)?;
                commit()?;
                Ok(true)
            }
        }
    }

    /// Closes the file and opens it again. The old handle closes once the transactions that
    /// still use it end; until then opening fails and the next probe tries again.
    fn reopen(&self, acked: u64, journaled: u64) -> Result<(), StoreError> {
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(slot.take());
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&self.path)?;
        // What the journal holds beyond the file's last durable commit goes back in, as at
        // open (what went in without an fsync was rolled back by the repair).
        let files = damage::read_journal(self.path.parent().unwrap_or(Path::new(".")))?;
        let (applied, _) = read_applied(&db)?;
        let chain = damage::chain_from(&files, applied, Some(acked));
        for lost in &chain.lost {
            tracing::error!(lost = %Problem::Lost(lost.clone()), "Spool journal damaged.");
        }
        let applied = applied.max(journaled);
        let records: Vec<(u64, &str, &[u8])> = chain
            .frames
            .iter()
            .map(|f| (f.seq, f.destination.as_str(), f.record.as_slice()))
            .collect();
        let txn = db.begin_write()?;
        insert_journaled(&txn, &records)?;
        txn.open_table(META)?.insert(APPLIED, applied)?;
        txn.commit()?;
        let counters = scan(&db)?;
        {
            let mut mine = self.lock();
            mine.used = counters.used;
            self.used.store(counters.used, Ordering::Release);
        }
        self.applied.store(applied, Ordering::Release);
        *slot = Some(Arc::new(db));
        Ok(())
    }

    /// The counters (briefly: see the field).
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The durability of a forwarder's bookkeeping (removing delivered records, retry state):
    /// no fsync of its own, since losing it in a crash only redelivers (a duplicate, never a
    /// loss) and the next append's fsync persists it anyway; every [`LAZY_COMMITS`]th is
    /// fsynced, so a long drain with no appends is not all redelivered after a crash.
    fn lazy(&self) -> Durability {
        if self.lazy_commits.fetch_add(1, Ordering::AcqRel) % LAZY_COMMITS == LAZY_COMMITS - 1 {
            Durability::Immediate
        } else {
            Durability::None
        }
    }

    /// Bytes held as of the last commit (no transaction).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// One write transaction; the bytes `work` records in its [`Usage`] count only if the
    /// commit succeeds. redb runs one write transaction at a time (`begin_write` waits for the
    /// one before); the counters are not locked meanwhile.
    fn write<T>(
        &self,
        durability: Durability,
        work: impl FnOnce(&redb::WriteTransaction, &mut Usage) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(durability)?;
        let mut usage = Usage::default();
        let out = work(&txn, &mut usage)?;
        txn.commit()?;
        if usage.added > 0 || usage.freed > 0 {
            let mut counters = self.lock();
            counters.used = (counters.used + usage.added).saturating_sub(usage.freed);
            self.used.store(counters.used, Ordering::Release);
        }
        Ok(out)
    }

    /// A sequence number for a record written outside the journal (a replayed dead letter).
    /// Never handed out again, even if its transaction fails (it may reach the disk anyway).
    fn take_seq(&self) -> u64 {
        let mut counters = self.lock();
        counters.next += 1;
        counters.next - 1
    }

    /// Takes room and sequence numbers for groups of records, before they are journaled. A group
    /// is all of one request's records (`(bytes, records)`): it gets room whole, or is refused
    /// whole with `Full` when it would pass `max_bytes` (nothing already stored is ever dropped
    /// for it). Returns each group's first sequence number.
    pub fn admit(&self, groups: &[(u64, u64)]) -> Vec<Result<u64, StoreError>> {
        let mut counters = self.lock();
        let results = groups
            .iter()
            .map(|&(size, records)| {
                if counters.used.saturating_add(size) > self.max_bytes {
                    return Err(StoreError::Full {
                        used: counters.used,
                        max: self.max_bytes,
                    });
                }
                let first = counters.next;
                counters.next += records;
                counters.used += size;
                Ok(first)
            })
            .collect();
        self.used.store(counters.used, Ordering::Release);
        results
    }

    /// Gives back room taken by [`Store::admit`] for records that were not journaled.
    pub fn release(&self, bytes: u64) {
        let mut counters = self.lock();
        counters.used = counters.used.saturating_sub(bytes);
        self.used.store(counters.used, Ordering::Release);
    }

    /// Puts journaled records (sequence number, destination, record) into their queues: the
    /// ones not delivered from memory in time (see `super::fresh`). Without `synced_to`, no
    /// fsync (the journal still holds them). With it, the file is made durable and says that
    /// every journaled record up to that number is in it or delivered: the journal may then
    /// start over.
    pub fn spill(
        &self,
        records: &[(u64, &str, &[u8])],
        synced_to: Option<u64>,
    ) -> Result<(), StoreError> {
        let durability = match synced_to {
            Some(_) => Durability::Immediate,
            None => Durability::None,
        };
        let applied = synced_to.map(|n| n.max(self.applied.load(Ordering::Acquire)));
        self.write(durability, |txn, _| {
            insert_journaled(txn, records)?;
            if let Some(applied) = applied {
                txn.open_table(META)?.insert(APPLIED, applied)?;
            }
            Ok(())
        })?;
        if let Some(applied) = applied {
            self.applied.fetch_max(applied, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Admits, applies and syncs groups of records at once (tests: the writer journals them).
    #[cfg(test)]
    pub fn append(
        &self,
        groups: &[Vec<(&str, &[u8])>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let sizes: Vec<(u64, u64)> = groups
            .iter()
            .map(|g| (g.iter().map(|(_, r)| footprint(r)).sum(), g.len() as u64))
            .collect();
        let admitted = self.admit(&sizes);
        let mut records = Vec::new();
        for (group, first) in groups.iter().zip(&admitted) {
            if let Ok(first) = first {
                for (i, (destination, record)) in group.iter().enumerate() {
                    records.push((first + i as u64, *destination, *record));
                }
            }
        }
        let last = records.iter().map(|r| r.0).max().unwrap_or(0);
        self.spill(&records, Some(last))?;
        Ok(admitted.into_iter().map(|r| r.map(|_| ())).collect())
    }

    /// A destination's oldest records, in order: at most `limit` of them, and no more once
    /// `max_bytes` are taken (always at least one).
    pub fn oldest_n(
        &self,
        destination: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let mut out = Vec::new();
        let mut taken = 0;
        for entry in queue.range((destination, 0)..=(destination, u64::MAX))? {
            if out.len() >= limit || taken >= max_bytes {
                break;
            }
            let (key, value) = entry?;
            taken += value.value().len();
            out.push((key.value().1, value.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes delivered records in one transaction; returns how many were there and the
    /// space they took.
    pub fn remove_all(&self, destination: u64, seqs: &[u64]) -> Result<(u64, u64), StoreError> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Ok((0, 0));
        };
        self.write(self.lazy(), |txn, usage| {
            let mut queue = txn.open_table(QUEUE)?;
            let (mut removed, mut freed) = (0, 0);
            // One scan over the batch's range (a batch is usually contiguous), not one descent
            // from the root per record: removal was the forwarder's largest cost in the drain.
            queue.retain_in((destination, first)..=(destination, last), |key, value| {
                let delivered = seqs.binary_search(&key.1).is_ok();
                if delivered {
                    removed += 1;
                    freed += footprint(value);
                }
                !delivered
            })?;
            usage.freed = freed;
            Ok((removed, freed))
        })
    }

    /// Replaces a queued record (its retry state changed); returns the space it took before.
    pub fn update(&self, destination: u64, seq: u64, record: &[u8]) -> Result<u64, StoreError> {
        self.write(self.lazy(), |txn, usage| {
            let mut queue = txn.open_table(QUEUE)?;
            let old = queue
                .insert((destination, seq), record)?
                .map_or(0, |v| footprint(v.value()));
            usage.freed = old;
            usage.added = footprint(record);
            Ok(old)
        })
    }

    /// Moves a record to the dead letters (same transaction: it is never in neither); returns
    /// what that changed ([`Killed`]).
    pub fn kill(&self, destination: u64, seq: u64, record: &[u8]) -> Result<Killed, StoreError> {
        self.write(Durability::Immediate, |txn, usage| {
            let mut queue = txn.open_table(QUEUE)?;
            let names = txn.open_table(DESTINATIONS)?;
            let mut dead = txn.open_table(DEAD)?;
            let old = queue
                .remove((destination, seq))?
                .map_or(0, |v| footprint(v.value()));
            let name = names
                .get(destination)?
                .map(|v| v.value().to_owned())
                .unwrap_or_default();
            let mut value = Vec::with_capacity(4 + name.len() + record.len());
            value.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_le_bytes());
            value.extend_from_slice(name.as_bytes());
            value.extend_from_slice(record);
            // Already a dead letter (the journal brought the record back after a crash): the
            // old one is replaced, not counted twice.
            let replaced = dead
                .insert(seq, value.as_slice())?
                .map(|v| footprint(v.value()));
            usage.freed = old + replaced.unwrap_or(0);
            usage.added = footprint(&value);
            Ok(Killed {
                queued: old,
                dead: footprint(&value),
                replaced,
            })
        })
    }

    /// Dead letters in order, at most `limit`, bodies included (tests; operators get
    /// [`Store::dead_letter_reports`]).
    #[cfg(test)]
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        let mut out = Vec::new();
        for entry in dead.iter()? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if let Some(letter) = DeadLetter::split(key.value(), value.value()) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// Puts dead letters (all, or those in `seqs`) back at the end of their destination's
    /// queue with a fresh retry horizon starting at `now_ms`. Returns what moved: (destination
    /// name, bytes it took as a dead letter, bytes it takes queued). A letter whose record
    /// cannot be read stays where it is.
    pub fn replay(
        &self,
        seqs: Option<&[u64]>,
        now_ms: u64,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.write(Durability::Immediate, |txn, usage| {
            let mut queue = txn.open_table(QUEUE)?;
            let mut names = txn.open_table(DESTINATIONS)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut moved = Vec::new();
            for seq in chosen(&dead, seqs)? {
                let Some(value) = dead.get(seq)?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let Some(letter) = DeadLetter::split(seq, &value) else {
                    continue;
                };
                let Ok(mut record) = SpooledDelivery::decode(&letter.record) else {
                    continue;
                };
                record.attempts = 0;
                record.retry_from_ms = now_ms;
                record.refused = false;
                let bytes = record.encode();
                let id = destination_id(&letter.destination);
                if names.get(id)?.is_none() {
                    names.insert(id, letter.destination.as_str())?;
                }
                queue.insert((id, self.take_seq()), bytes.as_slice())?;
                dead.remove(seq)?;
                usage.freed += footprint(&value);
                usage.added += footprint(&bytes);
                moved.push((letter.destination, footprint(&value), footprint(&bytes)));
            }
            Ok(moved)
        })
    }

    /// Deletes dead letters (all, or those in `seqs`); returns the destination and bytes of each.
    pub fn purge(&self, seqs: Option<&[u64]>) -> Result<Vec<(String, u64)>, StoreError> {
        self.write(Durability::Immediate, |txn, usage| {
            let mut dead = txn.open_table(DEAD)?;
            let mut purged = Vec::new();
            for seq in chosen(&dead, seqs)? {
                let Some(value) = dead.remove(seq)?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                usage.freed += footprint(&value);
                purged.push((
                    DeadLetter::split(seq, &value).map_or_else(String::new, |l| l.destination),
                    footprint(&value),
                ));
            }
            Ok(purged)
        })
    }

    /// When a destination's oldest record was received (its body is not copied).
    pub fn oldest_received_at(
        &self,
        destination: u64,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let mut range = queue.range((destination, 0)..=(destination, u64::MAX))?;
        match range.next() {
            Some(entry) => {
                let (_, value) = entry?;
                Ok(Summary::decode(value.value()).ok().map(|s| s.received_at))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` dead letters, oldest first, described without copying their bodies.
    pub fn dead_letter_reports(&self, limit: usize) -> Result<Vec<DeadLetterReport>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        let mut out = Vec::new();
        for entry in dead.iter()?.take(limit) {
            let (key, value) = entry?;
            let value = value.value();
            let Some((destination, record)) = split_dead(value) else {
                continue;
            };
            out.push(DeadLetterReport::from_stored(
                key.value(),
                &String::from_utf8_lossy(destination),
                record,
            ));
        }
        Ok(out)
    }

    /// How many dead letters each destination has, and the bytes they take.
    pub fn dead_counts(&self) -> Result<HashMap<String, (u64, u64)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        for entry in dead.iter()? {
            let (_, value) = entry?;
            let value = value.value();
            if let Some((destination, _)) = split_dead(value) {
                let count = counts
                    .entry(String::from_utf8_lossy(destination).into_owned())
                    .or_default();
                count.0 += 1;
                count.1 += footprint(value);
            }
        }
        Ok(counts)
    }

    /// Every destination with queued records.
    pub fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let names = txn.open_table(DESTINATIONS)?;
        let mut out: Vec<QueueStats> = Vec::new();
        let mut current: Option<u64> = None;
        for entry in queue.iter()? {
            let (key, value) = entry?;
            let (id, seq) = key.value();
            if current != Some(id) {
                current = Some(id);
                let name = names
                    .get(id)?
                    .map_or_else(|| format!("{id:016x}"), |v| v.value().to_owned());
                out.push(QueueStats {
                    name,
                    depth: 0,
                    bytes: 0,
                    oldest: Some(seq),
                });
            }
            if let Some(stats) = out.last_mut() {
                stats.depth += 1;
                stats.bytes += footprint(value.value());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Store {
        /// The oldest record of a destination.
        fn oldest(&self, destination: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
            Ok(self.oldest_n(destination, 1, usize::MAX)?.pop())
        }
    }

    /// The store, with its journal files beside it (as the spool opens them).
    fn store(dir: &tempfile::TempDir, max: u64) -> Store {
        let store = Store::open(&dir.path().join(FILE_NAME), max).unwrap();
        journal::Journal::open(dir.path()).unwrap();
        store.journal_created().unwrap();
        store
    }

    fn one(destination: &str, record: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        vec![(
            Box::leak(destination.to_owned().into_boxed_str()),
            record.to_vec(),
        )]
    }

    fn append(s: &Store, groups: &[Vec<(&'static str, Vec<u8>)>]) -> Vec<bool> {
        let groups: Vec<Vec<(&str, &[u8])>> = groups
            .iter()
            .map(|g| g.iter().map(|(d, r)| (*d, r.as_slice())).collect())
            .collect();
        s.append(&groups)
            .unwrap()
            .iter()
            .map(Result::is_ok)
            .collect()
    }

    /// Writes frames to the journal in `dir` as the writer would, without applying them.
    fn journal_only(dir: &tempfile::TempDir, frames: &[(u64, &str, &[u8])]) {
        let mut journal = journal::Journal::open(dir.path()).unwrap();
        let mut bytes = Vec::new();
        for (seq, destination, record) in frames {
            journal::encode(
                &mut bytes,
                journal.key(),
                *seq,
                seq - 1,
                destination,
                record,
            );
        }
        journal.write(&bytes).unwrap();
    }

    #[test]
    fn journaled_records_the_file_lacks_are_applied_at_open_and_delivered_ones_stay_gone() {
        let dir = tempfile::tempdir().unwrap();
        let a = destination_id("a");
        {
            let s = store(&dir, 1 << 20);
            // 1 and 2 applied (durably), then 1 delivered and removed.
            append(&s, &[one("a", b"1"), one("a", b"2")]);
            s.remove_all(a, &[1]).unwrap();
            s.spill(&[], Some(0)).unwrap();
        }
        // The journal still holds 1 and 2, and 3 and 4, which were answered but never
        // applied (a crash right after their fsync).
        journal_only(
            &dir,
            &[
                (1, "a", b"1"),
                (2, "a", b"2"),
                (3, "a", b"3"),
                (4, "b", b"4"),
            ],
        );
        let s = store(&dir, 1 << 20);
        let records: Vec<Vec<u8>> = s
            .oldest_n(a, 10, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(records, [b"2".to_vec(), b"3".to_vec()], "1 stays delivered");
        assert_eq!(
            s.oldest(destination_id("b")).unwrap().map(|(_, r)| r),
            Some(b"4".to_vec())
        );
        assert_eq!(s.used(), 3 * footprint(b"1"));
        // New numbers follow the highest journaled one, never one the journal still holds.
        append(&s, &[one("a", b"5")]);
        assert_eq!(
            s.oldest_n(a, 10, 1 << 20)
                .unwrap()
                .last()
                .map(|(seq, _)| *seq),
            Some(5)
        );
        drop(s);
        // Applying again changes nothing.
        let s = store(&dir, 1 << 20);
        assert_eq!(s.oldest_n(a, 10, 1 << 20).unwrap().len(), 3);
    }

    #[test]
    fn removing_delivered_records_keeps_the_ones_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 1 << 20);
        let groups: Vec<_> = (1..=6)
            .map(|n| one(if n == 3 { "b" } else { "a" }, format!("{n}").as_bytes()))
            .collect();
        append(&s, &groups);
        let a = destination_id("a");
        // 1, 2, 4, 5, 6 are a's; 3 is b's and inside the range.
        assert_eq!(
            s.remove_all(a, &[5, 1, 3, 2]).unwrap(),
            (3, 3 * footprint(b"1"))
        );
        let left: Vec<u64> = s
            .oldest_n(a, 10, 1 << 20)
            .unwrap()
            .iter()
            .map(|(q, _)| *q)
            .collect();
        assert_eq!(left, [4, 6]);
        assert_eq!(
            s.oldest(destination_id("b")).unwrap().map(|(q, _)| q),
            Some(3)
        );
        assert_eq!(s.used(), 3 * footprint(b"1"));
        assert_eq!(s.remove_all(a, &[]).unwrap(), (0, 0));
    }

    #[test]
    fn records_come_back_per_destination_in_arrival_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(&dir, 1 << 20);
            let stored = append(
                &s,
                &[
                    one("a", b"1"),
                    one("b", b"x"),
                    one("a", b"2"),
                    one("a", b"3"),
                ],
            );
            assert!(stored.iter().all(|ok| *ok));
        }
        let s = store(&dir, 1 << 20);
        assert_eq!(s.used(), 4 * footprint(b"1"), "counted again at open");
        let a = destination_id("a");
        let batch = s.oldest_n(a, 2, 1 << 20).unwrap();
        let records: Vec<&[u8]> = batch.iter().map(|(_, r)| r.as_slice()).collect();
        assert_eq!(records, [b"1", b"2"]);
        let seqs: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(s.remove_all(a, &seqs).unwrap(), (2, 2 * footprint(b"1")));
        assert_eq!(s.oldest(a).unwrap().map(|(_, r)| r), Some(b"3".to_vec()));
        let queues = s.queues().unwrap();
        assert_eq!(queues.len(), 2);
        // Numbers continue after the highest one stored: never reused while a record exists.
        append(&s, &[one("a", b"4")]);
        let newest = s.oldest_n(a, 10, 1 << 20).unwrap();
        assert_eq!(newest.last().map(|(seq, _)| *seq), Some(5));
    }

    #[test]
    fn a_full_spool_refuses_whole_requests_and_keeps_the_stored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (twenty, four) = (footprint(&[0; 20]), footprint(&[0; 4]));
        let s = store(&dir, 2 * twenty + four + 10);
        let two = vec![("a", vec![0u8; 20]), ("b", vec![0u8; 20])];
        let stored = append(&s, &[two.clone(), two, one("a", &[2u8; 4])]);
        assert_eq!(
            stored,
            [true, false, true],
            "the second request did not fit whole"
        );
        assert_eq!(s.used(), 2 * twenty + four);
        let a = destination_id("a");
        let (seq, first) = s.oldest(a).unwrap().unwrap();
        assert_eq!(first, vec![0u8; 20]);
        assert_eq!(s.remove_all(a, &[seq]).unwrap(), (1, twenty));
        assert_eq!(append(&s, &[one("a", &[3u8; 20])]), [true], "room again");
        assert_eq!(append(&s, &[one("a", &[3u8; 20])]), [false], "full again");
    }

    fn record(request_id: &str) -> Vec<u8> {
        use crate::{keys, modules::Delivery};
        SpooledDelivery::new(&Delivery {
            namespace: keys::Namespace::parse("ns").unwrap(),
            webhook: keys::WebhookId::parse("w").unwrap(),
            request_id: request_id.into(),
            received_at: std::time::UNIX_EPOCH,
            headers: vec![],
            body: bytes::Bytes::from_static(b"{}"),
            json: true,
            trace: None,
            relayed: Vec::new(),
        })
        .encode()
    }

    #[test]
    fn dead_letters_keep_their_destination_and_can_be_replayed_or_purged() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 1 << 20);
        let name = "ns/w:redis_stream@r/s";
        let id = destination_id(name);
        append(&s, &[one(name, &record("r1")), one(name, &record("r2"))]);
        for _ in 0..2 {
            let (seq, bytes) = s.oldest(id).unwrap().unwrap();
            s.kill(id, seq, &bytes).unwrap();
        }
        assert_eq!(s.oldest(id).unwrap(), None);
        let dead = s.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].destination, name);
        assert_eq!(s.dead_counts().unwrap().get(name).map(|c| c.0), Some(2));

        let moved = s.replay(Some(&[dead[0].seq]), 5_000).unwrap();
        assert_eq!(moved.len(), 1);
        let (_, back) = s.oldest(id).unwrap().unwrap();
        let back = SpooledDelivery::decode(&back).unwrap();
        assert_eq!(back.delivery.request_id, "r1");
        assert_eq!(
            (back.attempts, back.retry_from_ms),
            (0, 5_000),
            "a fresh horizon"
        );

        let purged = s.purge(None).unwrap();
        assert_eq!(purged.len(), 1);
        assert_eq!(purged[0].0, name);
        assert!(s.dead_letters(10).unwrap().is_empty());
        let queued = footprint(&SpooledDelivery::encode(&back));
        assert_eq!(s.used(), queued, "purged bytes are freed");
    }
}
