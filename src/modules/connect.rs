//! The `connect` module: stores the request in a channel (connector mode), numbered and
//! durable (on this instance's disk, or in the fleet's Redis), for a connector in a private
//! network to pull. It returns once the message is durable;
//! the request is then answered 202 `stored`.

use super::{rfc3339, Delivery, DeliveryError, Module};
use crate::{
    connect::{ChannelError, Header},
    connections::ConnectionPool,
    keys::ConnectionName,
};

/// `module-config` of `connect`: nothing to configure (the channel is the `connection`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {}

/// Appends to the channel named by the connection.
#[derive(Debug)]
pub struct ConnectModule {
    connection: ConnectionName,
    pool: ConnectionPool,
}

impl ConnectModule {
    pub fn new(connection: ConnectionName, pool: ConnectionPool) -> Self {
        Self { connection, pool }
    }
}

#[async_trait::async_trait]
impl Module for ConnectModule {
    fn name(&self) -> &'static str {
        "connect"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let user = crate::connections::Use {
            namespace: delivery.namespace.as_str(),
            target: None,
        };
        let client = self.pool.channel(&self.connection, "connect", user)?;
        let mut headers = delivery.headers.clone();
        headers.extend(delivery.relayed.iter().cloned());
        let header = Header {
            seq: 0,
            namespace: delivery.namespace.as_str().to_owned(),
            webhook: delivery.webhook.as_str().to_owned(),
            request_id: delivery.request_id.clone(),
            received_at: rfc3339(delivery.received_at),
            headers,
        };
        let received_ms = crate::clock::epoch_ms(delivery.received_at);
        client
            .queue
            .append(client.max_bytes, received_ms, header, delivery.body.clone())
            .await
            .map(drop)
            .map_err(|error| match error {
                ChannelError::Full { channel, max } => DeliveryError::ChannelFull { channel, max },
                other => DeliveryError::Unavailable {
                    module: "connect",
                    reason: other.to_string(),
                },
            })
    }
}
