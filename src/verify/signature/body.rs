//! Signature inputs that travel in the body: Linear's `webhookTimestamp`, Mailgun's timestamp,
//! token and signature (a JSON object, or form fields for its legacy webhooks).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Linear's `webhookTimestamp`: milliseconds, a JSON number. `None`: absent, not a number, or
/// not a JSON object at all.
pub(super) fn linear_timestamp(body: &[u8]) -> Option<f64> {
    #[derive(Deserialize)]
    struct Timestamped {
        #[serde(rename = "webhookTimestamp")]
        timestamp: Option<serde_json::Number>,
    }
    // A struct also reads from a JSON array: only an object is Linear's.
    if !starts_object(body) {
        return None;
    }
    serde_json::from_slice::<Timestamped>(body)
        .ok()?
        .timestamp?
        .as_f64()
}

/// Whether the body is a JSON object (its first byte other than white space is `{`).
fn starts_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// Whether `ms` (Unix milliseconds) is within `tolerance` of `now`, in either direction.
pub(super) fn fresh_ms(ms: f64, now: SystemTime, tolerance: Duration) -> bool {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    (now - ms).abs() <= tolerance.as_secs_f64() * 1000.0
}

/// What Mailgun signs a webhook with.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MailgunSigned {
    /// Unix seconds, as sent: the MAC covers the text.
    pub timestamp: String,
    pub token: String,
    pub signature: String,
}

/// Mailgun's signature fields: `{"signature": {"timestamp", "token", "signature"}, ...}` for a
/// JSON body, else the form fields of that name (the last of each, as Mailgun's legacy
/// webhooks put user variables beside them).
pub(super) fn mailgun_signature(body: &[u8]) -> Option<MailgunSigned> {
    if starts_object(body) {
        #[derive(Deserialize)]
        struct Envelope {
            signature: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            timestamp: Text,
            token: String,
            signature: String,
        }
        /// The timestamp is a string on the wire; a number is read as its digits.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            String(String),
            Number(serde_json::Number),
        }
        let inner = serde_json::from_slice::<Envelope>(body).ok()?.signature?;
        return Some(MailgunSigned {
            timestamp: match inner.timestamp {
                Text::String(s) => s,
                Text::Number(n) => n.to_string(),
            },
            token: inner.token,
            signature: inner.signature,
        });
    }
    let (mut timestamp, mut token, mut signature) = (None, None, None);
    for (name, value) in form_urlencoded::parse(body) {
        match &*name {
            "timestamp" => timestamp = Some(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            "signature" => signature = Some(value.into_owned()),
            _ => {}
        }
    }
    Some(MailgunSigned {
        timestamp: timestamp?,
        token: token?,
        signature: signature?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_timestamps_are_numbers_in_an_object() {
        assert_eq!(
            linear_timestamp(br#"{"a":1,"webhookTimestamp":1700000000123}"#),
            Some(1_700_000_000_123.0)
        );
        for body in [
            &br#"{"webhookTimestamp":"1700000000123"}"#[..],
            br#"{"a":1}"#,
            b"[1]",
            b"",
            b"not json",
        ] {
            assert_eq!(linear_timestamp(body), None, "{body:?}");
        }
    }

    #[test]
    fn millisecond_freshness_holds_both_ways() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let minute = Duration::from_secs(60);
        assert!(fresh_ms(1_700_000_059_000.0, now, minute));
        assert!(fresh_ms(1_699_999_941_000.0, now, minute));
        assert!(!fresh_ms(1_700_000_061_000.0, now, minute));
        assert!(!fresh_ms(1_699_999_939_000.0, now, minute));
        assert!(!fresh_ms(f64::MAX, now, minute));
        assert!(!fresh_ms(f64::MIN, now, minute));
    }

    #[test]
    fn mailgun_fields_come_from_json_or_the_last_form_value() {
        let expected = Some(MailgunSigned {
            timestamp: "1700000000".into(),
            token: "tok".into(),
            signature: "ab".into(),
        });
        assert_eq!(
            mailgun_signature(
                br#" {"signature":{"timestamp":"1700000000","token":"tok","signature":"ab"},"event-data":{}}"#
            ),
            expected
        );
        assert_eq!(
            mailgun_signature(
                br#"{"signature":{"timestamp":1700000000,"token":"tok","signature":"ab"}}"#
            ),
            expected
        );
        assert_eq!(
            mailgun_signature(
                b"token=x&timestamp=1700000000&token=tok&signature=ab&event=delivered"
            ),
            expected
        );
        for body in [
            &br#"{"event-data":{}}"#[..],
            br#"{"signature":{"timestamp":"1","token":"t"}}"#,
            b"timestamp=1&token=t",
            b"",
        ] {
            assert_eq!(mailgun_signature(body), None, "{body:?}");
        }
    }
}
