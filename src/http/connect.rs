//! `/connect/v1/<channel>`: where a connector pulls a channel (connector mode, public side).
//!
//! - `GET /connect/v1/<channel>` upgrades to a WebSocket (subprotocol `switchyard.connect.v1`).
//!   The connector says `{"type":"hello","consumer":..,"have":N,"confirmed":C}`; the server
//!   answers `{"type":"owned","after":A,"upto":B}`, the range this consumer's acknowledgements
//!   removed last (of what it received unconfirmed it keeps only that). The server then sends
//!   every message after the channel's acknowledged sequence as a binary frame (see
//!   [`crate::connect::wire`]), within the credit the connector grants, removes what the
//!   connector acknowledges (`{"type":"ack","upto":N}`, cumulative, after its own fsync),
//!   recorded as that consumer's, and confirms it (`{"type":"acked","upto":N}`): only then does
//!   the connector deliver. One connector at a time is active (the channel's lease); another
//!   waits as standby and takes over when it goes.
//! - `GET /connect/v1/<channel>/messages?after=N&max=100&wait_ms=25000`: the same, long-polled
//!   (asking after N acknowledges up to N).
//!
//! The connector authenticates with `Authorization: Bearer <token>`, whose SHA-256 must be one
//! of the channel's `token_sha256`; a token in the query is refused. A removed hash closes its
//! token's streams within [`RECHECK`].

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{error::ApiError, AppState};
use crate::{
    config::Connection,
    connect::{wire, ChannelReport, Header},
    connections::{ChannelQueue, PoolError},
    keys::ConnectionName,
};

/// How often a stream checks that its token and channel are still configured.
const RECHECK: Duration = Duration::from_secs(1);
/// How often the server pings; a link silent for [`DEAD_AFTER`] is closed (and its lease freed).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A pong missed, and then some: with the 1 s recheck a standby takes over within 16 s, inside
/// twice the heartbeat.
const DEAD_AFTER: Duration = Duration::from_secs(15);
/// How long a connector has to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// The largest frame a connector may send (its frames are small JSON).
const MAX_INBOUND_FRAME: usize = 64 * 1024;
/// Messages sent at once without a grant, and the most a connector may have outstanding.
const DEFAULT_CREDIT: u64 = 256;
const MAX_CREDIT: u64 = 10_000;
/// Bytes read from the store per batch.
const READ_BYTES: usize = 8 << 20;
/// Long-poll bounds.
const MAX_POLL_MESSAGES: usize = 1000;
const DEFAULT_POLL_MESSAGES: usize = 100;
const MAX_WAIT_MS: u64 = 60_000;
const DEFAULT_WAIT_MS: u64 = 25_000;

/// Close codes (4000-4999 are the application's).
pub const CLOSE_BAD_TOKEN: u16 = 4401;
pub const CLOSE_UNKNOWN_CHANNEL: u16 = 4404;
pub const CLOSE_PROTOCOL: u16 = 4400;
/// The link's lease lapsed (a Redis-kept channel's, not renewed in time): reconnect.
pub const CLOSE_LEASE_LOST: u16 = 4409;
/// How long `/status` waits for a Redis-kept channel's numbers.
const REPORT_WITHIN: Duration = Duration::from_secs(1);

/// Query names that would carry a credential: refused, so that a token never lands in an
/// access log.
const TOKEN_PARAMS: &[&str] = &["token", "access_token", "auth", "authorization", "key"];

/// Every channel's report: the channels configured, and those of this instance's file that
/// still hold messages.
pub async fn reports(state: &AppState) -> Vec<ChannelReport> {
    let now = crate::clock::now_ms();
    let names = state.pool.names_of("connect");
    let configured = names.iter().map(|name| async move {
        let report = match state.pool.queue(name) {
            Ok(queue) => tokio::time::timeout(REPORT_WITHIN, queue.report(now))
                .await
                .map_err(|_| "its store did not answer within 1 s".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        report.unwrap_or_else(|error| ChannelReport::unavailable(name.as_str(), error))
    });
    let mut all = futures_util::future::join_all(configured).await;
    if let Some(channels) = state.pool.channels() {
        for channel in channels.all() {
            if !all.iter().any(|r| r.channel == channel.name) {
                all.push(channel.report(now));
            }
        }
    }
    all.sort_by(|a, b| a.channel.cmp(&b.channel));
    all
}

/// What stands between a request and a channel.
enum Refusal {
    Unauthorized,
    UnknownChannel,
    /// Configured, but its queue cannot be had (no `SPOOL_DIR`, a store that is not Redis).
    Unavailable(String),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthorized => ApiError::ConnectUnauthorized,
            Refusal::UnknownChannel => ApiError::UnknownChannel,
            Refusal::Unavailable(why) => ApiError::ChannelUnavailable(why),
        }
    }
}

