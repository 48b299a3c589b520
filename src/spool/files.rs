//! The files of a spool directory (`SPOOL_DIR`), named in one place: what the journal, the
//! redb file and the check for damage at open all refer to.

/// The redb file: backlogs, retries, dead letters.
pub const STORE: &str = "spool.redb";

/// The journal's two files, where an append becomes durable.
pub const JOURNAL: [&str; 2] = ["spool.journal.0", "spool.journal.1"];
