//! The spool's journal: where an append becomes durable. Each batch is written as frames after
//! the last ones in one of two preallocated files, durably in one step: a direct write
//! (`O_DIRECT | O_DSYNC`, whole 4 KiB blocks, the last partly written block written again with
//! the next frames), or where the file system refuses that (tmpfs) a write and an fsync. Direct
//! writes skip the page cache, which costs less time and CPU per commit (BENCHMARKS.md). A block
//! written again holds the same bytes for the frames already in it, so a torn write cannot
//! damage them. The same records then wait in memory for their forwarders (`super::fresh`).
//! When a file is full enough, the writer goes on in the other one while what memory still
//! holds is moved to the redb file and made durable (`Store::spill`); once it is, the first file
//! may be written again from its beginning. So the writer never waits for the redb file's
//! fsync. At open, the frames the redb file does not durably account for are put back into it
//! (`Store::open`).
//!
//! Why not an fsync of the redb file per batch: a redb commit writes several pages for a batch
//! of small records and fsyncs them; one contiguous overwrite of a preallocated file costs a
//! fraction of that (BENCHMARKS.md, "After the journal"; docs/design.md).
//!
//! Each file starts with a header block holding a random key; frames' checksums are seeded
//! with it, so a frame forged inside a payload never passes for one.
//!
//! A frame: [`MAGIC`], body length (u32 LE), keyed xxh3-64 of the body (u64 LE); body = sequence
//! number (u64 LE), the number of the acknowledged frame written before it (`prev`, u64 LE),
//! destination key length (u16 LE), destination key, record. Reading a file keeps every whole
//! frame and, after one that is not whole, looks for the next magic number: one damaged frame
//! loses that frame, never the ones after it. Which frames count is decided at open
//! (`super::damage`): the chain of `prev` numbers from the newest frame back to what the redb
//! file already holds; a missing link is damage, a frame off the chain was never acknowledged (a
//! write that failed).

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::Path,
};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The journal's two files inside `SPOOL_DIR`.
pub const FILE_NAMES: [&str; 2] = super::files::JOURNAL;

/// Each file is preallocated with zeros: appends overwrite in place, so an fsync writes data,
/// not metadata.
pub const PREALLOCATED: u64 = 4 << 20;

/// Once this much is written to a file, the writer moves to the other one.
pub const SWITCH_AT: u64 = 3 << 20;

/// What every frame starts with: where a reader looks for the next frame after a damaged one.
pub const MAGIC: [u8; 4] = *b"SWJ2";

/// Magic, length and hash.
const HEADER: usize = 4 + 4 + 8;

/// Sequence number, `prev` and the key's length.
const FIXED: usize = 8 + 8 + 2;

/// One record as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    /// The acknowledged frame written just before this one (0 for none).
    pub prev: u64,
    pub destination: String,
    pub record: Vec<u8>,
}

/// Appends one frame to `out`. A destination key longer than `u16::MAX` bytes cannot be
/// journaled (keys are built from names that validation keeps short).
pub fn encode(out: &mut Vec<u8>, key: u64, seq: u64, prev: u64, destination: &str, record: &[u8]) {
    let name_len = u16::try_from(destination.len()).unwrap_or(u16::MAX);
    let name = &destination.as_bytes()[..usize::from(name_len)];
    let body_len = FIXED + name.len() + record.len();
    let start = out.len();
    out.reserve(HEADER + body_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let body = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&prev.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(record);
    let hash = xxh3_64_with_seed(&out[body..], key);
    out[start + 8..start + HEADER].copy_from_slice(&hash.to_le_bytes());
}

/// A frame whose magic number was found but which is not whole: what could still be read of it
/// (for the report of what damage lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Where it starts in its file.
    pub offset: u64,
    pub seq: Option<u64>,
    pub destination: Option<String>,
    /// As much of the record as the file holds (it may be cut or damaged).
    pub record: Vec<u8>,
}

/// What one journal file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every whole frame, in file order (frames left from before the file was last started
    /// over come after the newer ones, with lower numbers).
    pub frames: Vec<Frame>,
    pub broken: Vec<Broken>,
}

