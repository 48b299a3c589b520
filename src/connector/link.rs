//! The connector's link to the public side: a WebSocket (or a long poll), each message made
//! durable in the inbox before it is acknowledged, resumed from the inbox's head after any
//! disconnect.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{stream::FuturesOrdered, SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};
use tokio_util::sync::CancellationToken;

use crate::{
    connect::{wire, Channel, ChannelError, Channels, Header},
    provider::backoff::ReconnectBackoff,
    settings::{ConnectorProtocol, Settings},
};

/// Messages the public side may send before an acknowledgement.
const CREDIT: u64 = 1000;
/// A link that hears nothing (not even a ping) for this long is given up and reconnected.
const SILENT_FOR: Duration = Duration::from_secs(30);
/// Acknowledge at least every this many messages, and whenever the inbox caught up.
const ACK_EVERY: u64 = 256;
/// A long poll's size and wait.
const POLL_MAX: usize = 500;
const POLL_WAIT_MS: u64 = 25_000;
/// A session that lasted this long was healthy: the next reconnect starts from 1 s again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the public side closed the link ({code}: {reason})")]
    Closed { code: u16, reason: String },
    #[error("the link went silent for {}s", SILENT_FOR.as_secs())]
    Silent,
    #[error("the link broke: {0}")]
    Broken(String),
    #[error("the public side sent something that is not a message: {0}")]
    Protocol(String),
    #[error(transparent)]
    Inbox(#[from] ChannelError),
}

/// The link's settings and the inbox it fills.
pub struct Link {
    pub url: String,
    pub token: String,
    /// This connector's name to the public side (`SPOOL_DIR/connector.id`).
    pub consumer: String,
    /// The name was made at this start: what the inbox holds is confirmed before the first
    /// link (an inbox from before names: everything in it was acknowledged).
    pub adopt: bool,
    pub protocol: ConnectorProtocol,
    pub tls: Arc<rustls::ClientConfig>,
    pub channels: Channels,
    pub inbox: Arc<Channel>,
}

