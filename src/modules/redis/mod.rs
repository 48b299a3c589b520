//! The Redis modules: `redis_publish`, `redis_stream`, `redis_list`, each acknowledged by the
//! command's reply.

pub mod config;

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

pub use config::{Direction, ListConfig, PublishConfig, StreamConfig};

use super::{rfc3339, Delivery, DeliveryError, Module};
use crate::{
    connections::{ConnectionPool, RedisClient, WriteError},
    keys::ConnectionName,
};

/// What a Redis module writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Publish(PublishConfig),
    Stream(StreamConfig),
    List(ListConfig),
}

impl Command {
    /// The channel, stream or list key written to.
    pub fn target(&self) -> &str {
        match self {
            Command::Publish(c) => &c.channel,
            Command::Stream(c) => &c.stream,
            Command::List(c) => &c.key,
        }
    }
}

/// One Redis destination through the named connection's shared client.
#[derive(Debug)]
pub struct RedisModule {
    command: Command,
    connection: ConnectionName,
    pool: ConnectionPool,
}

/// The JSON envelope published, pushed and (field by field) streamed.
#[derive(Serialize)]
struct Envelope<'a> {
    namespace: &'a str,
    webhook: &'a str,
    request_id: &'a str,
    received_at: String,
    headers: serde_json::Map<String, serde_json::Value>,
    /// `json`: `payload` is the body, embedded verbatim; `base64`: the body's bytes, encoded.
    payload_encoding: &'static str,
    payload: Box<RawValue>,
}

fn headers_object(delivery: &Delivery) -> serde_json::Map<String, serde_json::Value> {
    delivery
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

/// The envelope as JSON bytes.
pub fn envelope(delivery: &Delivery) -> Vec<u8> {
    let (payload_encoding, payload) = match serde_json::from_slice::<Box<RawValue>>(&delivery.body)
    {
        Ok(raw) => ("json", raw),
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&delivery.body);
            let quoted = serde_json::to_string(&encoded).unwrap_or_default();
            match RawValue::from_string(quoted) {
                Ok(raw) => ("base64", raw),
                Err(_) => ("base64", RawValue::NULL.to_owned()),
            }
        }
    };
    let envelope = Envelope {
        namespace: delivery.namespace.as_str(),
        webhook: delivery.webhook.as_str(),
        request_id: &delivery.request_id,
        received_at: rfc3339(delivery.received_at),
        headers: headers_object(delivery),
        payload_encoding,
        payload,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The stream entry's fields that are written out as text.
struct StreamTexts {
    received_at: String,
    headers: String,
}

impl StreamTexts {
    fn of(delivery: &Delivery) -> Self {
        Self {
            received_at: rfc3339(delivery.received_at),
            headers: serde_json::Value::Object(headers_object(delivery)).to_string(),
        }
    }

    /// One stream entry: the same fields whether added alone or in a batch.
    fn fields<'a>(&'a self, delivery: &'a Delivery) -> Vec<(&'static str, &'a [u8])> {
        vec![
            ("namespace", delivery.namespace.as_str().as_bytes()),
            ("webhook", delivery.webhook.as_str().as_bytes()),
            ("request_id", delivery.request_id.as_bytes()),
            ("received_at", self.received_at.as_bytes()),
            ("headers", self.headers.as_bytes()),
            ("payload", delivery.body.as_ref()),
        ]
    }
}

impl RedisModule {
    pub fn new(command: Command, connection: ConnectionName, pool: ConnectionPool) -> Self {
        Self {
            command,
            connection,
            pool,
        }
    }

    async fn run(&self, client: &RedisClient, delivery: &Delivery) -> Result<(), WriteError> {
        match &self.command {
            Command::Publish(c) => client.publish(&c.channel, envelope(delivery)).await,
            Command::Stream(c) => {
                let texts = StreamTexts::of(delivery);
                client
                    .xadd(&c.stream, c.maxlen, &texts.fields(delivery))
                    .await
            }
            Command::List(c) => {
                let left = c.direction == Direction::Lpush;
                client
                    .push(&c.key, left, envelope(delivery), c.max_length)
                    .await
            }
        }
    }
}

#[async_trait::async_trait]
impl Module for RedisModule {
    fn name(&self) -> &'static str {
        match self.command {
            Command::Publish(_) => "redis_publish",
            Command::Stream(_) => "redis_stream",
            Command::List(_) => "redis_list",
        }
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let client = self
            .pool
            .redis(&self.connection, self.name(), self.user(delivery))?;
        self.run(&client, delivery)
            .await
            .map_err(|error| DeliveryError::from_write(self.name(), error))
    }

    /// A stream batch is one `MULTI`/`EXEC` transaction; the other commands go one by one.
    async fn deliver_all(&self, deliveries: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let Command::Stream(c) = &self.command else {
            return super::deliver_each(self, deliveries).await;
        };
        // A batch is one destination's queue: one webhook, one namespace.
        let Some(first) = deliveries.first() else {
            return Vec::new();
        };
        let result = match self
            .pool
            .redis(&self.connection, self.name(), self.user(first))
        {
            Ok(client) => {
                let texts: Vec<StreamTexts> = deliveries.iter().map(StreamTexts::of).collect();
                let entries: Vec<_> = texts
                    .iter()
                    .zip(deliveries)
                    .map(|(t, d)| t.fields(d))
                    .collect();
                client
                    .xadd_all(&c.stream, c.maxlen, &entries)
                    .await
                    .map_err(|error| DeliveryError::from_write(self.name(), error))
            }
            Err(error) => Err(error.into()),
        };
        deliveries.iter().map(|_| result.clone()).collect()
    }
}

impl RedisModule {
    /// What the connection's access rules judge: the namespace and the name written to.
    fn user<'a>(&'a self, delivery: &'a Delivery) -> crate::connections::Use<'a> {
        crate::connections::Use {
            namespace: delivery.namespace.as_str(),
            target: Some(self.command.target()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Namespace, WebhookId};
    use std::time::{Duration, UNIX_EPOCH};

    fn delivery(body: &'static [u8]) -> Delivery {
        Delivery {
            namespace: Namespace::parse("acme").unwrap(),
            webhook: WebhookId::parse("gh").unwrap(),
            request_id: "r1".into(),
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            headers: vec![("x-github-event".into(), "push".into())],
            body: bytes::Bytes::from_static(body),
            json: false,
            trace: None,
            relayed: Vec::new(),
        }
    }

    #[test]
    fn json_payload_is_embedded_verbatim() {
        let bytes = envelope(&delivery(br#"{"b": 1,  "a": [2]}"#));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""payload":{"b": 1,  "a": [2]}"#), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["payload_encoding"], "json");
        assert_eq!(v["namespace"], "acme");
        assert_eq!(v["webhook"], "gh");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["received_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["headers"]["x-github-event"], "push");
    }

    #[test]
    fn other_payloads_are_base64() {
        let v: serde_json::Value =
            serde_json::from_slice(&envelope(&delivery(b"\xff\x00raw"))).unwrap();
        assert_eq!(v["payload_encoding"], "base64");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, b"\xff\x00raw");
    }
}