/// The channel's queue, if `req`'s bearer token opens it.
fn open(
    state: &AppState,
    req: &HttpRequest,
    name: &ConnectionName,
) -> Result<ChannelQueue, Refusal> {
    let admits = match state.pool.config(name).as_deref() {
        Some(Connection::Connect(c)) => bearer(req).is_some_and(|token| c.admits(token)),
        _ => return Err(Refusal::UnknownChannel),
    };
    if !admits {
        return Err(Refusal::Unauthorized);
    }
    queue_of(state, name)
}

/// The queue of channel `name`.
fn queue_of(state: &AppState, name: &ConnectionName) -> Result<ChannelQueue, Refusal> {
    state.pool.queue(name).map_err(|error| match error {
        PoolError::Missing { .. } | PoolError::Mismatch { .. } => Refusal::UnknownChannel,
        other => Refusal::Unavailable(other.to_string()),
    })
}

/// Channel `name`'s dead letters back at its end (`POST /spool/replay {"channel"}`).
pub(super) async fn replay(state: &AppState, name: &str) -> Result<u64, ApiError> {
    let name = ConnectionName::parse(name).map_err(|_| ApiError::UnknownChannel)?;
    queue_of(state, &name)?
        .replay(crate::clock::now_ms())
        .await
        .map_err(|e| ApiError::ChannelUnavailable(e.to_string()))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The channel name of the path, and a refusal of a token in the query.
fn channel_name(req: &HttpRequest, raw: &str) -> Result<ConnectionName, ApiError> {
    if form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, _)| TOKEN_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
    {
        return Err(ApiError::TokenInQuery);
    }
    ConnectionName::parse(raw).map_err(|e| ApiError::InvalidChannel(e.to_string()))
}

/// Whether `token` still opens channel `name` (its hash listed, the channel configured).
fn still_open(state: &AppState, name: &ConnectionName, token: &str) -> Result<(), u16> {
    match state.pool.config(name).as_deref() {
        Some(Connection::Connect(c)) if c.admits(token) => Ok(()),
        Some(Connection::Connect(_)) => Err(CLOSE_BAD_TOKEN),
        _ => Err(CLOSE_UNKNOWN_CHANNEL),
    }
}

/// `GET /connect/v1/<channel>/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    after: Option<u64>,
    max: Option<usize>,
    wait_ms: Option<u64>,
}

/// One message of a long-poll answer: its header and its body in base64.
#[derive(Debug, Serialize)]
struct Polled {
    #[serde(flatten)]
    header: Header,
    body_base64: String,
}

pub async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = channel_name(&req, &path)?;
    let poll = web::Query::<Poll>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?
        .into_inner();
    let queue = open(&state, &req, &name)?;
    let unavailable = |e: crate::connect::ChannelError| ApiError::ChannelUnavailable(e.to_string());
    let after = match poll.after {
        Some(after) => after,
        None => queue.acked().await.map_err(unavailable)?,
    };
    let max = poll
        .max
        .unwrap_or(DEFAULT_POLL_MESSAGES)
        .clamp(1, MAX_POLL_MESSAGES);
    let wait = Duration::from_millis(poll.wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    queue.ack(after, None).await.map_err(unavailable)?;
    let _ = tokio::time::timeout(wait, queue.wait_past(after)).await;
    let read = queue
        .read(after, max, READ_BYTES)
        .await
        .map_err(unavailable)?;
    let mut messages = Vec::with_capacity(read.len());
    for stored in &read {
        let (header, body) = Header::parse(&stored.frame)
            .map_err(|e| ApiError::ChannelUnavailable(e.to_string()))?;
        messages.push(Polled {
            header,
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "channel": name.as_str(),
        "head": queue.head().await.map_err(unavailable)?,
        "acked": queue.acked().await.map_err(unavailable)?,
        "messages": messages,
    })))
}

/// What a connector says on the WebSocket.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Said {
    Hello {
        /// The highest sequence in the connector's inbox (for the log).
        have: u64,
        /// Who the connector is: its acknowledgements are recorded under this name.
        consumer: String,
        /// The highest sequence it knows it owns (for the log).
        #[serde(default)]
        confirmed: Option<u64>,
        #[serde(default)]
        credit: Option<u64>,
    },
    Ack {
        upto: u64,
    },
    Credit {
        messages: u64,
    },
}

