//! The spool's journal: where an append becomes durable. Each batch is written as frames after
//! the last ones in one of two preallocated files, durably in one step: a direct write
//! (`O_DIRECT | O_DSYNC`, whole 4 KiB blocks, the last partly written block written again with
//! the next frames), or where the file system refuses that (tmpfs) a write and an fsync. Direct
//! writes skip the page cache: about 20% less time and a third less CPU per commit here (see
//! BENCHMARKS.md). A block written again holds the same bytes for the frames already in it, so
//! a torn write cannot damage them. The same records then
//! wait in memory for their forwarders (`super::fresh`). When a file is full enough, the writer
//! goes on in the other one while what memory still holds is moved to the redb file and made
//! durable (`Store::spill`); once it is, the first file may be written again from its
//! beginning. So the writer never waits for the redb file's fsync. At open, the frames the redb
//! file does not durably account for are put back into it (`Store::open`).
//!
//! Why not an fsync of the redb file per batch: a redb commit writes a dozen pages for a batch
//! of small records and fsyncs them (0.35-0.47 ms here); one contiguous overwrite of a
//! preallocated file costs about 0.1 ms (see BENCHMARKS.md).
//!
//! A frame: body length (u32 LE), xxh3-64 of the body (u64 LE), body = sequence number (u64 LE),
//! destination name length (u16 LE), destination name, record. Reading stops at the first frame
//! that is not whole (a torn write, or the zeros of the preallocation) or whose sequence number
//! does not follow the one before (frames left from before the last restart: their numbers are
//! lower).

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::Path,
};

use xxhash_rust::xxh3::xxh3_64;

/// The journal's two files inside `SPOOL_DIR`.
pub const FILE_NAMES: [&str; 2] = ["spool.journal.0", "spool.journal.1"];

/// Each file is preallocated with zeros: appends overwrite in place, so an fsync writes data,
/// not metadata.
const PREALLOCATED: u64 = 4 << 20;

/// Once this much is written to a file, the writer moves to the other one.
pub const SWITCH_AT: u64 = 3 << 20;

/// Length and hash.
const HEADER: usize = 4 + 8;

/// One record as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    pub destination: String,
    pub record: Vec<u8>,
}

/// Appends one frame to `out`. A destination name longer than `u16::MAX` bytes cannot be
/// journaled (names are `namespace/webhook#index:module@connection`, all short by validation).
pub fn encode(out: &mut Vec<u8>, seq: u64, destination: &str, record: &[u8]) {
    let name_len = u16::try_from(destination.len()).unwrap_or(u16::MAX);
    let name = &destination.as_bytes()[..usize::from(name_len)];
    let body_len = 8 + 2 + name.len() + record.len();
    let start = out.len();
    out.reserve(HEADER + body_len);
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let body = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(record);
    let hash = xxh3_64(&out[body..]);
    out[start + 4..start + HEADER].copy_from_slice(&hash.to_le_bytes());
}

/// The whole frames at the start of `bytes`, in order (see the module doc for where it stops).
pub fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut rest = bytes;
    while let Some(frame) = decode_one(&mut rest) {
        if frames.last().is_some_and(|last| frame.seq <= last.seq) {
            break;
        }
        frames.push(frame);
    }
    frames
}

fn decode_one(rest: &mut &[u8]) -> Option<Frame> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let hash = u64::from_le_bytes(rest.get(4..HEADER)?.try_into().ok()?);
    let body = rest.get(HEADER..HEADER.checked_add(len)?)?;
    if len < 10 || xxh3_64(body) != hash {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    let name_len = usize::from(u16::from_le_bytes(body[8..10].try_into().ok()?));
    let name = body.get(10..10 + name_len)?;
    let frame = Frame {
        seq,
        destination: String::from_utf8(name.to_vec()).ok()?,
        record: body[10 + name_len..].to_vec(),
    };
    *rest = &rest[HEADER + len..];
    Some(frame)
}

/// The frames of both files of the journal in `dir`.
pub fn read_all(dir: &Path) -> io::Result<Vec<Frame>> {
    let mut frames = Vec::new();
    for name in FILE_NAMES {
        frames.extend(read(&dir.join(name))?);
    }
    Ok(frames)
}

/// The frames of one journal file (none when there is no file).
fn read(path: &Path) -> io::Result<Vec<Frame>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(decode_all(&bytes))
}

/// What direct writes are aligned to: the file system's block (a multiple of every device's
/// logical block).
const BLOCK: usize = 4096;

/// One journal file.
struct Half {
    file: File,
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
            position: 0,
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
        let padded = len.div_ceil(BLOCK) * BLOCK;
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
        self.position = 0;
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

    /// Writes `frames` after the last ones and fsyncs; on an error nothing counts as written
    /// (the next write goes to the same place).
    pub fn write(&mut self, frames: &[u8]) -> io::Result<()> {
        let half = &mut self.halves[self.current];
        half.write(frames)?;
        half.position += frames.len() as u64;
        Ok(())
    }

    /// Bytes written to the current file since it was started.
    pub fn written(&self) -> u64 {
        self.halves[self.current].position
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

    fn frames(seqs: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in seqs {
            encode(
                &mut out,
                seq,
                "acme/gh#0:log",
                format!("record {seq}").as_bytes(),
            );
        }
        out
    }

    #[test]
    fn frames_come_back_whole_and_in_order() {
        let decoded = decode_all(&frames(5..8));
        assert_eq!(decoded.len(), 3);
        assert_eq!(
            decoded[1],
            Frame {
                seq: 6,
                destination: "acme/gh#0:log".into(),
                record: b"record 6".to_vec()
            }
        );
    }

    #[test]
    fn a_torn_or_damaged_frame_ends_the_journal() {
        let whole = frames(1..4);
        for cut in 1..whole.len() {
            let read = decode_all(&whole[..cut]);
            assert!(read.len() < 3, "cut at {cut}");
            assert!(read.iter().enumerate().all(|(i, f)| f.seq == i as u64 + 1));
        }
        let mut damaged = whole.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(decode_all(&damaged).len(), 2);
        let mut zeros = whole;
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(
            decode_all(&zeros).len(),
            3,
            "the preallocation reads as the end"
        );
    }

    #[test]
    fn frames_left_from_before_a_restart_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.write(&frames(1..50)).unwrap();
        journal.switch().unwrap();
        journal.write(&frames(50..60)).unwrap();
        journal.switch().unwrap();
        assert_eq!(journal.written(), 0);
        journal.write(&frames(60..62)).unwrap();
        let mut read: Vec<u64> = read_all(dir.path())
            .unwrap()
            .iter()
            .map(|f| f.seq)
            .collect();
        read.sort_unstable();
        assert_eq!(
            read,
            (50..62).collect::<Vec<_>>(),
            "the older frames after 60 and 61 have lower numbers"
        );
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
                journal.write(&frames(seq..seq + 1)).unwrap();
            }
            let mut large = Vec::new();
            for seq in 400..403 {
                encode(&mut large, seq, "acme/gh#0:log", &vec![b'x'; 10_000]);
            }
            journal.write(&large).unwrap();
            journal.write(&frames(403..405)).unwrap();
            let read = read_all(dir.path()).unwrap();
            let seqs: Vec<u64> = read.iter().map(|f| f.seq).collect();
            assert_eq!(seqs, (1..405).collect::<Vec<_>>(), "direct: {direct}");
            assert_eq!(read[399].record.len(), 10_000);
            assert_eq!(read[0].record, b"record 1");
        }
    }
}
