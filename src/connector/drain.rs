//! Hands the inbox's messages to this instance's own webhooks, live: the private entry named by
//! the message's webhook id (in `CONNECTOR_NAMESPACE`, or the public namespace) checks it (its
//! signature, with the time the public side received it), routes it and delivers it through
//! its modules and spool. A message whose entry does not exist yet is parked (`no_route`) and
//! handed over once the entry appears; one its checks refuse becomes a dead letter.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures_util::{stream::FuturesOrdered, StreamExt as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cache::ConfigCache,
    condition::Request,
    connect::{store::Settled, Channel, Channels, Header, Stored},
    dispatch::{Chosen, Route, Routing, SpoolPath},
    keys::{Namespace, WebhookId, WebhookKey},
    metrics::Metrics,
    modules::{is_forwardable, Delivery},
    provider::{backoff::ReconnectBackoff, ProviderStatus},
    spool::Spool,
    verify::Inbound,
};

/// Messages read from the inbox at once (they are handed over one at a time, in order).
const BATCH: usize = 256;
/// Settlements committed in the background at most (the copies a crash may cause).
const SETTLING: usize = 32;
/// How often parked messages are tried again.
const RECHECK_PARKED: Duration = Duration::from_secs(1);
/// Bytes read from the inbox at once.
const READ_BYTES: usize = 8 << 20;

/// The inbox's consumer.
pub struct Drain {
    pub channels: Channels,
    pub inbox: Arc<Channel>,
    pub cache: ConfigCache,
    pub status: watch::Receiver<ProviderStatus>,
    pub metrics: Arc<Metrics>,
    pub spool: Option<Spool>,
    pub handoff: Duration,
    pub namespace: Option<Namespace>,
}

/// What a message came to.
enum Handed {
    /// Delivered, stored in the spool, or filtered by the private entry.
    Done,
    /// No private entry for it yet.
    NoRoute,
    /// The private entry's checks refused it.
    Refused,
}

impl Drain {
    pub async fn run(mut self, stop: CancellationToken) {
        // Before the config is loaded every message would look unroutable.
        let loaded = self.status.wait_for(|s| s.loaded);
        tokio::select! {
            () = stop.cancelled() => return,
            loaded = loaded => if loaded.is_err() { return },
        }
        // One message at a time, in the channel's order; read from the inbox in batches.
        let mut cursor = 0;
        let mut next: VecDeque<Stored> = VecDeque::new();
        let mut parked_at = tokio::time::Instant::now();
        let mut settling = FuturesOrdered::new();
        loop {
            // Only what the public side confirmed this connector's (acknowledged).
            let confirmed = self.inbox.counts().acked;
            if next.is_empty() && confirmed > cursor {
                let (channels, inbox) = (self.channels.clone(), Arc::clone(&self.inbox));
                let read = tokio::task::spawn_blocking(move || {
                    channels.read(&inbox, cursor, BATCH, READ_BYTES)
                })
                .await;
                match read {
                    Ok(Ok(read)) => {
                        next.extend(read.into_iter().take_while(|m| m.seq <= confirmed));
                    }
                    Ok(Err(error)) => tracing::error!(%error, "Connector inbox unreadable."),
                    Err(error) => tracing::error!(%error, "Connector inbox read failed."),
                }
            }
            if let Some(stored) = next.pop_front() {
                cursor = stored.seq;
                let to = tokio::select! {
                    () = stop.cancelled() => return,
                    to = self.outcome(&stored) => to,
                };
                // The next message is handed over while this one's settlement is committed;
                // a crash hands over again at most the settlements still in flight.
                match self
                    .channels
                    .submit_settle(Arc::clone(&self.inbox), stored.seq, to)
                    .await
                {
                    Ok(settled) => settling.push_back(settled),
                    Err(error) => {
                        tracing::error!(%error, "Connector inbox could not settle a message.")
                    }
                }
                while settling.len() > SETTLING {
                    settled(settling.next().await);
                }
                continue;
            }
            while let Some(result) = settling.next().await {
                settled(Some(result));
            }
            if parked_at.elapsed() >= RECHECK_PARKED {
                self.unpark().await;
                parked_at = tokio::time::Instant::now();
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.inbox.wait_acked_past(cursor) => {}
                () = tokio::time::sleep(RECHECK_PARKED) => {}
            }
        }
    }

    /// Hands one message over; what its inbox entry becomes.
    async fn outcome(&self, stored: &Stored) -> Settled {
        match self.hand(stored).await {
            Handed::Done => Settled::Handed,
            Handed::NoRoute => Settled::Parked,
            Handed::Refused => Settled::Dead,
        }
    }

