//! Damage to the spool's files, found at open: what the journal says was acknowledged, what is
//! missing, and what a salvage keeps and loses.
//!
//! Which frames count: starting from the newest whole frame, the chain of `prev` numbers back to
//! what the redb file already accounts for (`applied`). Every frame on it was acknowledged. A
//! `prev` above `applied` that no whole frame has is a frame lost in the middle (a torn last
//! write has nothing after it, so it never breaks the chain). A whole frame off the chain was
//! never acknowledged (a write that failed, answered 503).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use super::{
    journal::{Frame, Scan},
    record,
};

/// What the router does when it finds damage at start (`SPOOL_ON_DAMAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDamage {
    /// Refuse to start and say what is wrong (the default).
    #[default]
    Refuse,
    /// Keep every readable record, report what was lost, and go on.
    Salvage,
}

/// One journal file as found at open: its name, its length and what it holds, or `None` when it
/// does not exist.
pub type JournalFile = (&'static str, Option<(u64, Scan)>);

/// Both journal files in `dir`.
pub fn read_journal(dir: &std::path::Path) -> std::io::Result<Vec<JournalFile>> {
    super::files::JOURNAL
        .iter()
        .map(|name| Ok((*name, super::journal::read(dir, name)?)))
        .collect()
}

/// Something wrong with the spool's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The redb file is gone or empty while the journal is there: what it held is lost.
    StoreMissing { journal_records: usize },
    /// A journal file is gone (`None`) or shorter than it is ever made, while the redb file
    /// holds records: its frames not yet in the redb file are lost.
    JournalMissing {
        file: &'static str,
        len: Option<u64>,
    },
    /// Frames lost in the middle of the journal.
    Lost(Lost),
}

/// Frames lost in the middle of the journal: a damaged frame, or a gap in the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The file the lost frames were in (where the frame after them is, when none is readable).
    pub file: &'static str,
    /// Their sequence numbers.
    pub first: u64,
    pub last: u64,
    /// Whole frames after them (kept by a salvage).
    pub after: usize,
    /// Read from what is left of the damaged frames.
    pub destinations: BTreeSet<String>,
    pub request_ids: BTreeSet<String>,
}

