//! How providers write their signature headers: Stripe's `t=..,v1=..` (read exactly as
//! Stripe's library reads it), Standard Webhooks' `v1,<sig> v1a,<sig>`, and the timestamp window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `Stripe-Signature`, read exactly as Stripe's own libraries read it (`stripe-python`'s
/// `WebhookSignature`, checked against it in a table test): elements split on `,`, each on its
/// first two `=` (a value ends at a second `=`); the first `t` counts, read like Python's `int()`
/// (surrounding whitespace, a sign, `_` between digits); every `v1` is a candidate; other
/// elements are ignored, but a `t` or `v1` without `=` spoils the header, and names are not
/// trimmed (` v1=..` is not `v1`).
pub fn parse_stripe_header(header: &str) -> Option<(i64, Vec<&str>)> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let mut parts = item.splitn(3, '=');
        match (parts.next().unwrap_or_default(), parts.next()) {
            ("t" | "v1", None) => return None,
            ("t", Some(value)) => {
                timestamp.get_or_insert(value);
            }
            ("v1", Some(value)) => signatures.push(value),
            _ => {}
        }
    }
    Some((python_int(timestamp?)?, signatures))
}

/// An integer as Python's `int(str)` reads it, within `i64` (ASCII digits only).
pub(super) fn python_int(text: &str) -> Option<i64> {
    let text = text.trim_matches(char::is_whitespace);
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return None;
    }
    let value: i64 = digits.replace('_', "").parse().ok()?;
    Some(if negative { -value } else { value })
}

/// A `v1` value as Stripe compares it: its own lower-case hex, as a string.
pub(super) fn stripe_hex(signature: &str) -> Option<Vec<u8>> {
    signature
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then(|| hex::decode(signature).ok())
        .flatten()
}

/// `v1,<base64> v1,<base64>` as in `webhook-signature`: every `v1` signature.
pub fn parse_standard_signatures(header: &str) -> Vec<&str> {
    standard_signatures(header, "v1")
}

/// Every signature of `version` (`v1`: HMAC, `v1a`: Ed25519) in a `webhook-signature` value.
pub(super) fn standard_signatures<'a>(header: &'a str, version: &str) -> Vec<&'a str> {
    header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(v, _)| *v == version)
        .map(|(_, sig)| sig)
        .collect()
}

/// Whether `timestamp` (Unix seconds, as sent) is within `tolerance` of `now`. `abs_diff`
/// cannot overflow, whatever the sender wrote (`t=-9223372036854775808`).
pub fn fresh(timestamp: i64, now: SystemTime, tolerance: Duration) -> bool {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    now.abs_diff(timestamp) <= tolerance.as_secs()
}
