//! Connector mode, private side: this instance pulls a public channel (`CONNECTOR_URL`) and
//! delivers its messages with its own webhooks.
//!
//! - [`link`] holds the connection to the public side (WebSocket or long poll): each message is
//!   on this instance's disk, in the channel's inbox, before it is acknowledged; a number at or
//!   below the inbox's head is a copy and dropped. A message is this connector's once the
//!   public side confirms the acknowledgement that removed it; on each new link the public side
//!   says which of the unconfirmed ones its acknowledgements removed, and the inbox drops the
//!   rest (another connector's): the hand-over is exactly once, also between connectors. It
//!   reconnects with backoff (1 s to 60 s, jitter).
//! - [`drain`] hands the inbox's confirmed messages to the private entries, live: `<CONNECTOR_NAMESPACE
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
    let (consumer, named_now) = match settings.spool_dir() {
        Some(dir) => consumer_id(dir).map_err(ConnectorError::Settings)?,
        None => {
            return Err(ConnectorError::Settings(
                "connector mode needs SPOOL_DIR".into(),
            ))
        }
    };
    let inbox = parts.channels.channel(&inbox_name(&channel));
    let link = link::Link {
        url,
        token,
        consumer,
        // An inbox kept before connectors had names was acknowledged as a whole: its own.
        adopt: named_now,
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

/// The file that names this connector to the public side.
const CONSUMER_FILE: &str = "connector.id";

/// This connector's name (`SPOOL_DIR/connector.id`, made on first start and on disk before it
/// is used): the public side records under it what this connector's acknowledgements removed,
/// so that on a new link it can say which of the messages the inbox received unconfirmed are
/// this connector's. It goes with the inbox: a copy of the spool directory is the same
/// connector, a fresh directory a new one.
/// Returns it, and whether it was made now.
fn consumer_id(dir: &std::path::Path) -> Result<(String, bool), String> {
    let path = dir.join(CONSUMER_FILE);
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    match std::fs::read_to_string(&path) {
        Ok(id) => {
            let id = id.trim().to_owned();
            let valid = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid {
                Ok((id, false))
            } else {
                Err(format!(
                    "{} is not a connector id (1 to 64 letters, digits, - or _)",
                    path.display()
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            std::fs::create_dir_all(dir).map_err(failed)?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            let temporary = dir.join(format!("{CONSUMER_FILE}.new"));
            let mut file = std::fs::File::create(&temporary).map_err(failed)?;
            file.write_all(id.as_bytes()).map_err(failed)?;
            file.sync_all().map_err(failed)?;
            std::fs::rename(&temporary, &path).map_err(failed)?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(failed)?;
            Ok((id, true))
        }
        Err(e) => Err(failed(e)),
    }
}

/// The inbox of public channel `channel` in this instance's channels' file.
pub fn inbox_name(channel: &ConnectionName) -> String {
    format!("inbox:{channel}")
}
