//! The spool's way out: a spooled record is handed to the live route's destination it was
//! stored for, so a redelivery goes through the same module (and is byte-identical to a direct
//! one), and follows config changes (a removed webhook is retried until its horizon ends).

use std::sync::Arc;

use crate::{
    cache::ConfigCache,
    dispatch::Route,
    metrics::Metrics,
    modules::{Delivery, DeliveryError},
    spool::{Destination, Parts, RetryPolicy, Target},
};

/// Delivers spooled records through the routes in the cache.
pub struct Routes {
    pub cache: ConfigCache,
    pub metrics: Arc<Metrics>,
}

impl Routes {
    /// The live route of a spool queue's webhook.
    fn route<'d>(&self, destination: &'d Destination) -> Result<(Arc<Route>, &'d Parts), String> {
        let parts = destination
            .parts()
            .ok_or_else(|| format!("`{}` is not a destination name", destination.name()))?;
        let route = self.cache.webhook(&parts.webhook).ok_or_else(|| {
            format!(
                "webhook `{}` is not configured (or its entry is invalid)",
                parts.webhook
            )
        })?;
        Ok((route, parts))
    }
}

#[async_trait::async_trait]
impl Target for Routes {
    async fn deliver(
        &self,
        destination: &Destination,
        deliveries: &[Delivery],
    ) -> Vec<Result<(), DeliveryError>> {
        match self.route(destination) {
            Ok((route, parts)) => route.redeliver(parts, deliveries, &self.metrics).await,
            Err(error) => deliveries
                .iter()
                .map(|_| Err(DeliveryError::NoRoute(error.clone())))
                .collect(),
        }
    }

    fn policy(&self, destination: &Destination) -> RetryPolicy {
        self.route(destination)
            .map(|(route, _)| route.webhook.retry)
            .unwrap_or_default()
    }
}