    /// Tries the parked messages again; those whose entry exists now are handed over.
    async fn unpark(&self) {
        if self.inbox.counts().parked == 0 {
            return;
        }
        let (channels, inbox) = (self.channels.clone(), Arc::clone(&self.inbox));
        let parked = tokio::task::spawn_blocking(move || channels.parked(&inbox, 1000)).await;
        let Ok(Ok(parked)) = parked else {
            return;
        };
        for stored in parked {
            let to = match self.hand(&stored).await {
                Handed::NoRoute => continue,
                Handed::Done | Handed::Refused => Settled::Unparked,
            };
            let _ = self
                .channels
                .settle(Arc::clone(&self.inbox), stored.seq, to)
                .await;
        }
    }

    /// The private entry for a message, its checks and routing: what to deliver where (`None`:
    /// filtered), or why not.
    fn prepare(&self, stored: &Stored) -> Result<Option<(Arc<Route>, Chosen, Delivery)>, Handed> {
        let Ok((header, body)) = Header::parse(&stored.frame) else {
            tracing::error!(seq = stored.seq, "Connector inbox holds a damaged message.");
            return Err(Handed::Refused);
        };
        let namespace = match &self.namespace {
            Some(namespace) => Ok(namespace.clone()),
            None => Namespace::parse(&header.namespace),
        };
        let (Ok(namespace), Ok(id)) = (namespace, WebhookId::parse(&header.webhook)) else {
            return Err(Handed::NoRoute);
        };
        let key = WebhookKey::new(namespace, id);
        let Some(route) = self.cache.webhook(&key) else {
            tracing::debug!(webhook = %key, seq = header.seq, "No route for a connector message yet.");
            return Err(Handed::NoRoute);
        };
        let lookup = |name: &str| {
            header
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let received_at = humantime::parse_rfc3339(&header.received_at)
            .unwrap_or_else(|_| std::time::SystemTime::now());
        // The sender's signature, as of the time the public side received the request.
        let no_url = || None;
        let inbound = Inbound {
            headers: &lookup,
            query: None,
            client_ip: None,
            now: received_at,
            url: &no_url,
        };
        if let Err(error) = route.webhook.checks.check_signature(&inbound, body) {
            tracing::warn!(
                webhook = %key,
                request_id = %header.request_id,
                seq = header.seq,
                reason_class = error.class(),
                "Connector message refused by the private entry's checks; kept as a dead letter."
            );
            return Err(Handed::Refused);
        }
        let chosen = match route.route(&Request::new(&lookup, None, body)) {
            Routing::Filtered => {
                self.metrics.filtered(&key);
                return Ok(None);
            }
            Routing::To(chosen) => chosen,
        };
        let delivery = Delivery {
            namespace: key.namespace.clone(),
            webhook: key.id.clone(),
            request_id: header.request_id.clone(),
            received_at,
            headers: header
                .headers
                .iter()
                .filter(|(name, _)| is_forwardable(&name.to_ascii_lowercase()))
                .cloned()
                .collect(),
            body: bytes::Bytes::copy_from_slice(body),
            json: route.data_type() == crate::webhook::DataType::Json,
            trace: None,
            relayed: if route.relays() {
                header.headers.clone()
            } else {
                Vec::new()
            },
        };
        Ok(Some((route, chosen, delivery)))
    }

    /// The private entry's checks, routing and delivery for one message. Delivery is retried
    /// (with backoff) until a destination or the spool takes it.
    async fn hand(&self, stored: &Stored) -> Handed {
        let (route, chosen, delivery) = match self.prepare(stored) {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return Handed::Done,
            Err(handed) => return handed,
        };
        let key = &route.key;
        let mut backoff = ReconnectBackoff::new();
        loop {
            let spool = self.spool.as_ref().map(|spool| SpoolPath {
                spool,
                handoff: self.handoff,
            });
            match route
                .dispatch(&delivery, &chosen, &self.metrics, spool)
                .await
            {
                Ok(_) => return Handed::Done,
                Err(error) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(60));
                    tracing::warn!(
                        webhook = %key,
                        request_id = %delivery.request_id,
                        %error,
                        "Connector message not taken; trying again."
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Logs a settlement that failed (the message is then handed over again after a restart).
fn settled(result: Option<Result<(), crate::connect::ChannelError>>) {
    if let Some(Err(error)) = result {
        tracing::error!(%error, "Connector inbox could not settle a message.");
    }
}
