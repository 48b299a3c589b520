//! A channel's queue (connector mode, public side), wherever it is kept: in this instance's
//! channels file (`SPOOL_DIR/channels.redb`), or in a Redis stream that every instance of a
//! fleet shares (`"store": {"connection": "<redis>"}`). Intake, the connector's link and the
//! long poll see one interface; only here do the two differ.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::redis::{ChannelKeys, RedisClient, CHANNEL_STEP};
use crate::connect::{
    store::Lease, Channel, ChannelError, ChannelReport, Channels, Header, Stored,
};

/// How long a Redis-kept lease lasts without renewal: a public instance that dies holding it
/// frees it within this, well inside twice the link's heartbeat.
pub const SHARED_LEASE: Duration = Duration::from_secs(6);
/// How often a reader of a Redis-kept channel looks for messages other instances took.
const SHARED_POLL: Duration = Duration::from_millis(50);
/// How long a Redis's answer about its fsync setting is believed.
const DURABILITY_RECHECK: Duration = Duration::from_secs(10);

/// A channel's queue; cloning is cheap.
#[derive(Clone, Debug)]
pub enum ChannelQueue {
    /// In this instance's channels file.
    Local {
        channels: Channels,
        channel: Arc<Channel>,
    },
    /// In Redis, shared by the fleet.
    Shared(Arc<Shared>),
}

/// A Redis-kept channel.
pub struct Shared {
    name: String,
    /// The `redis` connection that keeps it.
    store: String,
    redis: RedisClient,
    keys: ChannelKeys,
    /// Whether Redis fsyncs every write, as last asked, and when.
    durable: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("store", &self.store)
            .finish()
    }
}

impl Shared {
    pub fn new(name: &str, store: &str, redis: RedisClient) -> Self {
        // One hash tag for all of a channel's keys: one cluster slot.
        let base = format!("switchyard:channel:{{{name}}}");
        Self {
            name: name.to_owned(),
            store: store.to_owned(),
            redis,
            keys: ChannelKeys {
                messages: format!("{base}:messages"),
                meta: format!("{base}:meta"),
                dead: format!("{base}:dead"),
                lease: format!("{base}:lease"),
            },
            durable: Mutex::new(None),
        }
    }

    /// Refuses to take messages into a Redis that may lose them: one that does not fsync
    /// every write before answering. A Redis that does not say (managed services refuse
    /// `CONFIG`) is trusted, with a warning.
    async fn check_durable(&self) -> Result<(), ChannelError> {
        let known = self
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DURABILITY_RECHECK)
            .map(|(_, known)| known.clone());
        let verdict = match known {
            Some(known) => known,
            None => {
                let verdict = match self.redis.fsyncs_every_write().await.map_err(store)? {
                    Some(true) => Ok(()),
                    Some(false) => Err(format!(
                        "the Redis of connection `{}` does not fsync every write (it needs \
                         `appendonly yes` and `appendfsync always`): channel `{}` takes \
                         nothing it could lose",
                        self.store, self.name
                    )),
                    None => {
                        tracing::warn!(
                            channel = %self.name,
                            connection = %self.store,
                            "Redis does not say whether it fsyncs every write (CONFIG refused); \
                             the channel trusts it does (appendfsync always)."
                        );
                        Ok(())
                    }
                };
                *self
                    .durable
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), verdict.clone()));
                verdict
            }
        };
        verdict.map_err(ChannelError::Store)
    }
}

fn store(error: String) -> ChannelError {
    ChannelError::Store(error)
}

impl ChannelQueue {
    pub fn name(&self) -> &str {
        match self {
            ChannelQueue::Local { channel, .. } => &channel.name,
            ChannelQueue::Shared(shared) => &shared.name,
        }
    }

    /// Stores a message; returns its sequence number once it is durable.
    pub async fn append(
        &self,
        max_bytes: u64,
        received_ms: u64,
        header: Header,
        body: Bytes,
    ) -> Result<u64, ChannelError> {
        match self {
            ChannelQueue::Local { channels, channel } => {
                channels
                    .append(Arc::clone(channel), max_bytes, received_ms, header, body)
                    .await
            }
            ChannelQueue::Shared(shared) => {
                shared.check_durable().await?;
                let frame = header.frame(&body);
                shared
                    .redis
                    .channel_append(&shared.keys, max_bytes, received_ms, &frame)
                    .await
                    .map_err(store)?
                    .ok_or_else(|| ChannelError::Full {
                        channel: shared.name.clone(),
                        max: max_bytes,
                    })
            }
        }
    }

