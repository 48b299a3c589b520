//! Channels' durable queues (connector mode, public side): one redb file in the spool's
//! directory (`SPOOL_DIR/channels.redb`). Each channel numbers its messages 1, 2, 3, ... with no
//! gap; a message is on disk (fsync) before its number is handed out. A connector's cumulative
//! acknowledgement removes what it has made durable on its side; messages older than the
//! channel's retention become dead letters.
//!
//! One writer thread makes every change: the appends and acknowledgements that arrive together
//! share one commit (group commit), and no HTTP worker waits on the disk.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use dashmap::DashMap;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use super::wire::Header;

/// The file's name in `SPOOL_DIR`.
pub const FILE_NAME: &str = "channels.redb";

/// (channel id, sequence) -> received at (ms since the epoch, 8 bytes big-endian) + message.
const MESSAGES: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("messages");
/// channel name -> (head: the highest sequence given, acked: the highest acknowledged).
const HEADS: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("heads");
/// (channel id, sequence) -> as in `MESSAGES`: past the channel's retention, never acknowledged
/// (or, in a connector's inbox, refused by the private entry's checks).
const DEAD: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("dead_letters");
/// (channel id, sequence) -> as in `MESSAGES`: in a connector's inbox, messages whose webhook
/// the private side does not have yet (`no_route`).
const PARKED: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("parked");

/// (channel id, consumer) -> the range (after, upto] of sequences that consumer's
/// acknowledgements removed last: what a connector owns of what it received (connector mode's
/// exactly-once hand-over between several connectors).
const OWNERS: TableDefinition<'_, (u64, &str), (u64, u64)> = TableDefinition::new("owners");

/// Most changes one commit takes.
const BATCH: usize = 512;
/// Pages kept in memory.
const CACHE_BYTES: usize = 16 << 20;

