//! A live route: a validated webhook with its modules built, and how a delivery runs through
//! them, directly or through the spool (its `"spool"` mode).

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use futures_util::future::{join_all, try_join_all};

use crate::{
    connections::ConnectionPool,
    keys::ConnectionName,
    keys::WebhookKey,
    metrics::Metrics,
    modules::{Delivery, DeliveryError, Module},
    spool::{self, record::SpooledDelivery, Spool, SpoolError, SpoolMode},
    telemetry::trace::{self, Span},
    webhook::{DataType, Execution, Webhook},
};

/// Where a request goes, decided once at intake from what it says (the webhook's `filter`,
/// each destination's `when` and mapped target). A spooled request keeps this decision: only
/// the chosen destinations' queues (for a mapped one, its chosen target's queue) take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Nowhere: the `filter` did not match, or no destination's `when` did.
    Filtered,
    /// To these destinations.
    To(Chosen),
}

/// The destinations a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// Every destination (none has a `when` or a mapped target).
    All,
    /// Per destination, in the chain's order: not this one (`None`), or the target it writes
    /// to (an index into its targets; always 0 for a destination with one target).
    Some(Vec<Option<usize>>),
}

impl Chosen {
    /// The target destination `index` writes this request to, if it takes it.
    fn target(&self, index: usize) -> Option<usize> {
        match self {
            Chosen::All => Some(0),
            Chosen::Some(picks) => picks.get(index).copied().flatten(),
        }
    }
}

/// One built destination, the connection it uses (for error accounting) and its spool queue.
#[derive(Debug)]
struct Destination {
    module: Arc<dyn Module>,
    connection: Option<ConnectionName>,
    /// Its module's name and what it writes to (topic, stream, key or channel): with the
    /// connection, what names its queue.
    name: &'static str,
    target: Option<Box<str>>,
    /// Named on first use: a full load builds 250,000 routes at ten times the seed's scale, and
    /// a queue name (formatted, then hashed) is most of a route's cost.
    queue: OnceLock<spool::Destination>,
}

impl Destination {
    /// A `connect` channel: durable storage of its own, never spooled, answered `stored`.
    fn is_channel(&self) -> bool {
        self.name == "connect"
    }

    fn queue(&self, key: &WebhookKey) -> &spool::Destination {
        self.queue.get_or_init(|| {
            spool::Destination::new(
                key,
                self.name,
                self.connection.as_ref().map(ConnectionName::as_str),
                self.target.as_deref(),
            )
        })
    }

    /// Whether this is the destination a stored queue names.
    fn is(&self, parts: &spool::Parts, index: usize) -> bool {
        let same_module = self.name == &*parts.module
            && self.connection.as_ref().map(ConnectionName::as_str) == parts.connection.as_deref();
        same_module
            && match &parts.place {
                spool::Place::Target(_) => {
                    parts.place == spool::Place::of_target(self.target.as_deref())
                }
                spool::Place::Position(position) => *position == index,
            }
    }
}

/// What a direct attempt came to.
enum Attempt {
    Acknowledged,
    /// Not taken: the reason when the destination refused it for good (it is then kept as a
    /// dead letter, never sent again unless replayed).
    Missed(Option<String>),
    /// A channel did not take it: the request fails (a channel is durable storage of its own,
    /// so it is never spooled).
    Failed(DeliveryError),
}

/// A destination that must take a request from the spool.
struct Missed {
    queue: spool::Destination,
    refused: Option<String>,
}

/// How a request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every destination acknowledged (200).
    Delivered,
    /// At least one destination's copy is in the spool, on disk (202).
    Stored,
}

/// Why a request was not taken (503 either way: the sender should retry).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The spool as the request path uses it.
#[derive(Clone, Copy)]
pub struct SpoolPath<'a> {
    pub spool: &'a Spool,
    /// `SPOOL_HANDOFF_MS`: how long destinations get before a request is spooled instead.
    pub handoff: Duration,
}

impl Destination {
    /// A span for one hand-over (`deliver` direct, `forward` from the spool).
    fn span(&self, key: &WebhookKey, delivery: &Delivery, name: &'static str) -> Span {
        let span = Span::destination(delivery.trace.as_ref(), name);
        if span.is_on() {
            span.set("switchyard.module", self.name);
            span.set("switchyard.destination", self.queue(key).name().to_owned());
            span.set("request_id", delivery.request_id.clone());
        }
        span
    }

