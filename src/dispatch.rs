//! A live route: a validated webhook with its modules built, and how a delivery runs through them.

use std::sync::Arc;

use crate::{
    config::{DataType, Webhook},
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
    pub fn build(key: WebhookKey, webhook: Webhook) -> Self {
        let modules = webhook
            .destinations
            .iter()
            .map(|d| d.module.build())
            .collect();
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

    /// Hands the delivery to every module, in order, within the webhook's timeout.
    /// `Ok` only when every module acknowledged.
    pub async fn dispatch(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let timeout = self.webhook.timeout;
        let all = async {
            for module in &self.modules {
                module.deliver(delivery).await?;
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