/// The TLS client config for `wss://`: the system's roots, CONNECTOR_CA_FILE, and the client
/// certificate when one is set.
pub fn tls_config(settings: &Settings) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.connector_ca_file {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| format!("CONNECTOR_CA_FILE {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "CONNECTOR_CA_FILE {} holds no PEM certificate",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("CONNECTOR_CA_FILE {}: {e}", path.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match (&settings.connector_cert_file, &settings.connector_key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect)
                .map_err(|e| format!("CONNECTOR_CERT_FILE {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("CONNECTOR_KEY_FILE {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("CONNECTOR_CERT_FILE: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

impl Link {
    /// Runs sessions until `stop`, reconnecting with backoff.
    pub async fn run(self, stop: CancellationToken) {
        if self.adopt {
            let head = self.inbox.counts().head;
            let adopted = async {
                self.channels
                    .submit_confirm(Arc::clone(&self.inbox), head)
                    .await?
                    .await
            };
            if let Err(error) = adopted.await {
                tracing::error!(%error, "Connector inbox could not be adopted; not pulling.");
                return;
            }
        }
        let mut backoff = ReconnectBackoff::new();
        loop {
            let started = tokio::time::Instant::now();
            let session = async {
                match self.protocol {
                    ConnectorProtocol::Websocket => self.websocket_session().await,
                    ConnectorProtocol::LongPoll => self.long_poll_session().await,
                }
            };
            let Err(error) = tokio::select! {
                () = stop.cancelled() => return,
                ended = session => ended,
            };
            if started.elapsed() > HEALTHY_AFTER {
                backoff = ReconnectBackoff::new();
            }
            let wait = backoff.next().unwrap_or(Duration::from_secs(60));
            tracing::warn!(
                %error,
                have = self.inbox.counts().head,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Connector link down; reconnecting."
            );
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Hands one message to the inbox's writer, in the order messages arrive (its number is
    /// the public side's); the future resolves to the number once it is on disk (or already
    /// there).
    async fn keep(
        &self,
        frame: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<u64, LinkError>>, LinkError> {
        let (header, _) = Header::parse(&frame).map_err(|e| LinkError::Protocol(e.to_string()))?;
        let received_ms =
            humantime::parse_rfc3339(&header.received_at).map_or(0, crate::clock::epoch_ms);
        let stored = self
            .channels
            .submit_receive(Arc::clone(&self.inbox), header.seq, received_ms, frame)
            .await?;
        let seq = header.seq;
        Ok(async move {
            stored.await?;
            Ok(seq)
        })
    }

    /// One WebSocket session; runs until it fails.
    async fn websocket_session(&self) -> Result<std::convert::Infallible, LinkError> {
        let url = self
            .url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let headers = request.headers_mut();
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| LinkError::Connect("the token is not a header value".into()))?;
        headers.insert("authorization", bearer);
        headers.insert(
            "sec-websocket-protocol",
            wire::SUBPROTOCOL
                .parse()
                .map_err(|_| LinkError::Connect("subprotocol".into()))?,
        );
        let connector = tokio_tungstenite::Connector::Rustls(Arc::clone(&self.tls));
        let (mut socket, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector)),
        )
        .await
        .map_err(|_| LinkError::Connect("no answer within 30 s".into()))?
        .map_err(|e| LinkError::Connect(e.to_string()))?;
        let counts = self.inbox.counts();
        let have = counts.head;
        let hello = serde_json::json!({"type": "hello", "have": have, "confirmed": counts.acked,
                                       "consumer": self.consumer, "credit": CREDIT});
        socket
            .send(Message::Text(hello.to_string().into()))
            .await
            .map_err(|e| LinkError::Broken(e.to_string()))?;
        tracing::info!(have, "Connector link up.");
        let mut pending = FuturesOrdered::new();
        let mut durable = have;
        let mut acked = have;
        loop {
            let heard = tokio::select! {
                heard = tokio::time::timeout(SILENT_FOR, socket.next()) => heard,
                kept = pending.next(), if !pending.is_empty() => {
                    let kept: Result<u64, LinkError> = match kept {
                        Some(kept) => kept,
                        None => continue,
                    };
                    durable = durable.max(kept?);
                    if pending.is_empty() || durable >= acked + ACK_EVERY {
                        let ack = serde_json::json!({"type": "ack", "upto": durable});
                        socket
                            .send(Message::Text(ack.to_string().into()))
                            .await
                            .map_err(|e| LinkError::Broken(e.to_string()))?;
                        acked = durable;
                    }
                    continue;
                }
            };
            let message = match heard {
                Err(_) => return Err(LinkError::Silent),
                Ok(None) => return Err(LinkError::Broken("the connection ended".into())),
                Ok(Some(Err(e))) => return Err(LinkError::Broken(e.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Binary(frame) => pending.push_back(self.keep(frame).await?),
                Message::Text(text) => {
                    let said: serde_json::Value = serde_json::from_str(text.as_str())
                        .map_err(|e| LinkError::Protocol(e.to_string()))?;
                    let number = |name: &str| said[name].as_u64().unwrap_or(0);
                    match said["type"].as_str() {
                        // Sent before any message: which of what the inbox received unconfirmed
                        // is this connector's (the rest went, or goes, to another one).
                        Some("owned") => {
                            let head = self
                                .channels
                                .resolve(Arc::clone(&self.inbox), number("after"), number("upto"))
                                .await?;
                            if head < have {
                                tracing::warn!(
                                    dropped_after = head,
                                    upto = have,
                                    "Connector inbox: messages received but never confirmed are \
                                     another connector's; dropped."
                                );
                            }
                            durable = head;
                            acked = head;
                        }
                        // Acknowledged by the public side: this connector's to deliver.
                        Some("acked") => {
                            drop(
                                self.channels
                                    .submit_confirm(Arc::clone(&self.inbox), number("upto"))
                                    .await?,
                            );
                        }
                        _ => tracing::info!(state = %text.as_str(), "Connector link state."),
                    }
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Err(LinkError::Closed { code, reason });
                }
                // Pings are answered by the library as the socket is read.
                _ => {}
            }
        }
    }

    /// Long polls until one fails; each asks after the inbox's head (which acknowledges it).
    async fn long_poll_session(&self) -> Result<std::convert::Infallible, LinkError> {
        let base = self
            .url
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*self.tls).clone())
            .timeout(Duration::from_millis(POLL_WAIT_MS) + Duration::from_secs(30))
            .build()
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        // Asking after N acknowledges N, and the answer confirms it: after messages arrive the
        // next poll does not wait, so that they are confirmed (and delivered) at once.
        let mut wait_ms = POLL_WAIT_MS;
        loop {
            let after = self.inbox.counts().head;
            let url = format!(
                "{}/messages?after={after}&max={POLL_MAX}&wait_ms={wait_ms}",
                base.trim_end_matches('/')
            );
            let response = client
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| LinkError::Broken(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| LinkError::Broken(e.to_string()))?;
            let answer: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| LinkError::Protocol(e.to_string()))?;
            if !status.is_success() {
                return Err(LinkError::Closed {
                    code: status.as_u16(),
                    reason: answer["error"].as_str().unwrap_or_default().to_owned(),
                });
            }
            let messages = answer["messages"].as_array().cloned().unwrap_or_default();
            wait_ms = if messages.is_empty() { POLL_WAIT_MS } else { 0 };
            let mut kept = FuturesOrdered::new();
            for message in messages {
                let body = message["body_base64"]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .ok_or_else(|| LinkError::Protocol("a message without its body".into()))?;
                let header: Header = serde_json::from_value(message)
                    .map_err(|e| LinkError::Protocol(e.to_string()))?;
                kept.push_back(self.keep(Bytes::from(header.frame(&body))).await?);
            }
            while let Some(result) = kept.next().await {
                result?;
            }
            // Answered: the public side acknowledged everything up to `after`.
            drop(
                self.channels
                    .submit_confirm(Arc::clone(&self.inbox), after)
                    .await?,
            );
        }
    }
}
