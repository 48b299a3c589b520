//! The spool's file: one redb database (the only file that imports redb).
//!
//! Tables: `queue` holds each destination's records in arrival order, keyed by (destination
//! id, sequence); `destinations` names the ids; `dead_letters` keeps what ran out of retries;
//! `meta` holds the next sequence number and the bytes in use. Every commit is
//! `Durability::Immediate` (fsync): a record is on disk before its request is acknowledged.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// (destination id, sequence) -> encoded record.
const QUEUE: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("queue");
/// destination id -> destination name (`namespace/webhook#index:module`).
const DESTINATIONS: TableDefinition<'_, u64, &str> = TableDefinition::new("destinations");
/// sequence -> destination name length (u32 LE) + name + encoded record.
const DEAD: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("dead_letters");
/// `next_seq`, `bytes`.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// A store failure (the disk, or a damaged file).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("spool store: {0}")]
    Redb(#[from] redb::Error),
    #[error("the spool is full ({used} of {max} bytes in use)")]
    Full { used: u64, max: u64 },
    #[error("spool directory: {0}")]
    Io(#[from] std::io::Error),
    /// The batch this append was part of could not be committed.
    #[error("spool commit failed: {0}")]
    Commit(String),
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

/// The spool file.
pub struct Store {
    db: Database,
    max_bytes: u64,
}

/// Space a record takes, for `SPOOL_MAX_BYTES` (the value plus its key).
fn footprint(record: &[u8]) -> u64 {
    record.len() as u64 + 16
}

impl Store {
    /// Opens (or creates) the spool file; a file left by a crash is repaired by redb here.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(QUEUE)?;
            txn.open_table(DESTINATIONS)?;
            txn.open_table(DEAD)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(Self { db, max_bytes })
    }

    /// Bytes held by queued records (dead letters included).
    pub fn bytes_used(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("bytes")?.map_or(0, |v| v.value()))
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends a batch in one transaction (one fsync). Each element gets its sequence number,
    /// or `Full` when it would pass `max_bytes` (nothing already stored is ever dropped for it).
    pub fn append(
        &self,
        batch: &[(&str, &[u8])],
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut queue = txn.open_table(QUEUE)?;
            let mut names = txn.open_table(DESTINATIONS)?;
            let mut meta = txn.open_table(META)?;
            let mut next = meta.get("next_seq")?.map_or(1, |v| v.value());
            let mut used = meta.get("bytes")?.map_or(0, |v| v.value());
            for (destination, record) in batch {
                let size = footprint(record);
                if used.saturating_add(size) > self.max_bytes {
                    results.push(Err(StoreError::Full {
                        used,
                        max: self.max_bytes,
                    }));
                    continue;
                }
                let id = destination_id(destination);
                if names.get(id)?.is_none() {
                    names.insert(id, *destination)?;
                }
                queue.insert((id, next), *record)?;
                results.push(Ok(next));
                next += 1;
                used += size;
            }
            meta.insert("next_seq", next)?;
            meta.insert("bytes", used)?;
        }
        txn.commit()?;
        Ok(results)
    }

    /// The oldest record of a destination.
    pub fn oldest(&self, destination: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let mut range = queue.range((destination, 0)..=(destination, u64::MAX))?;
        match range.next() {
            Some(entry) => {
                let (key, value) = entry?;
                Ok(Some((key.value().1, value.value().to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Removes a delivered record.
    pub fn remove(&self, destination: u64, seq: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut queue = txn.open_table(QUEUE)?;
            let mut meta = txn.open_table(META)?;
            let size = queue
                .remove((destination, seq))?
                .map(|v| footprint(v.value()));
            if let Some(size) = size {
                let used = meta.get("bytes")?.map_or(0, |v| v.value());
                meta.insert("bytes", used.saturating_sub(size))?;
            }
            size.is_some()
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Replaces a queued record (its retry state changed).
    pub fn update(&self, destination: u64, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            let mut meta = txn.open_table(META)?;
            let old = queue
                .insert((destination, seq), record)?
                .map(|v| footprint(v.value()));
            let used = meta.get("bytes")?.map_or(0, |v| v.value());
            let used = used.saturating_sub(old.unwrap_or(0)) + footprint(record);
            meta.insert("bytes", used)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Moves a record to the dead letters (same transaction: it is never in neither).
    pub fn kill(&self, destination: u64, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            let names = txn.open_table(DESTINATIONS)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut meta = txn.open_table(META)?;
            let old = queue
                .remove((destination, seq))?
                .map(|v| footprint(v.value()));
            let name = names
                .get(destination)?
                .map(|v| v.value().to_owned())
                .unwrap_or_default();
            let mut value = Vec::with_capacity(4 + name.len() + record.len());
            value.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_le_bytes());
            value.extend_from_slice(name.as_bytes());
            value.extend_from_slice(record);
            dead.insert(seq, value.as_slice())?;
            let used = meta.get("bytes")?.map_or(0, |v| v.value());
            let used = used.saturating_sub(old.unwrap_or(0)) + footprint(&value);
            meta.insert("bytes", used)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every dead letter: (sequence, destination name, encoded record).
    pub fn dead_letters(&self) -> Result<Vec<(u64, String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let dead = txn.open_table(DEAD)?;
        let mut out = Vec::new();
        for entry in dead.iter()? {
            let (key, value) = entry?;
            let value = value.value();
            let Some(len) = value
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            else {
                continue;
            };
            let name = value
                .get(4..4 + len)
                .map(|n| String::from_utf8_lossy(n).into_owned());
            let record = value.get(4 + len..).map(<[u8]>::to_vec);
            if let (Some(name), Some(record)) = (name, record) {
                out.push((key.value(), name, record));
            }
        }
        Ok(out)
    }

    /// Every destination with queued records.
    pub fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        let txn = self.db.begin_read()?;
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

    fn store(dir: &tempfile::TempDir, max: u64) -> Store {
        Store::open(&dir.path().join("spool.redb"), max).unwrap()
    }

    #[test]
    fn records_come_back_per_destination_in_arrival_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store(&dir, 1 << 20);
            let results = s
                .append(&[("a", b"1"), ("b", b"x"), ("a", b"2"), ("a", b"3")])
                .unwrap();
            assert!(results.iter().all(Result::is_ok));
        }
        let s = store(&dir, 1 << 20);
        let a = destination_id("a");
        let mut seen = Vec::new();
        while let Some((seq, record)) = s.oldest(a).unwrap() {
            seen.push(record);
            assert!(s.remove(a, seq).unwrap());
        }
        assert_eq!(seen, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        let queues = s.queues().unwrap();
        assert_eq!(queues.len(), 1);
        assert_eq!((queues[0].name.as_str(), queues[0].depth), ("b", 1));
    }

    #[test]
    fn a_full_spool_refuses_new_records_and_keeps_the_stored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 80);
        let results = s
            .append(&[("a", &[0u8; 20]), ("a", &[1u8; 20]), ("a", &[2u8; 20])])
            .unwrap();
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(
            matches!(results[2], Err(StoreError::Full { used: 72, max: 80 })),
            "{:?}",
            results[2]
        );
        assert_eq!(s.bytes_used().unwrap(), 72);
        let a = destination_id("a");
        let (seq, first) = s.oldest(a).unwrap().unwrap();
        assert_eq!(first, vec![0u8; 20]);
        s.remove(a, seq).unwrap();
        assert!(
            s.append(&[("a", &[3u8; 20])]).unwrap()[0].is_ok(),
            "room again"
        );
    }

    #[test]
    fn dead_letters_keep_their_destination_and_leave_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 1 << 20);
        let seq = s.append(&[("ns/w#0:redis_stream", b"rec")]).unwrap()[0]
            .as_ref()
            .copied()
            .unwrap();
        let id = destination_id("ns/w#0:redis_stream");
        s.kill(id, seq, b"rec").unwrap();
        assert_eq!(s.oldest(id).unwrap(), None);
        assert_eq!(
            s.dead_letters().unwrap(),
            vec![(seq, "ns/w#0:redis_stream".to_owned(), b"rec".to_vec())]
        );
    }
}
