//! Wall-clock time as the stores and reports keep it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// `at` in milliseconds since the epoch (0 for a time before it).
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    epoch_ms(SystemTime::now())
}
