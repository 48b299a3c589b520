//! A spooled delivery as bytes: versioned, length-prefixed, decoded without trusting the input.
//!
//! The record keeps everything a direct delivery carries (namespace, webhook, request id,
//! received-at, forwardable headers, body), so a redelivery is byte-identical to a direct one
//! and consumers can deduplicate on the original request id. Version 2 adds the request's trace
//! context (W3C `traceparent`, empty when traces are off) and the `refused` flag; version 1
//! records read as without either.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{
    keys::{Namespace, WebhookId},
    modules::Delivery,
    telemetry::trace::TraceParent,
};

/// The format written by this version.
const VERSION: u8 = 2;
/// The format before the trace context, still read.
const VERSION_1: u8 = 1;

/// A delivery waiting for one destination, with its retry state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledDelivery {
    pub delivery: DeliveryParts,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure, for the dead-letter table and `/status`.
    pub last_error: String,
    /// When the retry horizon (`retry.max_age_seconds`) started: the request's arrival, or the
    /// replay that brought it back from the dead letters (ms since the epoch).
    pub retry_from_ms: u64,
    /// The destination refused it for good when the request was first tried (`last_error`
    /// says how): it goes to the dead letters without being sent again. A replay clears it.
    pub refused: bool,
}

/// The fields of a [`Delivery`], owned and comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryParts {
    pub namespace: String,
    pub webhook: String,
    pub request_id: String,
    pub received_at_ms: u64,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub json: bool,
    pub trace: Option<TraceParent>,
}

/// Why stored bytes are not a record (a bug or a damaged file; never panics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spooled record is damaged: {0}")]
pub struct Damaged(&'static str);

impl DeliveryParts {
    pub fn from_delivery(delivery: &Delivery) -> Self {
        Self {
            namespace: delivery.namespace.as_str().to_owned(),
            webhook: delivery.webhook.as_str().to_owned(),
            request_id: delivery.request_id.clone(),
            received_at_ms: crate::clock::epoch_ms(delivery.received_at),
            headers: delivery.headers.clone(),
            body: delivery.body.to_vec(),
            json: delivery.json,
            trace: delivery.trace.clone(),
        }
    }

    /// The delivery again, as the modules take it. `Err` when a name no longer parses.
    pub fn to_delivery(&self) -> Result<Delivery, Damaged> {
        Ok(Delivery {
            namespace: Namespace::parse(&self.namespace).map_err(|_| Damaged("namespace"))?,
            webhook: WebhookId::parse(&self.webhook).map_err(|_| Damaged("webhook id"))?,
            request_id: self.request_id.clone(),
            received_at: UNIX_EPOCH + Duration::from_millis(self.received_at_ms),
            headers: self.headers.clone(),
            body: Bytes::from(self.body.clone()),
            json: self.json,
            trace: self.trace.clone(),
            relayed: Vec::new(),
        })
    }

    /// When the request was received.
    pub fn received_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.received_at_ms)
    }
}

/// The delivery's fields, borrowed.
struct Fields<'a> {
    namespace: &'a str,
    webhook: &'a str,
    request_id: &'a str,
    received_at_ms: u64,
    json: bool,
    body: &'a [u8],
    trace: Option<&'a TraceParent>,
}