/// `GET /connect/v1/<channel>`: the WebSocket.
pub async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = channel_name(&req, &path)?;
    let opened = open(&state, &req, &name);
    let token = bearer(&req).unwrap_or_default().to_owned();
    let (response, session, stream) =
        actix_ws::handle_with_protocols(&req, body, &[wire::SUBPROTOCOL])
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let stream = stream.max_frame_size(MAX_INBOUND_FRAME);
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    actix_web::rt::spawn(async move {
        let queue = match opened {
            Ok(queue) => queue,
            Err(refusal) => {
                let (code, why) = match refusal {
                    Refusal::Unauthorized => (CLOSE_BAD_TOKEN, "bad token"),
                    Refusal::UnknownChannel => (CLOSE_UNKNOWN_CHANNEL, "unknown channel"),
                    Refusal::Unavailable(_) => (1011, "channel store unavailable"),
                };
                let _ = session.close(Some(close(code, why))).await;
                return;
            }
        };
        let link = Link {
            state,
            name,
            token,
            queue,
            holder: format!("{peer}#{}", uuid::Uuid::new_v4().simple()),
        };
        link.serve(session, stream).await;
    });
    Ok(response)
}

/// A connector's name: 1 to 64 letters, digits, `-` or `_` (it is a key in the store).
fn valid_consumer(consumer: &str) -> bool {
    (1..=64).contains(&consumer.len())
        && consumer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn close(code: u16, why: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::Other(code),
        description: Some(why.to_owned()),
    }
}

/// One connector's WebSocket.
struct Link {
    state: web::Data<AppState>,
    name: ConnectionName,
    token: String,
    queue: ChannelQueue,
    holder: String,
}

impl Link {
    async fn serve(self, mut session: actix_ws::Session, mut stream: actix_ws::MessageStream) {
        let ended = self.run(&mut session, &mut stream).await;
        self.queue.release(&self.holder).await;
        let reason = match ended {
            Ended::Gone => return,
            Ended::Close(code, why) => close(code, why),
        };
        tracing::info!(channel = %self.name, holder = %self.holder, code = u16::from(reason.code), "Connector link closed.");
        let _ = session.close(Some(reason)).await;
    }