    /// Acknowledges every message up to `upto` (removed), for `consumer` when the connector
    /// said who it is: what it removed is recorded as that connector's own.
    pub async fn ack(&self, upto: u64, consumer: Option<&str>) -> Result<(), ChannelError> {
        match self {
            ChannelQueue::Local { channels, channel } => {
                channels.ack(Arc::clone(channel), upto, consumer).await
            }
            ChannelQueue::Shared(shared) => {
                let mut acked = 0;
                loop {
                    let now = shared
                        .redis
                        .channel_ack(&shared.keys, upto, consumer.unwrap_or_default())
                        .await
                        .map_err(store)?;
                    if now >= upto || now == acked {
                        return Ok(());
                    }
                    acked = now;
                }
            }
        }
    }

    /// The range (after, upto] that `consumer`'s acknowledgements removed last.
    pub async fn owned(&self, consumer: &str) -> Result<Option<(u64, u64)>, ChannelError> {
        match self {
            ChannelQueue::Local { channels, channel } => {
                let (channels, channel) = (channels.clone(), Arc::clone(channel));
                let consumer = consumer.to_owned();
                tokio::task::spawn_blocking(move || channels.owned(&channel, &consumer))
                    .await
                    .map_err(|e| ChannelError::Store(e.to_string()))?
            }
            ChannelQueue::Shared(shared) => shared
                .redis
                .channel_owned(&shared.keys, consumer)
                .await
                .map_err(store),
        }
    }

    /// The highest sequence acknowledged.
    pub async fn acked(&self) -> Result<u64, ChannelError> {
        match self {
            ChannelQueue::Local { channel, .. } => Ok(channel.counts().acked),
            ChannelQueue::Shared(shared) => shared
                .redis
                .channel_number(&shared.keys, "acked")
                .await
                .map_err(store),
        }
    }

    /// The highest sequence given.
    pub async fn head(&self) -> Result<u64, ChannelError> {
        match self {
            ChannelQueue::Local { channel, .. } => Ok(channel.counts().head),
            ChannelQueue::Shared(shared) => shared
                .redis
                .channel_number(&shared.keys, "head")
                .await
                .map_err(store),
        }
    }

    /// Waits until the head passes `after`. A Redis-kept channel is asked every
    /// [`SHARED_POLL`] (other instances append to it); an unreachable Redis keeps it waiting.
    pub async fn wait_past(&self, after: u64) {
        match self {
            ChannelQueue::Local { channel, .. } => channel.wait_past(after).await,
            ChannelQueue::Shared(_) => loop {
                if self.head().await.is_ok_and(|head| head > after) {
                    return;
                }
                tokio::time::sleep(SHARED_POLL).await;
            },
        }
    }