/// Why a channel could not take or give a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// The channel holds its `max_bytes` of unacknowledged messages.
    #[error("channel `{channel}` holds its {max} bytes")]
    Full { channel: String, max: u64 },
    #[error("channel store: {0}")]
    Store(String),
    #[error("the channel store has stopped")]
    Stopped,
    /// Another process (a running instance) has the file open.
    #[error("the channels' file is in use by a running instance")]
    InUse,
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for ChannelError {
            fn from(e: $error) -> Self {
                ChannelError::Store(redb::Error::from(e).to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A channel's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// The highest sequence number given.
    pub head: u64,
    /// The highest one acknowledged by a connector.
    pub acked: u64,
    /// Messages stored (not acknowledged, not expired).
    pub depth: u64,
    pub bytes: u64,
    /// When the oldest stored message was received (ms since the epoch).
    pub oldest_ms: Option<u64>,
    /// Messages moved to the dead letters (past the retention), since the file was created.
    pub expired: u64,
    /// Messages waiting for their webhook to be configured (a connector's inbox).
    pub parked: u64,
}

/// One channel: its numbers, and a signal for readers waiting for new messages.
#[derive(Debug)]
pub struct Channel {
    pub name: String,
    id: u64,
    counts: Mutex<Counts>,
    /// The head, for readers waiting past it.
    head: watch::Sender<u64>,
    /// The acknowledged sequence (a connector's inbox: the confirmed one), for its drain.
    acked: watch::Sender<u64>,
    /// Who holds the channel's lease (one active consumer), with the time it was taken.
    pub lease: Mutex<Option<Lease>>,
}

/// The active consumer of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// An id for this connection (in `/status`).
    pub holder: String,
    pub since_ms: u64,
}

impl Channel {
    fn new(name: &str, counts: Counts) -> Self {
        Self {
            name: name.to_owned(),
            id: channel_id(name),
            counts: Mutex::new(counts),
            head: watch::channel(counts.head).0,
            acked: watch::channel(counts.acked).0,
            lease: Mutex::new(None),
        }
    }

    pub fn counts(&self) -> Counts {
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the head passes `after` (at once if it has).
    pub async fn wait_past(&self, after: u64) {
        let mut head = self.head.subscribe();
        let _ = head.wait_for(|head| *head > after).await;
    }

    /// Waits until the acknowledged sequence passes `after` (at once if it has).
    pub async fn wait_acked_past(&self, after: u64) {
        let mut acked = self.acked.subscribe();
        let _ = acked.wait_for(|acked| *acked > after).await;
    }
}

/// A channel as `/status` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelReport {
    pub channel: String,
    /// Where its queue is kept: `local` (this instance's file) or `redis` (the fleet's).
    pub store: &'static str,
    /// Why its numbers could not be read (a Redis-kept channel whose Redis does not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub head: u64,
    pub acked: u64,
    pub depth: u64,
    pub bytes: u64,
    pub oldest_age_seconds: Option<f64>,
    pub dead_letters: u64,
    /// A connector's inbox: messages waiting for their webhook to be configured.
    pub no_route: u64,
    /// Whether a connector holds the lease (is pulling now).
    pub connected: bool,
    pub lease_holder: Option<String>,
}

impl ChannelReport {
    /// A configured channel whose numbers cannot be had, and why.
    pub fn unavailable(channel: &str, error: String) -> Self {
        Self {
            channel: channel.to_owned(),
            store: "unknown",
            error: Some(error),
            head: 0,
            acked: 0,
            depth: 0,
            bytes: 0,
            oldest_age_seconds: None,
            dead_letters: 0,
            no_route: 0,
            connected: false,
            lease_holder: None,
        }
    }
}

impl Channel {
    /// Its report, at `now_ms`.
    pub fn report(&self, now_ms: u64) -> ChannelReport {
        let counts = self.counts();
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        ChannelReport {
            channel: self.name.clone(),
            store: "local",
            error: None,
            head: counts.head,
            acked: counts.acked,
            depth: counts.depth,
            bytes: counts.bytes,
            oldest_age_seconds: counts
                .oldest_ms
                .map(|oldest| now_ms.saturating_sub(oldest) as f64 / 1000.0),
            dead_letters: counts.expired,
            no_route: counts.parked,
            connected: lease.is_some(),
            lease_holder: lease.map(|l| l.holder),
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub received_ms: u64,
    /// The message as sent: header, newline, body.
    pub frame: Bytes,
}

/// One change for the writer.
enum Work {
    Append {
        channel: Arc<Channel>,
        max_bytes: u64,
        received_ms: u64,
        header: Header,
        body: Bytes,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
    Ack {
        channel: Arc<Channel>,
        upto: u64,
        /// The connector whose acknowledgement this is (its ownership is recorded).
        consumer: Option<String>,
        reply: oneshot::Sender<Result<(), ChannelError>>,
    },
    /// A connector's inbox: the public side confirmed it owns everything up to `upto`.
    Confirm {
        channel: Arc<Channel>,
        upto: u64,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
    /// A connector's inbox, on a new link: of the messages received and not confirmed, only
    /// those in (`after`, `upto`] are its own (the public side recorded its acknowledgement);
    /// the others are dropped, and the head goes back to the last one kept.
    Resolve {
        channel: Arc<Channel>,
        after: u64,
        upto: u64,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
    Expire {
        channel: Arc<Channel>,
        before_ms: u64,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
    Replay {
        channel: Arc<Channel>,
        now_ms: u64,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
    /// A connector's inbox takes a message under the public side's number.
    Receive {
        channel: Arc<Channel>,
        seq: u64,
        received_ms: u64,
        frame: Bytes,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
    /// A connector's inbox is done with a message: gone, parked or a dead letter.
    Settle {
        channel: Arc<Channel>,
        seq: u64,
        to: Settled,
        reply: oneshot::Sender<Result<u64, ChannelError>>,
    },
}

/// What became of a message of a connector's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Handed to the private side's destinations (or their spool): removed.
    Handed,
    /// No route yet: kept aside until the webhook is configured.
    Parked,
    /// A parked message handed over at last: removed from the parked ones.
    Unparked,
    /// Refused by the private entry's checks: a dead letter.
    Dead,
}

/// What one change came to, inside a commit.
enum Done {
    /// The number the change answers with: a message's sequence (0: a copy, not taken), how
    /// many moved, the inbox's new head; 0 where there is nothing to say.
    Number(u64),
    /// The channel holds its `max_bytes`.
    Full,
}

/// The channels' store; cloning is cheap.
#[derive(Clone)]
pub struct Channels {
    db: Arc<Database>,
    work: mpsc::Sender<Work>,
    channels: Arc<DashMap<String, Arc<Channel>>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("channels", &self.channels.len())
            .finish()
    }
}

impl Channels {
    /// Opens (or creates) the file in `dir` and starts the writer thread, which ends when the
    /// last handle is dropped.
    pub fn open(dir: &Path) -> Result<Self, ChannelError> {
        std::fs::create_dir_all(dir).map_err(|e| ChannelError::Store(e.to_string()))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => ChannelError::InUse,
                other => other.into(),
            })?;
        let txn = db.begin_write()?;
        txn.open_table(MESSAGES)?;
        txn.open_table(HEADS)?;
        txn.open_table(DEAD)?;
        txn.open_table(PARKED)?;
        txn.open_table(OWNERS)?;
        txn.commit()?;
        let channels = DashMap::new();
        {
            let txn = db.begin_read()?;
            let heads = txn.open_table(HEADS)?;
            let messages = txn.open_table(MESSAGES)?;
            let dead = txn.open_table(DEAD)?;
            let parked = txn.open_table(PARKED)?;
            for entry in heads.iter()? {
                let (name, value) = entry?;
                let (head, acked) = value.value();
                let id = channel_id(name.value());
                let mut counts = Counts {
                    head,
                    acked,
                    ..Counts::default()
                };
                for entry in messages.range((id, 0)..=(id, u64::MAX))? {
                    let (_, value) = entry?;
                    let value = value.value();
                    counts.depth += 1;
                    counts.bytes += value.len() as u64;
                    counts.oldest_ms.get_or_insert(received_ms(value));
                }
                counts.expired = dead.range((id, 0)..=(id, u64::MAX))?.count() as u64;
                counts.parked = parked.range((id, 0)..=(id, u64::MAX))?.count() as u64;
                let channel = Channel::new(name.value(), counts);
                channels.insert(channel.name.clone(), Arc::new(channel));
            }
        }
        let db = Arc::new(db);
        let (work, rx) = mpsc::channel(4 * BATCH);
        let writer = Arc::clone(&db);
        std::thread::Builder::new()
            .name("channel-writer".into())
            .spawn(move || serve(&writer, rx))
            .map_err(|e| ChannelError::Store(e.to_string()))?;
        Ok(Self {
            db,
            work,
            channels: Arc::new(channels),
        })
    }

    /// The channel called `name` (created empty on first use).
    pub fn channel(&self, name: &str) -> Arc<Channel> {
        if let Some(channel) = self.channels.get(name) {
            return Arc::clone(channel.value());
        }
        Arc::clone(
            self.channels
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Channel::new(name, Counts::default())))
                .value(),
        )
    }

    /// Every channel that has had a message, by name.
    pub fn all(&self) -> Vec<Arc<Channel>> {
        let mut all: Vec<_> = self
            .channels
            .iter()
            .map(|c| Arc::clone(c.value()))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Stores a message for `channel` (its `seq` is given here); returns its sequence number
    /// once it is on disk.
    pub async fn append(
        &self,
        channel: Arc<Channel>,
        max_bytes: u64,
        received_ms: u64,
        header: Header,
        body: Bytes,
    ) -> Result<u64, ChannelError> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Append {
            channel,
            max_bytes,
            received_ms,
            header,
            body,
            reply,
        };
        self.send(work, answer).await
    }

    /// Acknowledges every message of `channel` up to `upto` (removed from the file), for
    /// `consumer` when a connector says who it is (what it removed is recorded as its own).
    pub async fn ack(
        &self,
        channel: Arc<Channel>,
        upto: u64,
        consumer: Option<&str>,
    ) -> Result<(), ChannelError> {
        if upto <= channel.counts().acked {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(
            Work::Ack {
                channel,
                upto,
                consumer: consumer.map(str::to_owned),
                reply,
            },
            answer,
        )
        .await
    }

    /// The range (after, upto] that `consumer`'s acknowledgements removed last. Blocking.
    pub fn owned(
        &self,
        channel: &Channel,
        consumer: &str,
    ) -> Result<Option<(u64, u64)>, ChannelError> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(OWNERS)?;
        Ok(owners.get((channel.id, consumer))?.map(|v| v.value()))
    }

    /// A connector's inbox: everything up to `upto` is confirmed its own (in the queue; the
    /// future resolves once on disk).
    pub async fn submit_confirm(
        &self,
        channel: Arc<Channel>,
        upto: u64,
    ) -> Result<impl std::future::Future<Output = Result<u64, ChannelError>>, ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            Work::Confirm {
                channel,
                upto,
                reply,
            },
            answer,
        )
        .await
    }

    /// A connector's inbox keeps, of what it received unconfirmed, only (`after`, `upto`];
    /// returns the new head (and confirmed sequence).
    pub async fn resolve(
        &self,
        channel: Arc<Channel>,
        after: u64,
        upto: u64,
    ) -> Result<u64, ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            Work::Resolve {
                channel,
                after,
                upto,
                reply,
            },
            answer,
        )
        .await
    }

    /// Moves `channel`'s messages received before `before_ms` to the dead letters; returns how
    /// many.
    pub async fn expire(&self, channel: Arc<Channel>, before_ms: u64) -> Result<u64, ChannelError> {
        if channel
            .counts()
            .oldest_ms
            .is_none_or(|oldest| oldest >= before_ms)
        {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.send(
            Work::Expire {
                channel,
                before_ms,
                reply,
            },
            answer,
        )
        .await
    }

    /// A connector's inbox takes message `seq` of the public channel; `Ok(0)` when it has it
    /// already (at or below its head: the hand-over is exactly once), else `Ok(seq)` once on
    /// disk.
    pub async fn receive(
        &self,
        channel: Arc<Channel>,
        seq: u64,
        received_ms: u64,
        frame: Bytes,
    ) -> Result<u64, ChannelError> {
        self.submit_receive(channel, seq, received_ms, frame)
            .await?
            .await
    }

    /// [`Channels::receive`] in two steps: returns once the message is in the writer's queue
    /// (so messages submitted one after another are taken in that order: a copy is told by
    /// its number only when numbers arrive in order); the future it returns resolves once the
    /// message is on disk.
    pub async fn submit_receive(
        &self,
        channel: Arc<Channel>,
        seq: u64,
        received_ms: u64,
        frame: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<u64, ChannelError>>, ChannelError> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Receive {
            channel,
            seq,
            received_ms,
            frame,
            reply,
        };
        self.submit(work, answer).await
    }

    /// Settles message `seq` of a connector's inbox.
    pub async fn settle(
        &self,
        channel: Arc<Channel>,
        seq: u64,
        to: Settled,
    ) -> Result<(), ChannelError> {
        self.submit_settle(channel, seq, to).await?.await
    }

    /// [`Channels::settle`] in two steps, like [`Channels::submit_receive`]: a connector's
    /// drain goes on with the next message while this one's commit is made (and several
    /// settlements share it).
    pub async fn submit_settle(
        &self,
        channel: Arc<Channel>,
        seq: u64,
        to: Settled,
    ) -> Result<impl std::future::Future<Output = Result<(), ChannelError>>, ChannelError> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Settle {
            channel,
            seq,
            to,
            reply,
        };
        let settled = self.submit(work, answer).await?;
        Ok(async move { settled.await.map(drop) })
    }

    /// A connector inbox's parked messages, oldest first, at most `limit`. Blocking.
    pub fn parked(&self, channel: &Channel, limit: usize) -> Result<Vec<Stored>, ChannelError> {
        self.list(PARKED, channel, limit)
    }

    /// Puts `channel`'s dead letters back at its end, under new sequence numbers and with a
    /// fresh retention; returns how many.
    pub async fn replay(&self, channel: Arc<Channel>, now_ms: u64) -> Result<u64, ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            Work::Replay {
                channel,
                now_ms,
                reply,
            },
            answer,
        )
        .await
    }

    async fn send<T>(
        &self,
        work: Work,
        answer: oneshot::Receiver<Result<T, ChannelError>>,
    ) -> Result<T, ChannelError> {
        self.submit(work, answer).await?.await
    }

    /// Puts `work` in the writer's queue (in the order of the calls); the future resolves to
    /// its reply once it is committed.
    async fn submit<T>(
        &self,
        work: Work,
        answer: oneshot::Receiver<Result<T, ChannelError>>,
    ) -> Result<impl std::future::Future<Output = Result<T, ChannelError>>, ChannelError> {
        self.work
            .send(work)
            .await
            .map_err(|_| ChannelError::Stopped)?;
        Ok(async move { answer.await.map_err(|_| ChannelError::Stopped)? })
    }

    /// Up to `max` messages of `channel` after `after` (at least one, whatever its size, then
    /// no more than `max_bytes` together). Blocking: call it off the HTTP workers.
    pub fn read(
        &self,
        channel: &Channel,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, ChannelError> {
        let txn = self.db.begin_read()?;
        let messages = txn.open_table(MESSAGES)?;
        let mut read = Vec::new();
        let mut bytes = 0;
        let start = after.saturating_add(1);
        for entry in messages.range((channel.id, start)..=(channel.id, u64::MAX))? {
            let (key, value) = entry?;
            let value = value.value();
            if read.len() >= max || (!read.is_empty() && bytes + value.len() > max_bytes) {
                break;
            }
            bytes += value.len();
            read.push(Stored {
                seq: key.value().1,
                received_ms: received_ms(value),
                frame: Bytes::copy_from_slice(value.get(8..).unwrap_or_default()),
            });
        }
        Ok(read)
    }

    /// `channel`'s dead letters, oldest first, at most `limit`.
    pub fn dead_letters(
        &self,
        channel: &Channel,
        limit: usize,
    ) -> Result<Vec<Stored>, ChannelError> {
        self.list(DEAD, channel, limit)
    }

    fn list(
        &self,
        table: TableDefinition<'_, (u64, u64), &[u8]>,
        channel: &Channel,
        limit: usize,
    ) -> Result<Vec<Stored>, ChannelError> {
        let txn = self.db.begin_read()?;
        let dead = txn.open_table(table)?;
        let mut read = Vec::new();
        for entry in dead
            .range((channel.id, 0)..=(channel.id, u64::MAX))?
            .take(limit)
        {
            let (key, value) = entry?;
            let value = value.value();
            read.push(Stored {
                seq: key.value().1,
                received_ms: received_ms(value),
                frame: Bytes::copy_from_slice(value.get(8..).unwrap_or_default()),
            });
        }
        Ok(read)
    }
}

