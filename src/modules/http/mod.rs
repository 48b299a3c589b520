//! The `http` module: the request body exactly as received, sent to a service on an `http`
//! connection, acknowledged by a 2xx answer. Switchyard's metadata goes in `switchyard-*`
//! headers (as for Kafka); nothing of the answer goes back to the sender.

pub mod config;

use std::time::SystemTime;

use base64::Engine as _;
use hmac::Mac as _;

pub use config::HttpConfig;

use super::{metadata_headers, rfc3339, Delivery, DeliveryError, Module};
use crate::{
    connections::{
        http::{Failure, Outgoing},
        ConnectionPool,
    },
    keys::ConnectionName,
};

/// Sends to `config.path` on the named connection's pooled client.
#[derive(Debug)]
pub struct HttpModule {
    config: HttpConfig,
    /// The decoded `sign.secret`.
    signing_key: Option<Vec<u8>>,
    connection: ConnectionName,
    pool: ConnectionPool,
}

impl HttpModule {
    /// `config` is validated: its signing secret decodes.
    pub fn new(config: HttpConfig, connection: ConnectionName, pool: ConnectionPool) -> Self {
        let signing_key = config
            .sign
            .as_ref()
            .and_then(|sign| config::signing_key(sign).ok());
        Self {
            config,
            signing_key,
            connection,
            pool,
        }
    }

    /// The Standard Webhooks headers: the request id as `webhook-id` (the same on every retry,
    /// so the service can deduplicate), the time of this attempt, and the signature.
    fn signature(
        &self,
        delivery: &Delivery,
        now: SystemTime,
    ) -> Option<[(&'static str, String); 3]> {
        let key = self.signing_key.as_ref()?;
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
        mac.update(delivery.request_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&delivery.body);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        Some([
            ("webhook-id", delivery.request_id.clone()),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", format!("v1,{signature}")),
        ])
    }
}

#[async_trait::async_trait]
impl Module for HttpModule {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let user = crate::connections::Use {
            namespace: delivery.namespace.as_str(),
            target: Some(&self.config.path),
        };
        let client = self.pool.http(&self.connection, "http", user)?;
        let received_at = rfc3339(delivery.received_at);
        let mut headers: Vec<(&str, String)> =
            metadata_headers(delivery, &self.config.forward_headers, &received_at)
                .into_iter()
                .map(|(name, value)| (name, value.to_owned()))
                .collect();
        if delivery.header("content-type").is_none() {
            let content_type = if delivery.json {
                "application/json"
            } else {
                "application/octet-stream"
            };
            headers.push(("content-type", content_type.to_owned()));
        }
        if let Some(trace) = &delivery.trace {
            headers.push(("traceparent", trace.to_w3c()));
        }
        headers.extend(
            self.signature(delivery, SystemTime::now())
                .into_iter()
                .flatten(),
        );
        let outgoing = Outgoing {
            method: &self.config.method,
            path: &self.config.path,
            headers,
            body: delivery.body.clone(),
        };
        client
            .send(outgoing)
            .await
            .map_err(|failure| match failure {
                Failure::Permanent(reason) => DeliveryError::Rejected {
                    module: "http",
                    reason,
                },
                Failure::Retryable(reason) => DeliveryError::Unavailable {
                    module: "http",
                    reason,
                },
                Failure::Throttled(reason, retry_after) => DeliveryError::Throttled {
                    module: "http",
                    reason,
                    retry_after,
                },
            })
    }
}
