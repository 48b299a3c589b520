//! The Kafka client of a `kafka` connection (the only file that imports rdkafka).

use std::time::Duration;

use rdkafka::{
    config::ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer as _},
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

/// One idempotent producer per connection, shared by every webhook that names it.
#[derive(Clone)]
pub struct Producer(FutureProducer);

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

/// One record to produce.
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub partition: Option<i32>,
    pub headers: Vec<(&'a str, &'a str)>,
    pub payload: &'a [u8],
}

fn client_config(connection: &KafkaConnection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &connection.bootstrap_servers)
        .set("acks", connection.acks.as_str())
        .set("enable.idempotence", connection.idempotence.to_string())
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        .set("linger.ms", LINGER_MS)
        .set("client.id", "switchyard");
    for (key, value) in &connection.client_config {
        config.set(key, &value.0);
    }
    config
}

/// Whether librdkafka accepts the connection's properties. No I/O: this only builds the native
/// configuration, so a rejected `client_config` is reported when the entry is applied.
pub fn validate(connection: &KafkaConnection) -> Result<(), String> {
    client_config(connection)
        .create_native_config()
        .map(|_| ())
        .map_err(|e| format!("librdkafka refuses `client_config`: {e}"))
}

/// The broker refused a record for good when it is larger than the broker or topic allows, or
/// the producer may not write to the topic. A missing topic is not permanent (it may be
/// created), nor is anything about reaching the brokers.
impl From<rdkafka::error::KafkaError> for super::WriteError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let permanent = matches!(
            error.rdkafka_error_code(),
            Some(
                Code::MessageSizeTooLarge
                    | Code::InvalidMessageSize
                    | Code::TopicAuthorizationFailed
                    | Code::ClusterAuthorizationFailed
                    | Code::InvalidRecord
            )
        );
        Self {
            permanent,
            message: error.to_string(),
        }
    }
}

impl Producer {
    /// Builds the producer (no I/O here; librdkafka connects in its own threads).
    pub fn build(connection: &KafkaConnection) -> Result<Self, String> {
        client_config(connection)
            .create::<FutureProducer>()
            .map(Producer)
            .map_err(|e| format!("cannot create Kafka producer: {e}"))
    }

    /// Produces one record; returns once the broker acknowledged it (the delivery report).
    pub async fn send(&self, record: Record<'_>) -> Result<(), super::WriteError> {
        let headers = record
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        let mut future: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(record.topic)
            .payload(record.payload)
            .headers(headers);
        if let Some(key) = record.key {
            future = future.key(key);
        }
        if let Some(partition) = record.partition {
            future = future.partition(partition);
        }
        self.0
            .send(future, Timeout::After(Duration::ZERO))
            .await
            .map(|_| ())
            .map_err(|(error, _)| super::WriteError::from(error))
    }

    /// Delivers what is queued, up to `grace`.
    pub async fn flush(self, grace: Duration) {
        let result = tokio::task::spawn_blocking(move || self.0.flush(Timeout::After(grace))).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Kafka producer did not flush in time."),
            Err(error) => tracing::warn!(%error, "Kafka producer flush task failed."),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::connections::WriteError;
    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode as Code};

    #[test]
    fn only_refusals_of_the_record_itself_are_permanent() {
        for code in [Code::MessageSizeTooLarge, Code::TopicAuthorizationFailed] {
            assert!(
                WriteError::from(KafkaError::MessageProduction(code)).permanent,
                "{code:?}"
            );
        }
        for code in [
            Code::MessageTimedOut,
            Code::UnknownTopicOrPartition,
            Code::AllBrokersDown,
            Code::NotLeaderForPartition,
        ] {
            assert!(
                !WriteError::from(KafkaError::MessageProduction(code)).permanent,
                "{code:?}"
            );
        }
    }
}