/// Every whole frame of `bytes` (checksums keyed with `key`), and what can be read of the
/// broken ones.
pub fn scan(bytes: &[u8], key: u64) -> Scan {
    let mut out = Scan::default();
    let mut at = 0;
    while let Some(found) = memchr::memmem::find(&bytes[at..], &MAGIC) {
        at += found;
        match decode(&bytes[at..], key) {
            Ok((frame, len)) => {
                out.frames.push(frame);
                at += len;
            }
            Err(broken) => {
                out.broken.push(Broken {
                    offset: at as u64,
                    ..broken
                });
                at += MAGIC.len();
            }
        }
    }
    out
}

/// The frame at the start of `bytes` and its length, or what can be read of it.
fn decode(bytes: &[u8], key: u64) -> Result<(Frame, usize), Broken> {
    let field = |range: std::ops::Range<usize>| bytes.get(range);
    let u64_at = |at: usize| {
        field(at..at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    let body = HEADER;
    let seq = u64_at(body);
    let name_len =
        field(body + 16..body + FIXED).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let name_end = name_len.map(|n| body + FIXED + n);
    let destination = name_end
        .and_then(|end| field(body + FIXED..end))
        .and_then(|name| std::str::from_utf8(name).ok())
        .map(str::to_owned);
    let len = field(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let whole = len
        .filter(|&len| len >= FIXED)
        .and_then(|len| Some((len, field(body..body.checked_add(len)?)?)))
        .filter(|(_, body)| u64_at(8) == Some(xxh3_64_with_seed(body, key)));
    let prev = u64_at(body + 8);
    // A frame is whole when its checksum holds and its fields fit it: a key that runs past the
    // body, or a `prev` that does not come before the frame, is not one the writer wrote.
    let fits =
        |len: usize, seq: u64, end: usize| end <= body + len && prev.is_some_and(|p| p < seq);
    let (Some((len, _)), Some(seq), Some(end), Some(destination)) =
        (whole, seq, name_end, &destination)
    else {
        let end = len
            .and_then(|len| body.checked_add(len))
            .map_or(bytes.len(), |end| end.min(bytes.len()));
        let record = name_end
            .and_then(|start| bytes.get(start..end))
            .unwrap_or_default()
            .to_vec();
        return Err(Broken {
            offset: 0,
            seq,
            destination,
            record,
        });
    };
    let record = bytes.get(end..body + len).filter(|_| fits(len, seq, end));
    let (Some(record), Some(prev)) = (record, prev) else {
        return Err(Broken {
            offset: 0,
            seq: Some(seq),
            destination: Some(destination.clone()),
            record: Vec::new(),
        });
    };
    let frame = Frame {
        seq,
        prev,
        destination: destination.clone(),
        record: record.to_vec(),
    };
    Ok((frame, body + len))
}

/// What a journal file in `dir` holds: `None` when there is no such file. A file whose first
/// block is not a valid header holds no frames that can be trusted (its key is unknown).
pub fn read(dir: &Path, name: &str) -> io::Result<Option<(u64, Scan)>> {
    let mut file = match File::open(dir.join(name)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let len = bytes.len() as u64;
    let scan = match (key_of(&bytes), bytes.get(BLOCK..)) {
        (Some(key), Some(frames)) => {
            let mut scan = scan(frames, key);
            for broken in &mut scan.broken {
                broken.offset += BLOCK as u64;
            }
            scan
        }
        _ => Scan::default(),
    };
    Ok(Some((len, scan)))
}

/// A journal file's first block: [`FILE_MAGIC`], then the key its frames' checksums use
/// (random, made when the file is, u64 LE), then xxh3-64 of both (u64 LE). A sender cannot
/// forge a frame inside a payload it sends, as it cannot know the key.
const FILE_MAGIC: [u8; 4] = *b"SWJF";

/// The key in a file's header, if the header is whole.
fn key_of(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..20)?;
    let hash = u64::from_le_bytes(bytes.get(20..28)?.try_into().ok()?);
    if header[..4] != FILE_MAGIC || xxh3_64(header) != hash {
        return None;
    }
    Some(u64::from_le_bytes(header[12..20].try_into().ok()?))
}

/// A header block for `key`.
fn header(key: u64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK];
    block[..4].copy_from_slice(&FILE_MAGIC);
    block[4..8].copy_from_slice(&1u32.to_le_bytes());
    block[12..20].copy_from_slice(&key.to_le_bytes());
    let hash = xxh3_64(&block[..20]);
    block[20..28].copy_from_slice(&hash.to_le_bytes());
    block
}

/// The key the frames of journal file `name` in `dir` use (tests).
#[cfg(test)]
pub fn key_in(dir: &Path, name: &str) -> Option<u64> {
    key_of(&std::fs::read(dir.join(name)).ok()?)
}

/// What direct writes are aligned to: the file system's block (a multiple of every device's
/// logical block).
const BLOCK: usize = 4096;

/// One journal file.
struct Half {
    file: File,
    /// The key of its frames' checksums (from its header).
    key: u64,
    /// Where the next frame goes.
    position: u64,
    /// Opened `O_DIRECT | O_DSYNC`: each write goes to the device and is durable when it
    /// returns (no page cache, no separate fsync). Otherwise writes are followed by an fsync.
    direct: bool,
    /// With `direct`: the frames of the last, partly written block (they are written again
    /// with the next frames, as direct writes cover whole blocks).
    tail: Vec<u8>,
    /// With `direct`: the blocks of the last write, kept for the next.
    buffer: Vec<u8>,
}

impl Half {
    /// Opens (or creates and preallocates) the file at `path`, for direct writes when
    /// `try_direct` and the file system allows them (tmpfs does not).
    fn open(path: &Path, try_direct: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < PREALLOCATED {
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < PREALLOCATED {
                let n = (PREALLOCATED - at).min(zeros.len() as u64);
                file.write_all_at(&zeros[..n as usize], at)?;
                at += n;
            }
            file.sync_all()?;
            // The file's name must survive a crash too.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut first = vec![0u8; BLOCK];
        file.read_exact_at(&mut first, 0)?;
        // A file without a valid header (new, or from before headers) gets one: the frames in
        // it, if any, are in the redb file already (it was opened first).
        let key = match key_of(&first) {
            Some(key) => key,
            None => {
                let key = uuid::Uuid::new_v4().as_u64_pair().0;
                file.write_all_at(&header(key), 0)?;
                file.sync_data()?;
                key
            }
        };
        let direct = if try_direct {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                .open(path)
                .ok()
        } else {
            None
        };
        let (file, direct) = match direct {
            Some(direct) => (direct, true),
            None => (file, false),
        };
        Ok(Self {
            file,
            key,
            position: BLOCK as u64,
            direct,
            tail: Vec::new(),
            buffer: Vec::new(),
        })
    }

    /// Writes `frames` at `position` and makes them durable.
    fn write(&mut self, frames: &[u8]) -> io::Result<()> {
        if !self.direct {
            self.file.write_all_at(frames, self.position)?;
            return self.file.sync_data();
        }
        // Whole blocks from the start of the partly written one: its frames again, the new
        // ones, zeros to the end of the last block (where the next frames go).
        let start = self.position - self.tail.len() as u64;
        let len = self.tail.len() + frames.len();
        // At least one block: a probe (no frames) writes the last block's bytes again.
        let padded = len.div_ceil(BLOCK).max(1) * BLOCK;
        if self.buffer.len() < padded + BLOCK {
            self.buffer.resize(padded + BLOCK, 0);
        }
        // A block-aligned window of the buffer (its start moves only when it grows).
        let offset = self.buffer.as_ptr().align_offset(BLOCK).min(BLOCK);
        let block = &mut self.buffer[offset..offset + padded];
        block[..self.tail.len()].copy_from_slice(&self.tail);
        block[self.tail.len()..len].copy_from_slice(frames);
        block[len..].fill(0);
        self.file.write_all_at(block, start)?;
        let whole = len / BLOCK * BLOCK;
        self.tail = block[whole..len].to_vec();
        Ok(())
    }

    /// Starts over at the beginning. A file that grew past its preallocation (one very large
    /// batch) is cut back.
    fn restart(&mut self) -> io::Result<()> {
        self.position = BLOCK as u64;
        self.tail.clear();
        if self.file.metadata()?.len() > 2 * PREALLOCATED {
            self.file.set_len(PREALLOCATED)?;
        }
        Ok(())
    }
}

/// The journal, written by whoever holds the writer (see `super::writer`).
pub struct Journal {
    halves: [Half; 2],
    /// The file being written.
    current: usize,
}

impl Journal {
    /// Opens (or creates and preallocates) both files in `dir`; writing starts at the beginning
    /// of the first, so the frames they held must be in the redb file already (`Store::open`
    /// put them there).
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, true)
    }

    fn open_with(dir: &Path, try_direct: bool) -> io::Result<Self> {
        Ok(Self {
            halves: [
                Half::open(&dir.join(FILE_NAMES[0]), try_direct)?,
                Half::open(&dir.join(FILE_NAMES[1]), try_direct)?,
            ],
            current: 0,
        })
    }

    /// Writes `frames` after the last ones and fsyncs. On an error nothing counts as written,
    /// and the file must not be written again before it was started over: the write may have
    /// reached the disk in part, and after a failed sync the page cache may hold bytes the
    /// disk does not (the writer abandons it, see `super::writer`).
    pub fn write(&mut self, frames: &[u8]) -> io::Result<()> {
        let half = &mut self.halves[self.current];
        half.write(frames)?;
        half.position += frames.len() as u64;
        Ok(())
    }

    /// Whether the disk takes a durable write again: the current file's last block written
    /// again with the same bytes (or an fsync where writes are not direct).
    pub fn probe(&mut self) -> io::Result<()> {
        self.halves[self.current].write(&[])
    }

    /// Bytes written to the current file since it was started.
    pub fn written(&self) -> u64 {
        self.halves[self.current].position - BLOCK as u64
    }

    /// The key the frames written next must be checksummed with ([`encode`]).
    pub fn key(&self) -> u64 {
        self.halves[self.current].key
    }

    /// Goes on at the beginning of the other file, whose frames must all be durably in the
    /// redb file.
    pub fn switch(&mut self) -> io::Result<()> {
        self.current = 1 - self.current;
        self.halves[self.current].restart()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of frames that are only scanned, not written to a file.
    const KEY: u64 = 0x5eed;

    fn frames(key: u64, seqs: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in seqs {
            encode(
                &mut out,
                key,
                seq,
                seq - 1,
                "acme/gh:log",
                format!("record {seq}").as_bytes(),
            );
        }
        out
    }

    fn read_both(dir: &Path) -> Vec<Frame> {
        FILE_NAMES
            .iter()
            .filter_map(|name| read(dir, name).unwrap())
            .flat_map(|(_, scan)| scan.frames)
            .collect()
    }

    #[test]
    fn frames_come_back_whole_and_in_order() {
        let decoded = scan(&frames(KEY, 5..8), KEY).frames;
        assert_eq!(decoded.len(), 3);
        assert_eq!(
            decoded[1],
            Frame {
                seq: 6,
                prev: 5,
                destination: "acme/gh:log".into(),
                record: b"record 6".to_vec()
            }
        );
    }

    #[test]
    fn a_torn_frame_ends_the_file_and_a_damaged_one_loses_only_itself() {
        let whole = frames(KEY, 1..4);
        for cut in 1..whole.len() {
            let read = scan(&whole[..cut], KEY).frames;
            assert!(read.len() < 3, "cut at {cut}");
            assert!(read.iter().enumerate().all(|(i, f)| f.seq == i as u64 + 1));
        }
        let second = memchr::memmem::find_iter(&whole, &MAGIC).nth(1).unwrap();
        for at in [second + 5, second + 30, second + HEADER + 3] {
            let mut damaged = whole.clone();
            damaged[at] ^= 1;
            let read = scan(&damaged, KEY);
            let seqs: Vec<u64> = read.frames.iter().map(|f| f.seq).collect();
            assert_eq!(seqs, [1, 3], "a byte at {at} flipped");
            assert_eq!(read.broken.len(), 1);
            assert_eq!(read.broken[0].offset, second as u64);
        }
        // The sequence number and key of a frame whose record is damaged can still be read.
        let mut damaged = whole.clone();
        let last = second + HEADER + FIXED + "acme/gh:log".len() + 2;
        damaged[last] ^= 1;
        let broken = &scan(&damaged, KEY).broken[0];
        assert_eq!(broken.seq, Some(2));
        assert_eq!(broken.destination.as_deref(), Some("acme/gh:log"));
        let mut zeros = whole;
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(
            scan(&zeros, KEY).frames.len(),
            3,
            "the preallocation reads as the end"
        );
        assert!(scan(&zeros, KEY).broken.is_empty());
    }

    #[test]
    fn a_frame_forged_inside_a_payload_is_never_taken_for_one() {
        // A sender's body holding a frame it made: it cannot know the file's key.
        let mut forged = Vec::new();
        encode(&mut forged, 1, 99, 1, "other/w:log", b"injected");
        let mut real = Vec::new();
        encode(&mut real, KEY, 5, 4, "acme/gh:log", &forged);
        // Damage the real frame's header, so a scan looks for the next magic number inside it.
        real[5] ^= 0xff;
        let read = scan(&real, KEY);
        assert!(read.frames.is_empty(), "{:?}", read.frames);
        // Fields that do not fit the frame, even under a valid checksum, are not a frame (and
        // never a panic): a `prev` that does not come first, a key longer than the body.
        let mut backwards = Vec::new();
        encode(&mut backwards, KEY, 5, 5, "acme/gh:log", b"x");
        assert!(scan(&backwards, KEY).frames.is_empty());
        let mut long_key = Vec::new();
        encode(&mut long_key, KEY, 5, 4, "acme/gh:log", b"");
        let at = HEADER + 16;
        long_key[at..at + 2].copy_from_slice(&500u16.to_le_bytes());
        let body = long_key[HEADER..].to_vec();
        long_key[8..16].copy_from_slice(&xxh3_64_with_seed(&body, KEY).to_le_bytes());
        let read = scan(&long_key, KEY);
        assert!(read.frames.is_empty());
    }

    #[test]
    fn frames_left_from_before_a_restart_have_lower_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.write(&frames(journal.key(), 1..50)).unwrap();
        journal.switch().unwrap();
        journal.write(&frames(journal.key(), 50..60)).unwrap();
        journal.switch().unwrap();
        assert_eq!(journal.written(), 0);
        journal.write(&frames(journal.key(), 60..62)).unwrap();
        let mut newer: Vec<u64> = read_both(dir.path())
            .iter()
            .map(|f| f.seq)
            .filter(|&seq| seq >= 50)
            .collect();
        newer.sort_unstable();
        assert_eq!(newer, (50..62).collect::<Vec<_>>());
        drop(journal);
        let reopened = Journal::open(dir.path()).unwrap();
        assert_eq!(reopened.written(), 0);
        for name in FILE_NAMES {
            assert_eq!(
                std::fs::metadata(dir.path().join(name)).unwrap().len(),
                PREALLOCATED
            );
        }
    }

    #[test]
    fn small_and_large_writes_read_back_whole_with_direct_writes_or_without() {
        for direct in [true, false] {
            // On the project's disk: tmpfs (often /tmp) refuses direct writes.
            let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
            let mut journal = Journal::open_with(dir.path(), direct).unwrap();
            assert_eq!(
                journal.halves[0].direct, direct,
                "direct writes are used here"
            );
            // Small frames: most writes end inside a block, which the next one writes again.
            for seq in 1..400 {
                journal.write(&frames(journal.key(), seq..seq + 1)).unwrap();
                if seq % 100 == 0 {
                    journal.probe().unwrap();
                }
            }
            let mut large = Vec::new();
            for seq in 400..403 {
                encode(
                    &mut large,
                    journal.key(),
                    seq,
                    seq - 1,
                    "acme/gh:log",
                    &vec![b'x'; 10_000],
                );
            }
            journal.write(&large).unwrap();
            journal.write(&frames(journal.key(), 403..405)).unwrap();
            let read = read_both(dir.path());
            let seqs: Vec<u64> = read.iter().map(|f| f.seq).collect();
            assert_eq!(seqs, (1..405).collect::<Vec<_>>(), "direct: {direct}");
            assert_eq!(read[399].record.len(), 10_000);
            assert_eq!(read[0].record, b"record 1");
        }
    }
}