    /// Up to `max` messages after `after` (at least one, whatever its size, then no more than
    /// `max_bytes` together).
    pub async fn read(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, ChannelError> {
        match self {
            ChannelQueue::Local { channels, channel } => {
                let (channels, channel) = (channels.clone(), Arc::clone(channel));
                tokio::task::spawn_blocking(move || channels.read(&channel, after, max, max_bytes))
                    .await
                    .map_err(|e| ChannelError::Store(e.to_string()))?
            }
            ChannelQueue::Shared(shared) => {
                let entries = shared
                    .redis
                    .channel_read(&shared.keys, after, max)
                    .await
                    .map_err(store)?;
                let mut read = Vec::with_capacity(entries.len());
                let mut bytes = 0;
                for entry in entries {
                    if !read.is_empty() && bytes + entry.frame.len() > max_bytes {
                        break;
                    }
                    bytes += entry.frame.len();
                    // Stored with sequence 0 (the number is given inside Redis): the
                    // message's header carries the entry's.
                    let (mut header, body) = Header::parse(&entry.frame)
                        .map_err(|e| ChannelError::Store(e.to_string()))?;
                    header.seq = entry.seq;
                    read.push(Stored {
                        seq: entry.seq,
                        received_ms: entry.received_ms,
                        frame: Bytes::from(header.frame(body)),
                    });
                }
                Ok(read)
            }
        }
    }

    /// Takes the channel's lease for `holder`, or keeps it if `holder` has it; `false` when
    /// another holds it.
    pub async fn lease(&self, holder: &str) -> Result<bool, ChannelError> {
        match self {
            ChannelQueue::Local { channel, .. } => {
                let mut lease = channel
                    .lease
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match &*lease {
                    Some(held) => Ok(held.holder == holder),
                    None => {
                        *lease = Some(Lease {
                            holder: holder.to_owned(),
                            since_ms: crate::clock::now_ms(),
                        });
                        Ok(true)
                    }
                }
            }
            ChannelQueue::Shared(shared) => shared
                .redis
                .lease(&shared.keys.lease, holder, SHARED_LEASE)
                .await
                .map_err(store),
        }
    }

    /// Frees the lease if `holder` has it.
    pub async fn release(&self, holder: &str) {
        match self {
            ChannelQueue::Local { channel, .. } => {
                let mut lease = channel
                    .lease
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if lease.as_ref().is_some_and(|l| l.holder == holder) {
                    *lease = None;
                }
            }
            ChannelQueue::Shared(shared) => {
                if let Err(error) = shared.redis.delete_if(&shared.keys.lease, holder).await {
                    // It lapses by itself within `SHARED_LEASE`.
                    tracing::warn!(channel = %shared.name, %error, "Channel lease not freed.");
                }
            }
        }
    }

    /// Moves messages received before `before_ms` to the dead letters; returns how many.
    pub async fn expire(&self, before_ms: u64) -> Result<u64, ChannelError> {
        match self {
            ChannelQueue::Local { channels, channel } => {
                channels.expire(Arc::clone(channel), before_ms).await
            }
            ChannelQueue::Shared(shared) => {
                step_all(|| shared.redis.channel_expire(&shared.keys, before_ms)).await
            }
        }
    }

    /// Puts the dead letters back at the end, under new numbers and a fresh retention.
    pub async fn replay(&self, now_ms: u64) -> Result<u64, ChannelError> {
        match self {
            ChannelQueue::Local { channels, channel } => {
                channels.replay(Arc::clone(channel), now_ms).await
            }
            ChannelQueue::Shared(shared) => {
                step_all(|| shared.redis.channel_replay(&shared.keys, now_ms)).await
            }
        }
    }

    /// The channel as `/status` and `/metrics` show it.
    pub async fn report(&self, now_ms: u64) -> ChannelReport {
        match self {
            ChannelQueue::Local { channel, .. } => channel.report(now_ms),
            ChannelQueue::Shared(shared) => {
                let numbers = shared.redis.channel_numbers(&shared.keys).await;
                let (numbers, error) = match numbers {
                    Ok(numbers) => (numbers, None),
                    Err(error) => (Default::default(), Some(error)),
                };
                ChannelReport {
                    channel: shared.name.clone(),
                    store: "redis",
                    error,
                    head: numbers.head,
                    acked: numbers.acked,
                    depth: numbers.depth,
                    bytes: numbers.bytes,
                    oldest_age_seconds: numbers
                        .oldest_ms
                        .map(|oldest| now_ms.saturating_sub(oldest) as f64 / 1000.0),
                    dead_letters: numbers.dead,
                    no_route: 0,
                    connected: numbers.lease_holder.is_some(),
                    lease_holder: numbers.lease_holder,
                }
            }
        }
    }
}

/// Runs a Redis script that moves at most [`CHANNEL_STEP`] messages until it moves fewer;
/// returns how many moved in all.
async fn step_all<F, Fut>(step: F) -> Result<u64, ChannelError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let mut moved = 0;
    loop {
        let now = step().await.map_err(store)?;
        moved += now;
        if now < CHANNEL_STEP {
            return Ok(moved);
        }
    }
}

/// How often channels are swept for messages past their retention.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// Moves messages past their channel's retention to the dead letters, every few seconds, until
/// `stop`: every configured channel, wherever it is kept (a channel whose connection is gone
/// keeps its messages until it comes back).
pub async fn expire_forever(
    pool: super::ConnectionPool,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(EXPIRE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for name in pool.names_of("connect") {
            let config = pool.config(&name);
            let (Some(crate::config::Connection::Connect(config)), Ok(queue)) =
                (config.as_deref(), pool.queue(&name))
            else {
                continue;
            };
            let keep = config.retention_seconds.saturating_mul(1000);
            match queue
                .expire(crate::clock::now_ms().saturating_sub(keep))
                .await
            {
                Ok(0) => {}
                Ok(expired) => tracing::warn!(
                    channel = %name,
                    expired,
                    "Messages past the channel's retention moved to its dead letters."
                ),
                Err(error) => tracing::error!(channel = %name, %error, "Channel expiry failed."),
            }
        }
    }
}
