//! The Kafka producer of one connection (the only file that builds rdkafka clients).

use std::time::Duration;

use rdkafka::{
    config::ClientConfig,
    producer::{FutureProducer, Producer as _},
    util::Timeout,
};

use crate::config::connection::KafkaConnection;

/// How long librdkafka keeps retrying one record before reporting failure, unless
/// `client_config` sets `message.timeout.ms`. Longer than any webhook timeout: a record whose
/// sender already got a 503 may still land (at-least-once), never the other way round.
const MESSAGE_TIMEOUT_MS: &str = "30000";
/// Each sender waits for its record's acknowledgement, so batching delay is paid per request:
/// keep it short unless `client_config` says otherwise (concurrent requests still batch).
const LINGER_MS: &str = "1";

/// A shared producer; clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer(pub(super) FutureProducer);

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

impl Producer {
    /// Creates the producer. librdkafka connects in the background: no I/O here.
    pub fn build(connection: &KafkaConnection) -> Result<Self, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &connection.bootstrap_servers)
            .set("acks", &connection.acks)
            .set("enable.idempotence", connection.idempotence.to_string())
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
            .set("linger.ms", LINGER_MS)
            .set("client.id", "switchyard");
        for (key, value) in &connection.client_config {
            config.set(key, &value.0);
        }
        config
            .create::<FutureProducer>()
            .map(Producer)
            .map_err(|e| format!("cannot create Kafka producer: {e}"))
    }

    /// Waits (on a blocking thread) for queued records to be delivered, up to `grace`.
    pub async fn flush(self, grace: Duration) {
        let result = tokio::task::spawn_blocking(move || self.0.flush(Timeout::After(grace))).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Kafka producer did not flush in time."),
            Err(error) => tracing::warn!(%error, "Kafka producer flush task failed."),
        }
    }
}
