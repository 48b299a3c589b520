//! The `kafka` module: one record per request, acknowledged by the broker's delivery report.

pub mod config;

pub use config::KafkaConfig;

use super::{metadata_headers, rfc3339, Delivery, DeliveryError, Module};
use crate::{
    connections::{kafka::Record, ConnectionPool},
    keys::ConnectionName,
};

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
}

#[async_trait::async_trait]
impl Module for KafkaModule {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let user = crate::connections::Use {
            namespace: delivery.namespace.as_str(),
            target: Some(&self.config.topic),
        };
        let producer = self.pool.kafka(&self.connection, "kafka", user)?;
        let key = self.key(delivery);
        let received_at = rfc3339(delivery.received_at);
        let record = Record {
            topic: &self.config.topic,
            key: key.as_deref(),
            partition: self.config.partition,
            headers: metadata_headers(delivery, &self.config.forward_headers, &received_at),
            payload: delivery.body.as_ref(),
        };
        producer
            .send(record)
            .await
            .map_err(|error| DeliveryError::from_write("kafka", error))
    }
}