/// A channel's key in the file: the first 8 bytes of SHA-256 of its name.
fn channel_id(name: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id)
}

fn received_ms(value: &[u8]) -> u64 {
    value
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The writer: takes what has arrived, up to [`BATCH`], and commits it at once.
fn serve(db: &Database, mut rx: mpsc::Receiver<Work>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(work) => batch.push(work),
                Err(_) => break,
            }
        }
        match commit(db, &batch) {
            Ok((done, counts)) => {
                for (id, counts) in counts {
                    if let Some(channel) = batch.iter().map(channel_of).find(|c| c.id == id) {
                        *channel
                            .counts
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
                        channel.head.send_replace(counts.head);
                        channel.acked.send_replace(counts.acked);
                    }
                }
                for (work, done) in batch.into_iter().zip(done) {
                    reply(work, Ok(done));
                }
            }
            Err(error) => {
                tracing::error!(%error, "Channel commit failed; the senders are answered 503.");
                for work in batch {
                    reply(work, Err(error.clone()));
                }
            }
        }
    }
}

fn channel_of(work: &Work) -> &Arc<Channel> {
    match work {
        Work::Append { channel, .. }
        | Work::Ack { channel, .. }
        | Work::Expire { channel, .. }
        | Work::Replay { channel, .. }
        | Work::Receive { channel, .. }
        | Work::Confirm { channel, .. }
        | Work::Resolve { channel, .. }
        | Work::Settle { channel, .. } => channel,
    }
}

