//! A live route: a validated webhook with its modules built, and how a delivery runs through them.

use std::{sync::Arc, time::Instant};

use futures_util::future::try_join_all;

use crate::{
    connections::ConnectionPool,
    keys::ConnectionName,
    keys::WebhookKey,
    metrics::Metrics,
    modules::{Delivery, DeliveryError, Module},
    webhook::{DataType, Execution, Webhook},
};

/// One built destination and the connection it uses (for error accounting).
#[derive(Debug)]
struct Destination {
    module: Arc<dyn Module>,
    connection: Option<ConnectionName>,
}

impl Destination {
    async fn deliver(&self, delivery: &Delivery, metrics: &Metrics) -> Result<(), DeliveryError> {
        let started = Instant::now();
        let result = self.module.deliver(delivery).await;
        metrics.delivery(
            self.module.name(),
            self.connection.as_ref().map(ConnectionName::as_str),
            result.is_ok(),
            started.elapsed(),
        );
        result
    }
}

/// What the cache serves for one webhook key.
#[derive(Debug)]
pub struct Route {
    pub key: WebhookKey,
    pub webhook: Webhook,
    modules: Vec<Destination>,
    /// SHA-256 of the entry's raw value: a reload that brings the same bytes keeps this route,
    /// and with it the webhook's rate-limit budget.
    pub source: Option<[u8; 32]>,
}

impl Route {
    /// Builds the modules of a validated webhook. Does no I/O.
    pub fn build(key: WebhookKey, webhook: Webhook, pool: &ConnectionPool) -> Self {
        let modules = webhook
            .destinations
            .iter()
            .map(|d| Destination {
                module: d.build(pool),
                connection: d.connection().cloned(),
            })
            .collect();
        Self {
            key,
            webhook,
            modules,
            source: None,
        }
    }

    /// The same route, remembering the digest of the value it was built from.
    pub fn from_source(mut self, digest: [u8; 32]) -> Self {
        self.source = Some(digest);
        self
    }

    /// A route with modules supplied by the caller (tests plug recording modules in here).
    pub fn with_modules(key: WebhookKey, webhook: Webhook, modules: Vec<Arc<dyn Module>>) -> Self {
        let modules = modules
            .into_iter()
            .map(|module| Destination {
                module,
                connection: None,
            })
            .collect();
        Self {
            key,
            webhook,
            modules,
            source: None,
        }
    }

    pub fn data_type(&self) -> DataType {
        self.webhook.data_type
    }

    /// Hands the delivery to every module (in order, or all at once for a parallel chain) within
    /// the webhook's timeout. `Ok` only when every module acknowledged.
    pub async fn dispatch(
        &self,
        delivery: &Delivery,
        metrics: &Metrics,
    ) -> Result<(), DeliveryError> {
        let timeout = self.webhook.timeout;
        let all = async {
            match self.webhook.execution {
                Execution::Sequential => {
                    for destination in &self.modules {
                        destination.deliver(delivery, metrics).await?;
                    }
                }
                Execution::Parallel => {
                    try_join_all(self.modules.iter().map(|d| d.deliver(delivery, metrics))).await?;
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
