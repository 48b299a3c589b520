//! The spool's way out: a spooled record is handed to the live route's destination it was
//! stored for, so a redelivery goes through the same module (and is byte-identical to a direct
//! one), and follows config changes (a removed webhook is retried until its horizon ends).

use std::sync::Arc;

use crate::{
    cache::ConfigCache,
    dispatch::Route,
    keys::{Namespace, WebhookId, WebhookKey},
    metrics::Metrics,
    modules::{Delivery, DeliveryError},
    spool::{Destination, RetryPolicy, Target},
};

/// Delivers spooled records through the routes in the cache.
pub struct Routes {
    pub cache: ConfigCache,
    pub metrics: Arc<Metrics>,
}

impl Routes {
    /// The live route a spool queue name refers to.
    fn route(&self, destination: &Destination) -> Result<Arc<Route>, String> {
        let parts = destination
            .parts()
            .ok_or_else(|| format!("`{}` is not a destination name", destination.name()))?;
        let key = WebhookKey::new(
            Namespace::parse(parts.namespace).map_err(|e| e.to_string())?,
            WebhookId::parse(parts.webhook).map_err(|e| e.to_string())?,
        );
        self.cache
            .webhook(&key)
            .ok_or_else(|| format!("webhook `{key}` is not configured (or its entry is invalid)"))
    }
}

#[async_trait::async_trait]
impl Target for Routes {
    async fn deliver(
        &self,
        destination: &str,
        deliveries: &[Delivery],
    ) -> Vec<Result<(), DeliveryError>> {
        let destination = Destination::named(destination);
        let route = self.route(&destination).and_then(|route| {
            let parts = destination.parts().ok_or("not a destination name")?;
            Ok((route, parts))
        });
        match route {
            Ok((route, parts)) => route.redeliver(parts, deliveries, &self.metrics).await,
            Err(error) => deliveries
                .iter()
                .map(|_| Err(DeliveryError::NoRoute(error.clone())))
                .collect(),
        }
    }

    fn policy(&self, destination: &str) -> RetryPolicy {
        self.route(&Destination::named(destination))
            .map(|route| route.webhook.retry)
            .unwrap_or_default()
    }
}
