//! The connector protocol's message: a compact JSON header, a newline, then the body byte for
//! byte. The same bytes travel in a WebSocket binary frame and are what a channel stores.

use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol.
pub const SUBPROTOCOL: &str = "switchyard.connect.v1";

/// What a message says about the webhook it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The channel's sequence number: 1, 2, 3, ... with no gap.
    pub seq: u64,
    pub namespace: String,
    pub webhook: String,
    pub request_id: String,
    /// RFC 3339, milliseconds.
    pub received_at: String,
    /// The request's forwardable headers (credentials and signatures removed only where the
    /// public side's webhook says so: the private side verifies signatures itself).
    pub headers: Vec<(String, String)>,
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
#[error("not a connector message: {0}")]
pub struct NotAMessage(String);

impl Header {
    /// The message: this header, a newline, `body`.
    pub fn frame(&self, body: &[u8]) -> Vec<u8> {
        // A header of strings and numbers always serializes; compact JSON escapes every newline
        // inside strings, so the first newline ends it.
        let mut frame = serde_json::to_vec(self).unwrap_or_default();
        frame.push(b'\n');
        frame.extend_from_slice(body);
        frame
    }

    /// A message's header and body.
    pub fn parse(frame: &[u8]) -> Result<(Header, &[u8]), NotAMessage> {
        let end = memchr::memchr(b'\n', frame)
            .ok_or_else(|| NotAMessage("no newline after the header".into()))?;
        let header = serde_json::from_slice(&frame[..end])
            .map_err(|e| NotAMessage(format!("header: {e}")))?;
        Ok((header, &frame[end + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_any_body_byte_for_byte() {
        let header = Header {
            seq: 7,
            namespace: "acme".into(),
            webhook: "gh".into(),
            request_id: "r-1".into(),
            received_at: "2026-12-07T00:00:00.000Z".into(),
            headers: vec![("x-a".into(), "line\nbreak".into())],
        };
        let body = b"\n{\"a\":1}\n\x00\xff";
        let frame = header.frame(body);
        let (read, rest) = Header::parse(&frame).unwrap();
        assert_eq!(read, header);
        assert_eq!(rest, body);
        assert!(Header::parse(b"{}").is_err());
        assert!(Header::parse(b"{\"seq\":1}\nbody").is_err());
    }
}