    async fn deliver(
        &self,
        key: &WebhookKey,
        delivery: &Delivery,
        metrics: &Metrics,
    ) -> Result<(), DeliveryError> {
        let span = self.span(key, delivery, "deliver");
        let started = Instant::now();
        let result = self.module.deliver(delivery).await;
        ended(&span, &result);
        metrics.delivery(
            self.module.name(),
            self.connection.as_ref().map(ConnectionName::as_str),
            result.is_ok(),
            started.elapsed(),
        );
        result
    }

    /// Several deliveries at once (the spool's forwarder), each counted with the batch's time.
    async fn deliver_all(
        &self,
        key: &WebhookKey,
        deliveries: &[Delivery],
        metrics: &Metrics,
    ) -> Vec<Result<(), DeliveryError>> {
        let spans: Vec<Span> = if trace::enabled() {
            deliveries
                .iter()
                .map(|d| self.span(key, d, "forward"))
                .collect()
        } else {
            Vec::new()
        };
        let started = Instant::now();
        let results = self.module.deliver_all(deliveries).await;
        let elapsed = started.elapsed();
        let connection = self.connection.as_ref().map(ConnectionName::as_str);
        for (index, result) in results.iter().enumerate() {
            metrics.delivery(self.module.name(), connection, result.is_ok(), elapsed);
            if let Some(span) = spans.get(index) {
                ended(span, result);
            }
        }
        results
    }
}