fn reply(work: Work, done: Result<Done, ChannelError>) {
    match work {
        Work::Append {
            reply,
            channel,
            max_bytes,
            ..
        } => {
            let _ = reply.send(done.and_then(|done| match done {
                Done::Number(seq) => Ok(seq),
                Done::Full => Err(ChannelError::Full {
                    channel: channel.name.clone(),
                    max: max_bytes,
                }),
            }));
        }
        Work::Ack { reply, .. } => {
            let _ = reply.send(done.map(drop));
        }
        Work::Expire { reply, .. }
        | Work::Replay { reply, .. }
        | Work::Receive { reply, .. }
        | Work::Confirm { reply, .. }
        | Work::Resolve { reply, .. }
        | Work::Settle { reply, .. } => {
            let _ = reply.send(done.map(|done| match done {
                Done::Number(n) => n,
                Done::Full => 0,
            }));
        }
    }
}

/// Applies a batch in one transaction; returns what each change came to and the channels'
/// numbers after it (applied to the channels only once the commit is durable).
fn commit(
    db: &Database,
    batch: &[Work],
) -> Result<(Vec<Done>, HashMap<u64, Counts>), ChannelError> {
    let txn = db.begin_write()?;
    let mut done = Vec::with_capacity(batch.len());
    let mut after: HashMap<u64, Counts> = HashMap::new();
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut heads = txn.open_table(HEADS)?;
        let mut dead = txn.open_table(DEAD)?;
        let mut parked = txn.open_table(PARKED)?;
        let mut owners = txn.open_table(OWNERS)?;
        for work in batch {
            let channel = channel_of(work);
            let counts = after.entry(channel.id).or_insert_with(|| channel.counts());
            match work {
                Work::Append {
                    max_bytes,
                    received_ms,
                    header,
                    body,
                    ..
                } => {
                    let seq = counts.head + 1;
                    let header = Header {
                        seq,
                        ..header.clone()
                    };
                    let mut value = received_ms.to_be_bytes().to_vec();
                    value.extend_from_slice(&header.frame(body));
                    let size = value.len() as u64;
                    if counts.bytes + size > *max_bytes {
                        done.push(Done::Full);
                        continue;
                    }
                    messages.insert((channel.id, seq), value.as_slice())?;
                    counts.head = seq;
                    counts.depth += 1;
                    counts.bytes += size;
                    counts.oldest_ms.get_or_insert(*received_ms);
                    done.push(Done::Number(seq));
                }
                Work::Ack { upto, consumer, .. } => {
                    let upto = (*upto).min(counts.head);
                    if let Some(consumer) = consumer.as_deref().filter(|_| upto > counts.acked) {
                        // Consecutive acknowledgements of one consumer make one range.
                        let last = owners.get((channel.id, consumer))?.map(|v| v.value());
                        let after = match last {
                            Some((after, end)) if end == counts.acked => after,
                            _ => counts.acked,
                        };
                        owners.insert((channel.id, consumer), (after, upto))?;
                    }
                    for seq in counts.acked.saturating_add(1)..=upto {
                        if let Some(value) = messages.remove((channel.id, seq))? {
                            counts.depth -= 1;
                            counts.bytes -= value.value().len() as u64;
                        }
                    }
                    counts.acked = counts.acked.max(upto);
                    counts.oldest_ms = first_received(&messages, channel.id)?;
                    done.push(Done::Number(0));
                }
                Work::Expire { before_ms, .. } => {
                    let mut old = Vec::new();
                    for entry in messages.range((channel.id, 0)..=(channel.id, u64::MAX))? {
                        let (key, value) = entry?;
                        if received_ms(value.value()) >= *before_ms {
                            break;
                        }
                        old.push((key.value().1, value.value().to_vec()));
                    }
                    for (seq, value) in &old {
                        messages.remove((channel.id, *seq))?;
                        dead.insert((channel.id, *seq), value.as_slice())?;
                        counts.depth -= 1;
                        counts.bytes -= value.len() as u64;
                    }
                    counts.expired += old.len() as u64;
                    counts.oldest_ms = first_received(&messages, channel.id)?;
                    done.push(Done::Number(old.len() as u64));
                }
                Work::Receive {
                    seq,
                    received_ms,
                    frame,
                    ..
                } => {
                    if *seq <= counts.head {
                        done.push(Done::Number(0));
                        continue;
                    }
                    let mut value = received_ms.to_be_bytes().to_vec();
                    value.extend_from_slice(frame);
                    messages.insert((channel.id, *seq), value.as_slice())?;
                    counts.head = *seq;
                    counts.depth += 1;
                    counts.bytes += value.len() as u64;
                    counts.oldest_ms.get_or_insert(*received_ms);
                    done.push(Done::Number(*seq));
                }
                Work::Confirm { upto, .. } => {
                    counts.acked = counts.acked.max((*upto).min(counts.head));
                    done.push(Done::Number(counts.acked));
                }
                Work::Resolve { after, upto, .. } => {
                    let confirmed = counts.acked;
                    let kept = |seq: u64| seq > *after && seq <= *upto;
                    let mut last_kept = confirmed;
                    for seq in confirmed.saturating_add(1)..=counts.head {
                        if kept(seq) {
                            last_kept = seq;
                        } else if let Some(value) = messages.remove((channel.id, seq))? {
                            counts.depth -= 1;
                            counts.bytes -= value.value().len() as u64;
                        }
                    }
                    counts.acked = last_kept;
                    counts.head = last_kept;
                    counts.oldest_ms = first_received(&messages, channel.id)?;
                    done.push(Done::Number(last_kept));
                }
                Work::Settle { seq, to, .. } => {
                    let key = (channel.id, *seq);
                    if *to == Settled::Unparked {
                        if parked.remove(key)?.is_some() {
                            counts.parked = counts.parked.saturating_sub(1);
                        }
                    } else if let Some(value) = remove(&mut messages, key)? {
                        counts.depth -= 1;
                        counts.bytes -= value.len() as u64;
                        match to {
                            Settled::Parked => {
                                parked.insert(key, value.as_slice())?;
                                counts.parked += 1;
                            }
                            Settled::Dead => {
                                dead.insert(key, value.as_slice())?;
                                counts.expired += 1;
                            }
                            Settled::Handed | Settled::Unparked => {}
                        }
                        counts.oldest_ms = first_received(&messages, channel.id)?;
                    }
                    done.push(Done::Number(0));
                }
                Work::Replay { now_ms, .. } => {
                    let mut letters = Vec::new();
                    for entry in dead.range((channel.id, 0)..=(channel.id, u64::MAX))? {
                        let (key, value) = entry?;
                        letters.push((key.value().1, value.value().to_vec()));
                    }
                    for (seq, value) in &letters {
                        dead.remove((channel.id, *seq))?;
                        let frame = value.get(8..).unwrap_or_default();
                        let Ok((header, body)) = Header::parse(frame) else {
                            continue;
                        };
                        let seq = counts.head + 1;
                        let mut value = now_ms.to_be_bytes().to_vec();
                        value.extend_from_slice(&Header { seq, ..header }.frame(body));
                        messages.insert((channel.id, seq), value.as_slice())?;
                        counts.head = seq;
                        counts.depth += 1;
                        counts.bytes += value.len() as u64;
                        counts.oldest_ms.get_or_insert(*now_ms);
                    }
                    counts.expired = counts.expired.saturating_sub(letters.len() as u64);
                    done.push(Done::Number(letters.len() as u64));
                }
            }
            heads.insert(channel.name.as_str(), (counts.head, counts.acked))?;
        }
    }
    txn.commit()?;
    Ok((done, after))
}

