//! A live route: a validated webhook with its modules built, and how a delivery runs through them.

use std::sync::Arc;

use futures_util::future::try_join_all;

use crate::{
    config::{webhook::Execution, DataType, Webhook},
    connections::ConnectionPool,
    keys::WebhookKey,
    modules::{Delivery, DeliveryError, Module},
};

/// What the cache serves for one webhook key.
#[derive(Debug)]
pub struct Route {
    pub key: WebhookKey,
    pub webhook: Webhook,
    modules: Vec<Arc<dyn Module>>,
}

impl Route {
    /// Builds the modules of a validated webhook. Does no I/O.
    pub fn build(key: WebhookKey, webhook: Webhook, pool: &ConnectionPool) -> Self {
        let modules = webhook.destinations.iter().map(|d| d.build(pool)).collect();
        Self {
            key,
            webhook,
            modules,
        }
    }

    /// A route with modules supplied by the caller (tests plug recording modules in here).
    pub fn with_modules(key: WebhookKey, webhook: Webhook, modules: Vec<Arc<dyn Module>>) -> Self {
        Self {
            key,
            webhook,
            modules,
        }
    }

    pub fn data_type(&self) -> DataType {
        self.webhook.data_type
    }

    /// Hands the delivery to every module (in order, or all at once for a parallel chain) within
    /// the webhook's timeout. `Ok` only when every module acknowledged.
    pub async fn dispatch(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let timeout = self.webhook.timeout;
        let all = async {
            match self.webhook.execution {
                Execution::Sequential => {
                    for module in &self.modules {
                        module.deliver(delivery).await?;
                    }
                }
                Execution::Parallel => {
                    try_join_all(self.modules.iter().map(|m| m.deliver(delivery))).await?;
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, all).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}