fn encode<'a>(
    d: Fields<'_>,
    headers: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    attempts: u32,
    last_error: &str,
    retry_from_ms: u64,
    refused: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + d.body.len() + d.request_id.len());
    out.push(VERSION);
    put_bytes(&mut out, d.namespace.as_bytes());
    put_bytes(&mut out, d.webhook.as_bytes());
    put_bytes(&mut out, d.request_id.as_bytes());
    out.extend_from_slice(&d.received_at_ms.to_le_bytes());
    out.push(u8::from(d.json));
    out.extend_from_slice(
        &u32::try_from(headers.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (name, value) in headers {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    put_bytes(&mut out, d.body);
    out.extend_from_slice(&attempts.to_le_bytes());
    put_bytes(&mut out, last_error.as_bytes());
    out.extend_from_slice(&retry_from_ms.to_le_bytes());
    put_bytes(
        &mut out,
        d.trace
            .map(TraceParent::to_w3c)
            .unwrap_or_default()
            .as_bytes(),
    );
    out.push(u8::from(refused));
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor that refuses to read past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The format's version, one this build reads.
    fn version(&mut self) -> Result<u8, Damaged> {
        match self.take(1, "version")?[0] {
            version @ (VERSION_1 | VERSION) => Ok(version),
            _ => Err(Damaged("unknown version")),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Damaged> {
        if self.0.len() < n {
            return Err(Damaged(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Damaged> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A time in ms since the epoch, before the year 10000 (what RFC 3339 can print).
    fn time_ms(&mut self, what: &'static str) -> Result<u64, Damaged> {
        const YEAR_10000_MS: u64 = 253_402_300_800_000;
        let ms = self.u64(what)?;
        if ms >= YEAR_10000_MS {
            return Err(Damaged(what));
        }
        Ok(ms)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Damaged> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], Damaged> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &'static str) -> Result<String, Damaged> {
        String::from_utf8(self.bytes(what)?.to_vec()).map_err(|_| Damaged(what))
    }
}

impl SpooledDelivery {
    pub fn new(delivery: &Delivery) -> Self {
        let delivery = DeliveryParts::from_delivery(delivery);
        Self {
            retry_from_ms: delivery.received_at_ms,
            delivery,
            attempts: 0,
            last_error: String::new(),
            refused: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let d = &self.delivery;
        let headers = d.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        encode(
            Fields {
                namespace: &d.namespace,
                webhook: &d.webhook,
                request_id: &d.request_id,
                received_at_ms: d.received_at_ms,
                json: d.json,
                body: &d.body,
                trace: d.trace.as_ref(),
            },
            headers,
            self.attempts,
            &self.last_error,
            self.retry_from_ms,
            self.refused,
        )
    }

    /// The record of a fresh delivery, written straight from it (no intermediate copy).
    pub fn encode_new(delivery: &Delivery) -> Vec<u8> {
        Self::encode_fresh(delivery, None)
    }

    /// The record of a fresh delivery its destination refused for good on the first try
    /// (`error`): kept as a dead letter, never sent again unless replayed.
    pub fn encode_refused(delivery: &Delivery, error: &str) -> Vec<u8> {
        Self::encode_fresh(delivery, Some(error))
    }

    fn encode_fresh(delivery: &Delivery, refused: Option<&str>) -> Vec<u8> {
        let received_at_ms = crate::clock::epoch_ms(delivery.received_at);
        let headers = delivery
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        encode(
            Fields {
                namespace: delivery.namespace.as_str(),
                webhook: delivery.webhook.as_str(),
                request_id: &delivery.request_id,
                received_at_ms,
                json: delivery.json,
                body: &delivery.body,
                trace: delivery.trace.as_ref(),
            },
            headers,
            u32::from(refused.is_some()),
            refused.unwrap_or_default(),
            received_at_ms,
            refused.is_some(),
        )
    }

    /// When the retry horizon started.
    pub fn retry_from(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.retry_from_ms)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Damaged> {
        let mut r = Reader(bytes);
        let version = r.version()?;
        let namespace = r.string("namespace")?;
        let webhook = r.string("webhook")?;
        let request_id = r.string("request id")?;
        let received_at_ms = r.time_ms("received at")?;
        let json = r.take(1, "json flag")?[0] == 1;
        let count = r.u32("header count")? as usize;
        let mut headers = Vec::with_capacity(count.min(256));
        for _ in 0..count {
            headers.push((r.string("header name")?, r.string("header value")?));
        }
        let body = r.bytes("body")?.to_vec();
        let attempts = r.u32("attempts")?;
        let last_error = r.string("last error")?;
        let retry_from_ms = r.time_ms("retry from")?;
        // A context that does not parse only loses the link to the request's trace.
        let (trace, refused) = match version {
            VERSION_1 => (None, false),
            _ => (
                TraceParent::parse(&String::from_utf8_lossy(r.bytes("trace context")?)),
                r.take(1, "refused flag")?[0] == 1,
            ),
        };
        if !r.0.is_empty() {
            return Err(Damaged("trailing bytes"));
        }
        Ok(Self {
            delivery: DeliveryParts {
                namespace,
                webhook,
                request_id,
                received_at_ms,
                headers,
                body,
                json,
                trace,
            },
            attempts,
            last_error,
            retry_from_ms,
            refused,
        })
    }
}

/// The request id at the start of a record, which may be cut or damaged after it (for the
/// report of what damage lost).
pub fn request_id_of(bytes: &[u8]) -> Option<String> {
    let mut r = Reader(bytes);
    r.version().ok()?;
    r.bytes("namespace").ok()?;
    r.bytes("webhook").ok()?;
    r.string("request id").ok()
}

/// What an operator sees of a record: everything but the body, read without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub request_id: String,
    pub received_at: SystemTime,
    pub attempts: u32,
    pub last_error: String,
    pub body_bytes: usize,
}

impl Summary {
    pub fn decode(bytes: &[u8]) -> Result<Self, Damaged> {
        let mut r = Reader(bytes);
        r.version()?;
        r.bytes("namespace")?;
        r.bytes("webhook")?;
        let request_id = r.string("request id")?;
        let received_at_ms = r.time_ms("received at")?;
        r.take(1, "json flag")?;
        for _ in 0..r.u32("header count")? {
            r.bytes("header name")?;
            r.bytes("header value")?;
        }
        let body_bytes = r.bytes("body")?.len();
        let attempts = r.u32("attempts")?;
        let last_error = r.string("last error")?;
        Ok(Self {
            request_id,
            received_at: UNIX_EPOCH + Duration::from_millis(received_at_ms),
            attempts,
            last_error,
            body_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Delivery {
        Delivery {
            namespace: Namespace::parse("acme").unwrap(),
            webhook: WebhookId::parse("gh").unwrap(),
            request_id: "r-1".into(),
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            headers: vec![("x-github-event".into(), "push".into())],
            body: Bytes::from_static(b"{\"a\": 1}"),
            json: true,
            trace: None,
            relayed: Vec::new(),
        }
    }

    #[test]
    fn a_record_round_trips_to_an_identical_delivery() {
        let mut record = SpooledDelivery::new(&sample());
        record.attempts = 3;
        record.last_error = "redis down".into();
        let decoded = SpooledDelivery::decode(&record.encode()).unwrap();
        assert_eq!(decoded, record);
        let again = decoded.delivery.to_delivery().unwrap();
        let original = sample();
        assert_eq!(again.body, original.body);
        assert_eq!(again.request_id, original.request_id);
        assert_eq!(again.received_at, original.received_at);
        assert_eq!(again.headers, original.headers);
    }

    #[test]
    fn a_summary_reads_everything_but_the_body() {
        let mut record = SpooledDelivery::new(&sample());
        record.attempts = 2;
        record.last_error = "down".into();
        let summary = Summary::decode(&record.encode()).unwrap();
        assert_eq!(summary.request_id, "r-1");
        assert_eq!(summary.received_at, sample().received_at);
        assert_eq!((summary.attempts, summary.last_error.as_str()), (2, "down"));
        assert_eq!(summary.body_bytes, sample().body.len());
    }

    #[test]
    fn a_fresh_record_is_written_the_same_either_way() {
        assert_eq!(
            SpooledDelivery::encode_new(&sample()),
            SpooledDelivery::new(&sample()).encode()
        );
    }

    #[test]
    fn a_time_rfc3339_cannot_print_is_damage_not_a_panic_later() {
        let mut record = SpooledDelivery::new(&sample());
        record.delivery.received_at_ms = u64::MAX;
        let bytes = record.encode();
        assert_eq!(
            SpooledDelivery::decode(&bytes).unwrap_err(),
            Damaged("received at")
        );
        assert!(Summary::decode(&bytes).is_err());
    }

    #[test]
    fn truncated_or_foreign_bytes_are_damaged_not_a_panic() {
        let bytes = SpooledDelivery::new(&sample()).encode();
        for cut in 0..bytes.len() {
            assert!(SpooledDelivery::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            SpooledDelivery::decode(&other).unwrap_err(),
            Damaged("unknown version")
        );
    }

    #[test]
    fn the_trace_context_round_trips_and_a_version_1_record_reads_without_one() {
        let mut delivery = sample();
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        delivery.trace = TraceParent::parse(text);
        let decoded = SpooledDelivery::decode(&SpooledDelivery::encode_new(&delivery)).unwrap();
        let trace = decoded.delivery.to_delivery().unwrap().trace;
        assert_eq!(trace.map(|t| t.to_w3c()).as_deref(), Some(text));

        // Version 1 is version 2 without the trailing (here empty) trace context and flag.
        let mut old = SpooledDelivery::new(&sample()).encode();
        assert_eq!(old.split_off(old.len() - 5), [0, 0, 0, 0, 0]);
        old[0] = VERSION_1;
        let decoded = SpooledDelivery::decode(&old).unwrap();
        assert_eq!(decoded, SpooledDelivery::new(&sample()));
        assert_eq!(request_id_of(&old).as_deref(), Some("r-1"));
        assert_eq!(Summary::decode(&old).unwrap().request_id, "r-1");
    }

    #[test]
    fn a_refused_record_carries_its_error_and_its_flag() {
        let bytes = SpooledDelivery::encode_refused(&sample(), "answered 400 Bad Request");
        let record = SpooledDelivery::decode(&bytes).unwrap();
        assert!(record.refused);
        assert_eq!(record.attempts, 1);
        assert_eq!(record.last_error, "answered 400 Bad Request");
        assert!(
            !SpooledDelivery::decode(&SpooledDelivery::encode_new(&sample()))
                .unwrap()
                .refused
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SpooledDelivery::decode(&bytes);
        }
    }
}