/// Removes a row, returning its value.
fn remove(
    table: &mut redb::Table<'_, (u64, u64), &[u8]>,
    key: (u64, u64),
) -> Result<Option<Vec<u8>>, ChannelError> {
    let removed = table.remove(key)?.map(|v| v.value().to_vec());
    Ok(removed)
}

fn first_received(
    messages: &redb::Table<'_, (u64, u64), &[u8]>,
    id: u64,
) -> Result<Option<u64>, ChannelError> {
    Ok(messages
        .range((id, 0)..=(id, u64::MAX))?
        .next()
        .transpose()?
        .map(|(_, value)| received_ms(value.value())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(request_id: &str) -> Header {
        Header {
            seq: 0,
            namespace: "acme".into(),
            webhook: "gh".into(),
            request_id: request_id.into(),
            received_at: "2026-12-07T00:00:00.000Z".into(),
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn sequences_have_no_gap_survive_a_reopen_and_acks_remove() {
        let dir = tempfile::tempdir().unwrap();
        let channels = Channels::open(dir.path()).unwrap();
        let a = channels.channel("a");
        let appends = (0..50).map(|i| {
            let channels = channels.clone();
            let a = Arc::clone(&a);
            async move {
                channels
                    .append(
                        a,
                        1 << 20,
                        1000 + i,
                        header(&format!("r{i}")),
                        Bytes::from("{}"),
                    )
                    .await
                    .unwrap()
            }
        });
        let mut seqs = futures_util::future::join_all(appends).await;
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        let read = channels.read(&a, 10, 5, 1 << 20).unwrap();
        assert_eq!(
            read.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [11, 12, 13, 14, 15]
        );
        let (h, body) = Header::parse(&read[0].frame).unwrap();
        assert_eq!((h.seq, body), (11, &b"{}"[..]));
        channels.ack(Arc::clone(&a), 20, None).await.unwrap();
        assert_eq!(a.counts().depth, 30);
        drop((a, channels));
        // The writer ends with the last handle; the file is then free to open again.
        let reopened = loop {
            match Channels::open(dir.path()) {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        let a = reopened.channel("a");
        let counts = a.counts();
        assert_eq!((counts.head, counts.acked, counts.depth), (50, 20, 30));
        let next = reopened
            .append(Arc::clone(&a), 1 << 20, 2000, header("r"), Bytes::new())
            .await
            .unwrap();
        assert_eq!(next, 51);
        assert_eq!(reopened.read(&a, 0, 1, 1 << 20).unwrap()[0].seq, 21);
    }

    #[tokio::test]
    async fn a_consumers_acknowledgements_are_recorded_as_one_range_until_another_acks() {
        let dir = tempfile::tempdir().unwrap();
        let channels = Channels::open(dir.path()).unwrap();
        let a = channels.channel("a");
        for i in 0..10 {
            channels
                .append(
                    Arc::clone(&a),
                    1 << 30,
                    10,
                    header(&i.to_string()),
                    Bytes::new(),
                )
                .await
                .unwrap();
        }
        let owned = |consumer: &str| channels.owned(&a, consumer).unwrap();
        channels.ack(Arc::clone(&a), 2, Some("x")).await.unwrap();
        channels.ack(Arc::clone(&a), 4, Some("x")).await.unwrap();
        assert_eq!(owned("x"), Some((0, 4)), "consecutive: one range");
        channels.ack(Arc::clone(&a), 7, Some("y")).await.unwrap();
        // Not past the acknowledged: nothing recorded.
        channels.ack(Arc::clone(&a), 5, Some("x")).await.unwrap();
        channels.ack(Arc::clone(&a), 9, Some("x")).await.unwrap();
        assert_eq!(owned("x"), Some((7, 9)), "after another's: a new range");
        assert_eq!(owned("y"), Some((4, 7)));
        // A long poll's acknowledgement names nobody.
        channels.ack(Arc::clone(&a), 10, None).await.unwrap();
        assert_eq!(owned("x"), Some((7, 9)));
        assert_eq!(owned("z"), None);
        // Kept across a reopen (once the writer thread has let the file go).
        drop(channels);
        let mut reopened = Channels::open(dir.path());
        for _ in 0..500 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            reopened = Channels::open(dir.path());
        }
        let channels = reopened.unwrap();
        let a = channels.channel("a");
        assert_eq!(channels.owned(&a, "x").unwrap(), Some((7, 9)));
    }

    #[tokio::test]
    async fn an_inbox_keeps_only_what_its_connector_owns_of_what_it_did_not_confirm() {
        let dir = tempfile::tempdir().unwrap();
        let channels = Channels::open(dir.path()).unwrap();
        let inbox = channels.channel("inbox");
        let frame = |seq| Bytes::from(Header { seq, ..header("r") }.frame(b"{}"));
        for seq in 1..=10 {
            channels
                .receive(Arc::clone(&inbox), seq, 10, frame(seq))
                .await
                .unwrap();
        }
        channels
            .submit_confirm(Arc::clone(&inbox), 3)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(inbox.counts().acked, 3);
        // Its acknowledgements removed (5, 8]: 4 and 9, 10 are another's.
        let head = channels.resolve(Arc::clone(&inbox), 5, 8).await.unwrap();
        assert_eq!(head, 8);
        let kept: Vec<u64> = channels
            .read(&inbox, 0, 100, 1 << 20)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(kept, [1, 2, 3, 6, 7, 8]);
        let counts = inbox.counts();
        assert_eq!((counts.head, counts.acked, counts.depth), (8, 8, 6));
        // Sent again from 9: taken.
        assert_eq!(
            channels
                .receive(Arc::clone(&inbox), 9, 10, frame(9))
                .await
                .unwrap(),
            9
        );
        // Nothing owned past the confirmed: all unconfirmed dropped.
        let head = channels.resolve(Arc::clone(&inbox), 0, 2).await.unwrap();
        assert_eq!(head, 8);
        assert_eq!(inbox.counts().depth, 6);
    }

    #[tokio::test]
    async fn an_inbox_takes_each_number_once_and_settles_messages() {
        let dir = tempfile::tempdir().unwrap();
        let channels = Channels::open(dir.path()).unwrap();
        let inbox = channels.channel("inbox");
        let frame = |seq| Bytes::from(Header { seq, ..header("r") }.frame(b"{}"));
        let mut taken = Vec::new();
        for seq in [1, 2, 3, 2, 1, 5] {
            taken.push(
                channels
                    .receive(Arc::clone(&inbox), seq, 10, frame(seq))
                    .await
                    .unwrap(),
            );
        }
        // A number at or below the head is a copy: dropped.
        assert_eq!(taken, [1, 2, 3, 0, 0, 5]);
        for (seq, to) in [
            (1, Settled::Handed),
            (2, Settled::Parked),
            (3, Settled::Dead),
        ] {
            channels.settle(Arc::clone(&inbox), seq, to).await.unwrap();
        }
        let counts = inbox.counts();
        assert_eq!(
            (counts.head, counts.depth, counts.parked, counts.expired),
            (5, 1, 1, 1)
        );
        assert_eq!(channels.parked(&inbox, 10).unwrap()[0].seq, 2);
        assert_eq!(channels.read(&inbox, 0, 10, 1 << 20).unwrap()[0].seq, 5);
        channels
            .settle(Arc::clone(&inbox), 2, Settled::Unparked)
            .await
            .unwrap();
        assert_eq!(inbox.counts().parked, 0);
        assert!(channels.parked(&inbox, 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_full_channel_refuses_and_expired_messages_are_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let channels = Channels::open(dir.path()).unwrap();
        let a = channels.channel("a");
        let b = channels.channel("b");
        let body = Bytes::from(vec![b'x'; 300]);
        let mut answers = Vec::new();
        for i in 0..3 {
            answers.push(
                channels
                    .append(Arc::clone(&a), 1000, i, header("r"), body.clone())
                    .await,
            );
        }
        assert!(answers[0].is_ok() && answers[1].is_ok());
        assert!(matches!(
            answers[2],
            Err(ChannelError::Full { max: 1000, .. })
        ));
        // Another channel is not affected.
        assert_eq!(
            channels
                .append(Arc::clone(&b), 1000, 5, header("r"), body.clone())
                .await
                .unwrap(),
            1
        );
        assert_eq!(channels.expire(Arc::clone(&a), 1).await.unwrap(), 1);
        let counts = a.counts();
        assert_eq!(
            (counts.depth, counts.expired, counts.oldest_ms),
            (1, 1, Some(1))
        );
        assert_eq!(channels.dead_letters(&a, 10).unwrap()[0].seq, 1);
        // Replayed, a dead letter comes back at the end, under the next number.
        assert_eq!(channels.replay(Arc::clone(&a), 50).await.unwrap(), 1);
        let counts = a.counts();
        assert_eq!((counts.head, counts.depth, counts.expired), (3, 2, 0));
        let replayed = channels.read(&a, 2, 10, 1 << 20).unwrap();
        assert_eq!(Header::parse(&replayed[0].frame).unwrap().0.seq, 3);
        channels.ack(Arc::clone(&a), 3, None).await.unwrap();
        // The next message keeps numbering after the head.
        assert_eq!(
            channels
                .append(Arc::clone(&a), 1000, 9, header("r"), body)
                .await
                .unwrap(),
            4
        );
    }
}