/// What the cache serves for one webhook key.
#[derive(Debug)]
pub struct Route {
    pub key: WebhookKey,
    pub webhook: Webhook,
    /// Per element of the chain, one destination per target it may write to.
    modules: Vec<Vec<Destination>>,
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
            .map(|d| {
                d.build(pool)
                    .into_iter()
                    .zip(d.targets())
                    .map(|(module, target)| Destination {
                        module,
                        connection: d.connection().cloned(),
                        name: d.name(),
                        target: target.map(Into::into),
                        queue: OnceLock::new(),
                    })
                    .collect()
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
            .map(|module| {
                vec![Destination {
                    name: module.name(),
                    module,
                    connection: None,
                    target: None,
                    queue: OnceLock::new(),
                }]
            })
            .collect();
        Self {
            key,
            webhook,
            modules,
            source: None,
        }
    }

    /// Whether a destination is a `connect` channel (it carries the sender's signatures on).
    pub fn relays(&self) -> bool {
        self.modules.iter().flatten().any(Destination::is_channel)
    }

    pub fn data_type(&self) -> DataType {
        self.webhook.data_type
    }

    /// Where `request` goes: nowhere when the `filter` does not match or no destination takes
    /// it; else to every destination whose `when` (if any) matches and, for a mapped target,
    /// whose mapping chooses a target.
    pub fn route(&self, request: &crate::condition::Request<'_, '_>) -> Routing {
        if let Some(filter) = &self.webhook.filter {
            if !filter.matches(request) {
                return Routing::Filtered;
            }
        }
        let destinations = self.webhook.destinations.iter();
        if self.webhook.when.iter().all(Option::is_none)
            && destinations.clone().all(|d| d.mapping().is_none())
        {
            return Routing::To(Chosen::All);
        }
        let picks: Vec<Option<usize>> = destinations
            .zip(&self.webhook.when)
            .map(|(destination, when)| {
                if !when.as_ref().is_none_or(|c| c.matches(request)) {
                    return None;
                }
                match destination.mapping() {
                    Some(mapping) => mapping.choose(request),
                    None => Some(0),
                }
            })
            .collect();
        if picks.iter().any(Option::is_some) {
            Routing::To(Chosen::Some(picks))
        } else {
            Routing::Filtered
        }
    }

    /// The chosen destinations, with their positions in the chain.
    fn chosen<'a>(
        &'a self,
        chosen: &'a Chosen,
    ) -> impl Iterator<Item = (usize, &'a Destination)> + 'a {
        self.modules
            .iter()
            .enumerate()
            .filter_map(move |(index, targets)| Some((index, targets.get(chosen.target(index)?)?)))
    }

    /// Takes a request: straight to the destinations, or through the spool as the webhook's
    /// `"spool"` mode says (`spool` is `None` when `SPOOL_DIR` is empty: every webhook is then
    /// `off`).
    pub async fn dispatch(
        &self,
        delivery: &Delivery,
        chosen: &Chosen,
        metrics: &Metrics,
        spool: Option<SpoolPath<'_>>,
    ) -> Result<Outcome, DispatchError> {
        // A request a channel took is `stored` (a connector has yet to pull it).
        let taken = if self.chosen(chosen).any(|(_, d)| d.is_channel()) {
            Outcome::Stored
        } else {
            Outcome::Delivered
        };
        match (spool, self.webhook.spool) {
            (None, _) | (Some(_), SpoolMode::Off) => {
                self.deliver_all(delivery, chosen, metrics).await?;
                Ok(taken)
            }
            (Some(path), SpoolMode::Always) => {
                // Channels take it first, directly; the other destinations from the spool.
                for (_, channel) in self.chosen(chosen).filter(|(_, d)| d.is_channel()) {
                    tokio::time::timeout(
                        self.webhook.timeout,
                        channel.deliver(&self.key, delivery, metrics),
                    )
                    .await
                    .map_err(|_| DeliveryError::Timeout {
                        timeout_ms: millis(self.webhook.timeout),
                    })??;
                }
                let all: Vec<_> = self
                    .chosen(chosen)
                    .filter(|(_, d)| !d.is_channel())
                    .map(|(_, d)| d.queue(&self.key).clone())
                    .collect();
                if all.is_empty() {
                    return Ok(Outcome::Stored);
                }
                self.store(path.spool, all, delivery, None).await
            }
            (Some(path), SpoolMode::OnFailure) => {
                let missed = self
                    .deliver_or_fail(delivery, chosen, metrics, path)
                    .await?;
                if missed.is_empty() {
                    return Ok(taken);
                }
                // Those that refused for good are kept as dead letters (one record each, with
                // its own reason); the rest are retried.
                let (refused, retried): (Vec<_>, Vec<_>) =
                    missed.into_iter().partition(|m| m.refused.is_some());
                if !retried.is_empty() {
                    let queues = retried.into_iter().map(|m| m.queue).collect();
                    self.store(path.spool, queues, delivery, None).await?;
                }
                for missed in refused {
                    let reason = missed.refused.as_deref();
                    self.store(path.spool, vec![missed.queue], delivery, reason)
                        .await?;
                }
                Ok(Outcome::Stored)
            }
        }
    }

    /// Stores the request for `destinations`; as a dead letter when it was `refused` for good.
    async fn store(
        &self,
        spool: &Spool,
        destinations: Vec<spool::Destination>,
        delivery: &Delivery,
        refused: Option<&str>,
    ) -> Result<Outcome, DispatchError> {
        let span = Span::stage(delivery.trace.as_ref(), "spool");
        if span.is_on() {
            let names: Vec<&str> = destinations.iter().map(spool::Destination::name).collect();
            span.set("switchyard.destinations", names.join(" "));
        }
        let record = match refused {
            None => SpooledDelivery::encode_new(delivery),
            Some(reason) => SpooledDelivery::encode_refused(delivery, reason),
        };
        spool
            .store(destinations, record)
            .await
            .inspect_err(|e| span.fail(e))?;
        Ok(Outcome::Stored)
    }

    /// Delivers to each destination within the handoff time; returns those that must take
    /// the request from the spool instead: they failed, did not answer in time, or already
    /// have a backlog (new deliveries queue behind it), and in a sequential chain every
    /// destination after the first of those. Only those are spooled, so a destination that
    /// acknowledged never gets the request again.
    async fn deliver_or_fail(
        &self,
        delivery: &Delivery,
        chosen: &Chosen,
        metrics: &Metrics,
        path: SpoolPath<'_>,
    ) -> Result<Vec<Missed>, DeliveryError> {
        let deadline = tokio::time::Instant::now() + path.handoff.min(self.webhook.timeout);
        match self.webhook.execution {
            Execution::Sequential => {
                // As without the spool, the chain stops at the first destination that does not
                // take the request: it and every one after it are spooled (and forwarded on
                // their own queues).
                for (index, destination) in self.chosen(chosen) {
                    let attempt = self
                        .attempt(destination, delivery, metrics, path, deadline)
                        .await;
                    if let Attempt::Failed(error) = attempt {
                        return Err(error);
                    }
                    if let Attempt::Missed(refused) = attempt {
                        let mut missed = vec![Missed {
                            queue: destination.queue(&self.key).clone(),
                            refused,
                        }];
                        missed.extend(self.chosen(chosen).filter(|(i, _)| *i > index).map(
                            |(_, d)| Missed {
                                queue: d.queue(&self.key).clone(),
                                refused: None,
                            },
                        ));
                        return Ok(missed);
                    }
                }
                Ok(Vec::new())
            }
            Execution::Parallel => {
                let attempts = join_all(
                    self.chosen(chosen)
                        .map(|(_, d)| self.attempt(d, delivery, metrics, path, deadline)),
                )
                .await;
                let mut missed = Vec::new();
                for (d, attempt) in self.chosen(chosen).map(|(_, d)| d).zip(attempts) {
                    match attempt {
                        Attempt::Acknowledged => {}
                        Attempt::Failed(error) => return Err(error),
                        Attempt::Missed(refused) => missed.push(Missed {
                            queue: d.queue(&self.key).clone(),
                            refused,
                        }),
                    }
                }
                Ok(missed)
            }
        }
    }

    /// One destination's direct attempt, by `deadline`.
    async fn attempt(
        &self,
        destination: &Destination,
        delivery: &Delivery,
        metrics: &Metrics,
        path: SpoolPath<'_>,
        deadline: tokio::time::Instant,
    ) -> Attempt {
        if destination.is_channel() {
            return match tokio::time::timeout(
                self.webhook.timeout,
                destination.deliver(&self.key, delivery, metrics),
            )
            .await
            {
                Ok(Ok(())) => Attempt::Acknowledged,
                Ok(Err(error)) => Attempt::Failed(error),
                Err(_) => Attempt::Failed(DeliveryError::Timeout {
                    timeout_ms: millis(self.webhook.timeout),
                }),
            };
        }
        if path.spool.has_backlog(destination.queue(&self.key)) {
            return Attempt::Missed(None);
        }
        let error = match tokio::time::timeout_at(
            deadline,
            destination.deliver(&self.key, delivery, metrics),
        )
        .await
        {
            Ok(Ok(())) => return Attempt::Acknowledged,
            Ok(Err(error)) => error,
            Err(_) => DeliveryError::Timeout {
                timeout_ms: millis(path.handoff.min(self.webhook.timeout)),
            },
        };
        if let Some(wait) = error.retry_after() {
            path.spool.hold(destination.queue(&self.key), wait);
        }
        tracing::warn!(
            webhook = %self.key,
            request_id = %delivery.request_id,
            destination = destination.queue(&self.key).name(),
            %error,
            "Delivery failed; the request goes to the spool."
        );
        Attempt::Missed(error.is_permanent().then(|| error.to_string()))
    }

    /// Hands spooled deliveries to the destination `parts` names, in order, within the
    /// webhook's timeout; one result each. Fails them all when the webhook no longer has that
    /// destination (the forwarder retries until the record's horizon ends).
    pub async fn redeliver(
        &self,
        parts: &spool::Parts,
        deliveries: &[Delivery],
        metrics: &Metrics,
    ) -> Vec<Result<(), DeliveryError>> {
        let all = |error: DeliveryError| deliveries.iter().map(|_| Err(error.clone())).collect();
        let destination = self
            .modules
            .iter()
            .enumerate()
            .flat_map(|(index, targets)| targets.iter().map(move |d| (index, d)))
            .find(|(index, d)| d.is(parts, *index))
            .map(|(_, d)| d);
        let Some(destination) = destination else {
            let place = match &parts.place {
                spool::Place::Target(Some(target)) => format!(" writing to `{target}`"),
                spool::Place::Target(None) => String::new(),
                spool::Place::Position(index) => format!(" at position {index}"),
            };
            return all(DeliveryError::NoRoute(format!(
                "webhook `{}` no longer has destination `{}`{}{place}",
                self.key,
                parts.module,
                parts
                    .connection
                    .as_deref()
                    .map(|c| format!(" on connection `{c}`"))
                    .unwrap_or_default()
            )));
        };
        match tokio::time::timeout(
            self.webhook.timeout,
            destination.deliver_all(&self.key, deliveries, metrics),
        )
        .await
        {
            Ok(results) => results,
            Err(_) => all(DeliveryError::Timeout {
                timeout_ms: millis(self.webhook.timeout),
            }),
        }
    }

    /// Hands the delivery to every module (in order, or all at once for a parallel chain) within
    /// the webhook's timeout. `Ok` only when every module acknowledged.
    async fn deliver_all(
        &self,
        delivery: &Delivery,
        chosen: &Chosen,
        metrics: &Metrics,
    ) -> Result<(), DeliveryError> {
        let timeout = self.webhook.timeout;
        let all = async {
            match self.webhook.execution {
                Execution::Sequential => {
                    for (_, destination) in self.chosen(chosen) {
                        destination.deliver(&self.key, delivery, metrics).await?;
                    }
                }
                Execution::Parallel => {
                    try_join_all(
                        self.chosen(chosen)
                            .map(|(_, d)| d.deliver(&self.key, delivery, metrics)),
                    )
                    .await?;
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, all).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout {
                timeout_ms: millis(timeout),
            }),
        }
    }
}

/// Ends a hand-over's span with its result.
fn ended(span: &Span, result: &Result<(), DeliveryError>) {
    match result {
        Ok(()) => span.ok(),
        Err(error) => span.fail(error),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