    /// Takes the lease if it is free, keeps it if this link has it; `false` when another
    /// link has it, or the store does not answer.
    async fn lease(&self) -> bool {
        self.queue
            .lease(&self.holder)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(channel = %self.name, %error, "Channel lease not taken.");
                false
            })
    }

    async fn run(
        &self,
        session: &mut actix_ws::Session,
        stream: &mut actix_ws::MessageStream,
    ) -> Ended {
        // Hello first.
        let hello = tokio::time::timeout(HELLO_WITHIN, stream.recv()).await;
        let (have, confirmed, consumer, mut credit) = match hello {
            Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<Said>(&text) {
                Ok(Said::Hello {
                    have,
                    consumer,
                    confirmed,
                    credit,
                }) if valid_consumer(&consumer) => (
                    have,
                    confirmed.unwrap_or(have),
                    consumer,
                    credit.unwrap_or(DEFAULT_CREDIT).min(MAX_CREDIT),
                ),
                _ => return Ended::Close(CLOSE_PROTOCOL, "expected hello"),
            },
            Ok(Some(Err(actix_ws::ProtocolError::Overflow))) => {
                return Ended::Close(1009, "frame too large")
            }
            Ok(None | Some(Err(_))) => return Ended::Gone,
            _ => return Ended::Close(CLOSE_PROTOCOL, "expected hello"),
        };
        // What of its inbox the connector owns: the range its acknowledgements removed last.
        // The rest of what it received unconfirmed went (or goes) to another connector.
        let Ok(owned) = self.queue.owned(&consumer).await else {
            return Ended::Close(1011, "channel store unavailable");
        };
        let (after, upto) = owned.unwrap_or((0, 0));
        let owned = serde_json::json!({"type": "owned", "after": after, "upto": upto});
        if session.text(owned.to_string()).await.is_err() {
            return Ended::Gone;
        }
        tracing::info!(channel = %self.name, holder = %self.holder, %consumer, have, confirmed, owned_after = after, owned_upto = upto, "Connector said hello.");
        let mut ticks = tokio::time::interval(RECHECK);
        let mut last_heard = tokio::time::Instant::now();
        let mut last_ping = tokio::time::Instant::now();
        // Standby until the lease is free.
        if !self.lease().await {
            if session.text(r#"{"type":"standby"}"#).await.is_err() {
                return Ended::Gone;
            }
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    said = stream.recv() => match said {
                        Some(Ok(Message::Pong(_) | Message::Ping(_) | Message::Text(_))) => last_heard = tokio::time::Instant::now(),
                        Some(Ok(Message::Close(_))) | None => return Ended::Gone,
                        Some(Err(actix_ws::ProtocolError::Overflow)) => return Ended::Close(1009, "frame too large"),
                        Some(Err(_)) => return Ended::Gone,
                        Some(Ok(_)) => {}
                    },
                }
                if let Err(code) = still_open(&self.state, &self.name, &self.token) {
                    return Ended::Close(code, "token or channel removed");
                }
                if let Some(ended) = self.heartbeat(session, &mut last_ping, last_heard).await {
                    return ended;
                }
                if self.lease().await {
                    break;
                }
            }
        }
        if session.text(r#"{"type":"active"}"#).await.is_err() {
            return Ended::Gone;
        }
        // Everything after the channel's acknowledged sequence: what the connector received
        // and did not get acknowledged is sent again (its inbox dropped it, told by `owned`).
        let Ok(acked_before) = self.queue.acked().await else {
            return Ended::Close(1011, "channel store unavailable");
        };
        let mut sent = acked_before;
        let mut acked = sent;
        loop {
            // Send what is there, within the credit.
            let window = (acked + credit).saturating_sub(sent);
            if window > 0 {
                let max = usize::try_from(window.min(1000)).unwrap_or(1000);
                let Ok(read) = self.queue.read(sent, max, READ_BYTES).await else {
                    return Ended::Close(1011, "channel store unavailable");
                };
                if !read.is_empty() {
                    for stored in read {
                        if session.binary(stored.frame).await.is_err() {
                            return Ended::Gone;
                        }
                        sent = stored.seq;
                    }
                    continue;
                }
            }
            let wait_for_more = async {
                if window > 0 {
                    self.queue.wait_past(sent).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = wait_for_more => {}
                _ = ticks.tick() => {
                    if let Err(code) = still_open(&self.state, &self.name, &self.token) {
                        return Ended::Close(code, "token or channel removed");
                    }
                    if let Some(ended) = self.heartbeat(session, &mut last_ping, last_heard).await {
                        return ended;
                    }
                    // A Redis-kept lease lapses unless renewed.
                    if !self.lease().await {
                        return Ended::Close(CLOSE_LEASE_LOST, "lease lost");
                    }
                }
                said = stream.recv() => {
                    last_heard = tokio::time::Instant::now();
                    match said {
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<Said>(&text) {
                            Ok(Said::Ack { upto }) => {
                                let upto = upto.min(sent);
                                if upto > acked {
                                    if self.queue.ack(upto, Some(&consumer)).await.is_err() {
                                        return Ended::Close(1011, "channel store unavailable");
                                    }
                                    acked = upto;
                                    // Now the connector's own: it may deliver them.
                                    let confirmed = serde_json::json!({"type": "acked", "upto": upto});
                                    if session.text(confirmed.to_string()).await.is_err() {
                                        return Ended::Gone;
                                    }
                                }
                            }
                            Ok(Said::Credit { messages }) => credit = messages.clamp(1, MAX_CREDIT),
                            Ok(Said::Hello { .. }) | Err(_) => {
                                return Ended::Close(CLOSE_PROTOCOL, "unexpected message");
                            }
                        },
                        Some(Ok(Message::Ping(bytes))) => {
                            if session.pong(&bytes).await.is_err() {
                                return Ended::Gone;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => return Ended::Gone,
                        Some(Err(actix_ws::ProtocolError::Overflow)) => {
                            return Ended::Close(1009, "frame too large");
                        }
                        Some(Err(_)) => return Ended::Gone,
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    }

    /// Pings every [`HEARTBEAT`]; ends a link silent for [`DEAD_AFTER`].
    async fn heartbeat(
        &self,
        session: &mut actix_ws::Session,
        last_ping: &mut tokio::time::Instant,
        last_heard: tokio::time::Instant,
    ) -> Option<Ended> {
        if last_heard.elapsed() > DEAD_AFTER {
            return Some(Ended::Close(1001, "no pong"));
        }
        if last_ping.elapsed() >= HEARTBEAT {
            *last_ping = tokio::time::Instant::now();
            if session.ping(b"").await.is_err() {
                return Some(Ended::Gone);
            }
        }
        None
    }
}

/// How a link ended.
enum Ended {
    /// The connector went (closed, or the connection broke).
    Gone,
    /// The server closes it, with this code and reason.
    Close(u16, &'static str),
}
