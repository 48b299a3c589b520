//! The `kafka` module: one record per request, acknowledged by the broker's delivery report.

pub mod config;
pub mod producer;

use std::time::Duration;

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
    util::Timeout,
};

pub use config::KafkaConfig;
pub use producer::Producer;

use super::{rfc3339, Delivery, DeliveryError, Module};
use crate::{connections::ConnectionPool, keys::ConnectionName};

/// Produces to `config.topic` through the named connection's shared producer.
#[derive(Debug)]
pub struct KafkaModule {
    config: KafkaConfig,
    connection: ConnectionName,
    pool: ConnectionPool,
}

impl KafkaModule {
    pub fn new(config: KafkaConfig, connection: ConnectionName, pool: ConnectionPool) -> Self {
        Self {
            config,
            connection,
            pool,
        }
    }

    fn key(&self, delivery: &Delivery) -> Option<Vec<u8>> {
        match self.config.key.as_ref()? {
            config::KeySource::Header(name) => {
                delivery.header(name).map(|value| value.as_bytes().to_vec())
            }
            config::KeySource::JsonPointer(pointer) => {
                let value: serde_json::Value = serde_json::from_slice(&delivery.body).ok()?;
                match value.pointer(pointer)? {
                    serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string().into_bytes()),
                }
            }
        }
    }

    fn headers(&self, delivery: &Delivery) -> OwnedHeaders {
        let received_at = rfc3339(delivery.received_at);
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "switchyard-namespace",
                value: Some(delivery.namespace.as_str()),
            })
            .insert(Header {
                key: "switchyard-webhook",
                value: Some(delivery.webhook.as_str()),
            })
            .insert(Header {
                key: "switchyard-request-id",
                value: Some(delivery.request_id.as_str()),
            })
            .insert(Header {
                key: "switchyard-received-at",
                value: Some(received_at.as_str()),
            });
        if let Some(content_type) = delivery.header("content-type") {
            headers = headers.insert(Header {
                key: "content-type",
                value: Some(content_type),
            });
        }
        for name in &self.config.forward_headers {
            if name == "content-type" {
                continue;
            }
            if let Some(value) = delivery.header(name) {
                headers = headers.insert(Header {
                    key: name.as_str(),
                    value: Some(value),
                });
            }
        }
        headers
    }
}

#[async_trait::async_trait]
impl Module for KafkaModule {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let producer = self.pool.kafka(&self.connection)?;
        let key = self.key(delivery);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.config.topic)
            .payload(delivery.body.as_ref())
            .headers(self.headers(delivery));
        if let Some(key) = key.as_deref() {
            record = record.key(key);
        }
        if let Some(partition) = self.config.partition {
            record = record.partition(partition);
        }
        // A full local queue fails at once (503) instead of waiting: backpressure reaches the sender.
        match producer
            .0
            .send(record, Timeout::After(Duration::ZERO))
            .await
        {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(DeliveryError::Unavailable {
                module: "kafka",
                reason: error.to_string(),
            }),
        }
    }
}
