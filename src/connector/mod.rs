//! Connector mode, private side: this instance pulls a public channel (`CONNECTOR_URL`) and
//! delivers its messages with its own webhooks.
//!
//! - [`link`] holds the connection to the public side (WebSocket or long poll): each message is
//!   on this instance's disk, in the channel's inbox, before it is acknowledged; a number at or
//!   below the inbox's head is a copy and dropped, so the hand-over is exactly once. It
//!   reconnects with backoff (1 s to 60 s, jitter) and resumes from the inbox's head.
//! - [`drain`] hands the inbox's messages to the private entries, live: `<CONNECTOR_NAMESPACE
//!   or the public namespace>/webhooks/<id>`, with their checks, their routing, their modules
//!   and their spool. A message whose entry does not exist yet waits (`no_route`).

pub mod drain;
pub mod link;

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    cache::ConfigCache,
    connect::Channels,
    keys::{ConnectionName, Namespace},
    metrics::Metrics,
    provider::ProviderStatus,
    settings::{ConnectorProtocol, Settings},
    spool::Spool,
};

/// Everything the connector needs from the application.
pub struct Parts {
    pub channels: Channels,
    pub cache: ConfigCache,
    pub status: watch::Receiver<ProviderStatus>,
    pub metrics: Arc<Metrics>,
    pub spool: Option<Spool>,
    pub handoff: Duration,
}

/// Why the connector cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Settings(String),
}

/// Starts the link and the drain when `CONNECTOR_URL` is set.
pub fn spawn(
    settings: &Settings,
    parts: Parts,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), ConnectorError> {
    let Some(url) = settings.connector_url.clone() else {
        return Ok(());
    };
    let channel = url
        .split_once("/connect/v1/")
        .map(|(_, channel)| channel.trim_end_matches('/').to_owned())
        .and_then(|c| ConnectionName::parse(&c).ok())
        .ok_or_else(|| ConnectorError::Settings("CONNECTOR_URL names no channel".into()))?;
    let namespace = settings
        .connector_namespace
        .as_deref()
        .map(Namespace::parse)
        .transpose()
        .map_err(|e| ConnectorError::Settings(format!("CONNECTOR_NAMESPACE: {e}")))?;
    let token = settings
        .connector_token()
        .map_err(ConnectorError::Settings)?;
    let tls = link::tls_config(settings).map_err(ConnectorError::Settings)?;
    let inbox = parts.channels.channel(&inbox_name(&channel));
    let link = link::Link {
        url,
        token,
        protocol: settings.connector_protocol,
        tls,
        channels: parts.channels.clone(),
        inbox: Arc::clone(&inbox),
    };
    tracing::info!(
        channel = %channel,
        protocol = match settings.connector_protocol {
            ConnectorProtocol::Websocket => "websocket",
            ConnectorProtocol::LongPoll => "long_poll",
        },
        have = inbox.counts().head,
        "Connector mode: pulling the public channel."
    );
    tasks.spawn(link.run(stop.clone()));
    let drain = drain::Drain {
        channels: parts.channels,
        inbox,
        cache: parts.cache,
        status: parts.status,
        metrics: parts.metrics,
        spool: parts.spool,
        handoff: parts.handoff,
        namespace,
    };
    tasks.spawn(drain.run(stop));
    Ok(())
}

/// The inbox of public channel `channel` in this instance's channels' file.
pub fn inbox_name(channel: &ConnectionName) -> String {
    format!("inbox:{channel}")
}