impl Lost {
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// What the journal holds beyond the redb file.
#[derive(Debug, Default)]
pub struct Chain {
    /// The acknowledged frames the redb file lacks, oldest first.
    pub frames: Vec<Frame>,
    pub lost: Vec<Lost>,
    /// The highest sequence number of any whole frame (none is handed out again).
    pub highest: u64,
}

/// Follows the chain of `prev` numbers through `files` down to `applied`, from the newest
/// whole frame.
pub fn chain(files: &[JournalFile], applied: u64) -> Chain {
    chain_from(files, applied, None)
}

/// As [`chain`], from the frame numbered `start` when given (the last one known to be
/// acknowledged: newer frames belong to writes that failed).
pub fn chain_from(files: &[JournalFile], applied: u64, start: Option<u64>) -> Chain {
    let mut by_seq: BTreeMap<u64, (&'static str, &Frame)> = BTreeMap::new();
    let mut highest = applied;
    for (name, found) in files {
        for frame in found.iter().flat_map(|(_, scan)| &scan.frames) {
            highest = highest.max(frame.seq);
            if frame.seq > applied {
                by_seq.entry(frame.seq).or_insert((name, frame));
            }
        }
    }
    let mut frames = Vec::new();
    let mut lost = Vec::new();
    let mut at = match start {
        Some(start) => by_seq.contains_key(&start).then_some(start),
        None => by_seq.keys().next_back().copied(),
    };
    while let Some(seq) = at {
        let Some(&(file, frame)) = by_seq.get(&seq) else {
            break;
        };
        frames.push(frame.clone());
        if frame.prev <= applied {
            break;
        }
        if by_seq.contains_key(&frame.prev) {
            at = Some(frame.prev);
            continue;
        }
        // Lost: everything after the newest whole frame below the missing one, up to it.
        let below = by_seq.range(..frame.prev).next_back().map(|(seq, _)| *seq);
        let first = below.unwrap_or(applied) + 1;
        let mut gone = Lost {
            file,
            first,
            last: frame.prev,
            after: frames.len(),
            destinations: BTreeSet::new(),
            request_ids: BTreeSet::new(),
        };
        for (name, found) in files {
            for broken in found.iter().flat_map(|(_, scan)| &scan.broken) {
                if broken
                    .seq
                    .is_some_and(|seq| (first..=frame.prev).contains(&seq))
                {
                    gone.file = name;
                    gone.destinations.extend(broken.destination.clone());
                    gone.request_ids
                        .extend(record::request_id_of(&broken.record));
                }
            }
        }
        lost.push(gone);
        at = below;
    }
    frames.reverse();
    Chain {
        frames,
        lost,
        highest,
    }
}

/// What is wrong with the spool's files, and what the journal holds beyond the redb file.
#[derive(Debug)]
pub struct Damage {
    pub problems: Vec<Problem>,
    /// Readable records the redb file lacks (kept by a salvage).
    pub readable: usize,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StoreMissing { journal_records } => write!(
                f,
                "{} is missing or empty while the journal is there: every record it held is \
                 lost ({journal_records} readable record(s) in the journal)",
                super::files::STORE
            ),
            Self::JournalMissing { file, len: None } => write!(
                f,
                "{file} is missing while {} holds records: the records it held that were not \
                 yet in {} are lost",
                super::files::STORE,
                super::files::STORE
            ),
            Self::JournalMissing {
                file,
                len: Some(len),
            } => write!(
                f,
                "{file} was cut to {len} bytes (it is always {} bytes): the records it held \
                 past that point are lost",
                super::journal::PREALLOCATED
            ),
            Self::Lost(lost) => {
                write!(
                    f,
                    "{}: {} record(s) lost (sequence numbers {}..={}), a damaged frame or a gap \
                     with {} readable record(s) after it",
                    lost.file,
                    lost.count(),
                    lost.first,
                    lost.last,
                    lost.after
                )?;
                if !lost.destinations.is_empty() {
                    let names: Vec<&str> = lost.destinations.iter().map(String::as_str).collect();
                    write!(f, "; destinations: {}", names.join(", "))?;
                }
                if !lost.request_ids.is_empty() {
                    let ids: Vec<&str> = lost.request_ids.iter().map(String::as_str).collect();
                    write!(f, "; request ids: {}", ids.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the spool's files are damaged")?;
        for problem in &self.problems {
            write!(f, "; {problem}")?;
        }
        write!(
            f,
            ". The journal holds {} readable record(s) not yet in {}. Run `switchyard spool \
             recover` with the instance stopped to keep every readable record and go on, or \
             start with SPOOL_ON_DAMAGE=salvage",
            self.readable,
            super::files::STORE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::journal::{encode, scan};

    const KEY: u64 = 7;

    /// A file's bytes with a frame for each `(seq, prev)`.
    fn file(frames: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(seq, prev) in frames {
            encode(
                &mut out,
                KEY,
                seq,
                prev,
                "acme/gh:log",
                format!("r{seq}").as_bytes(),
            );
        }
        out
    }

    fn linked(seqs: std::ops::Range<u64>) -> Vec<(u64, u64)> {
        seqs.map(|s| (s, s - 1)).collect()
    }

    fn seqs(chain: &Chain) -> Vec<u64> {
        chain.frames.iter().map(|f| f.seq).collect()
    }

    fn run(files: &[Vec<u8>], applied: u64) -> Chain {
        let named: Vec<JournalFile> = files
            .iter()
            .zip(["spool.journal.0", "spool.journal.1"])
            .map(|(bytes, name)| (name, Some((0, scan(bytes, KEY)))))
            .collect();
        chain(&named, applied)
    }

    #[test]
    fn the_chain_runs_across_both_files_down_to_what_the_store_holds() {
        let chain = run(&[file(&linked(1..10)), file(&linked(10..15))], 4);
        assert_eq!(seqs(&chain), (5..15).collect::<Vec<_>>());
        assert!(chain.lost.is_empty());
        assert_eq!(chain.highest, 14);
    }

    #[test]
    fn frames_of_a_failed_write_are_off_the_chain() {
        // 5..8 were written but the write failed (answered 503); 8 follows 4 in the other file.
        let mut frames = linked(1..5);
        frames.extend(linked(5..8));
        let chain = run(&[file(&frames), file(&[(8, 4), (9, 8)])], 0);
        assert_eq!(seqs(&chain), [1, 2, 3, 4, 8, 9]);
        assert!(chain.lost.is_empty());
        assert_eq!(chain.highest, 9, "their numbers are never handed out again");
    }

    #[test]
    fn a_damaged_frame_loses_itself_and_is_reported_with_what_is_readable() {
        let mut bytes = file(&linked(1..10));
        let fourth = memchr::memmem::find_iter(&bytes, b"SWJ2").nth(3).unwrap();
        let last = memchr::memmem::find_iter(&bytes, b"SWJ2").nth(4).unwrap() - 1;
        bytes[last] ^= 0xff;
        let chain = run(&[bytes, Vec::new()], 0);
        assert_eq!(seqs(&chain), [1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(chain.lost.len(), 1, "{:?}", chain.lost);
        let lost = &chain.lost[0];
        assert_eq!((lost.first, lost.last, lost.after), (4, 4, 5));
        assert_eq!(lost.file, "spool.journal.0");
        assert!(lost.destinations.contains("acme/gh:log"));
        assert!(fourth > 0);
    }

    #[test]
    fn a_torn_last_write_is_not_damage() {
        let bytes = file(&linked(1..10));
        let cut = bytes.len() - 3;
        let chain = run(&[bytes[..cut].to_vec(), Vec::new()], 0);
        assert_eq!(seqs(&chain), (1..9).collect::<Vec<_>>());
        assert!(chain.lost.is_empty());
    }

    #[test]
    fn frames_the_store_holds_already_are_left_out_and_a_gap_is_found() {
        // The second file lost its first frames (10..12) and the first one is older.
        let chain = run(&[file(&linked(1..10)), file(&linked(13..15))], 8);
        assert_eq!(seqs(&chain), [9, 13, 14]);
        assert_eq!(chain.lost.len(), 1);
        assert_eq!((chain.lost[0].first, chain.lost[0].last), (10, 12));
        assert_eq!(chain.lost[0].file, "spool.journal.1");
    }
}
