//! One etcd session on one member: connect, decide between resume and full load, then apply
//! watch events until the link fails.

use std::time::Duration;

use etcd_client::{EventType, GetOptions, KvClient, WatchOptions, WatchStream};
use tokio::{sync::watch as status_watch, time::Instant};

use super::{
    client::MAX_MESSAGE_BYTES, load::full_load, timed_for, EtcdSource, SessionError, SyncState,
};
use crate::{
    keys::{KeyLayout, KeyMatch},
    provider::{set_status, Applier, EtcdState, ProviderStatus},
};

/// Bound on the small requests that open a session (connect, status, count, watch): a member
/// that takes longer is left for another one.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// The session checks the watch this often...
const QUIET_CHECK: Duration = Duration::from_secs(1);
/// ...asks etcd for a progress notification once it has been quiet this long (a live member
/// answers in milliseconds, from memory: no disk, no raft)...
const PROGRESS_AFTER: Duration = Duration::from_secs(3);
/// ...and leaves it as dead once it has been silent this long: a frozen member or a silently
/// dropped link is left within 6–7 s. The HTTP/2 keep-alive (a ping after 5 s without a frame,
/// dead 3 s later) covers the requests outside the watch.
const SILENT_LIMIT: Duration = Duration::from_secs(6);

async fn opening<T, E: Into<SessionError>>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    timed_for(what, OPEN_TIMEOUT, fut).await
}

/// Runs one connection to `endpoint` until it fails; returns why.
pub async fn session(
    source: &EtcdSource,
    endpoint: &str,
    applier: &Applier,
    status: &status_watch::Sender<ProviderStatus>,
    state: &mut SyncState,
) -> SessionError {
    match run_session(source, endpoint, applier, status, state).await {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

async fn run_session(
    source: &EtcdSource,
    endpoint: &str,
    applier: &Applier,
    status: &status_watch::Sender<ProviderStatus>,
    state: &mut SyncState,
) -> Result<std::convert::Infallible, SessionError> {
    let link = &applier.stats.etcd;
    link.using(endpoint);
    let mut client = opening("connect", source.link.connect_to(endpoint)).await?;
    // Which member this is and whom it follows (refused at once by a member without a leader).
    let member = opening("status", client.status()).await?;
    link.status(
        member.header().map_or(0, |h| h.member_id()),
        member.leader(),
    );
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut watch_client = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let layout = &source.layout;

    let (current, cluster) = current_revision(&mut kv, layout).await?;
    link.saw_revision(current);
    // etcd answered: the link is up (before `loaded` flips, so health never shows a loaded
    // instance "connecting" to an etcd it just read from).
    state.ever_connected = true;
    set_status(status, None, Some(EtcdState::Connected));
    let resume = match state.applied {
        None => None,
        Some(_) if state.cluster_id != Some(cluster) => {
            tracing::warn!(
                cluster_id = cluster,
                previous = state.cluster_id,
                "etcd cluster changed; reloading everything."
            );
            None
        }
        Some(applied) if current < applied => {
            tracing::warn!(
                applied,
                current,
                "etcd revision went backwards (restored cluster?); reloading everything."
            );
            None
        }
        Some(applied) => Some(applied),
    };
    state.cluster_id = Some(cluster);
    let mut from = match resume {
        Some(applied) => applied,
        None => full_load(&mut kv, layout, applier, state, status).await?,
    };

    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from + 1)
            .with_progress_notify();
        let mut stream =
            opening("watch", watch_client.watch(layout.prefix(), Some(options))).await?;
        match follow(&mut stream, endpoint, layout, applier, status, state).await? {
            Compacted(compact_revision) => {
                tracing::warn!(
                    from = from + 1,
                    compact_revision,
                    "Missed revisions were compacted; reloading everything."
                );
                from = full_load(&mut kv, layout, applier, state, status).await?;
            }
        }
    }
}

/// The watch start revision is gone; a full load is needed.
struct Compacted(i64);

/// Applies watch responses until the stream fails or reports compaction.
async fn follow(
    stream: &mut WatchStream,
    endpoint: &str,
    layout: &KeyLayout,
    applier: &Applier,
    status: &status_watch::Sender<ProviderStatus>,
    state: &mut SyncState,
) -> Result<Compacted, SessionError> {
    let mut last_heard = Instant::now();
    let mut check = tokio::time::interval_at(Instant::now() + QUIET_CHECK, QUIET_CHECK);
    loop {
        let message = tokio::select! {
            message = stream.message() => message?,
            _ = check.tick() => {
                let quiet = last_heard.elapsed();
                if quiet >= SILENT_LIMIT {
                    return Err(SessionError::Silent(quiet));
                }
                if quiet >= PROGRESS_AFTER {
                    stream.request_progress().await?;
                }
                continue;
            }
        };
        let Some(response) = message else {
            return Err(SessionError::StreamEnded);
        };
        last_heard = Instant::now();
        applier.stats.heard();
        if let Some(header) = response.header() {
            applier.stats.etcd.saw_revision(header.revision());
        }
        if response.compact_revision() > 0 {
            return Ok(Compacted(response.compact_revision()));
        }
        if response.canceled() {
            return Err(SessionError::Cancelled(response.cancel_reason().to_owned()));
        }
        if response.created() {
            state.ever_connected = true;
            state.watched = true;
            set_status(status, None, Some(EtcdState::Connected));
            tracing::info!(
                endpoint,
                from = state.applied.map(|r| r + 1),
                "Watching etcd."
            );
            continue;
        }
        let events = response.events();
        if events.is_empty() {
            // A progress notification: every event up to this revision has been delivered.
            if let Some(header) = response.header() {
                advance(applier, state, header.revision());
            }
            continue;
        }
        for event in events {
            let Some(kv) = event.kv() else { continue };
            apply(applier, layout, event.event_type(), kv.key(), kv.value());
            advance(applier, state, kv.mod_revision());
        }
    }
}

fn advance(applier: &Applier, state: &mut SyncState, revision: i64) {
    if state.applied.is_none_or(|applied| revision > applied) {
        state.applied = Some(revision);
        applier.cache.set_revision(revision);
    }
}

fn apply(applier: &Applier, layout: &KeyLayout, kind: EventType, key: &[u8], value: &[u8]) {
    let source = String::from_utf8_lossy(key);
    match layout.parse(key) {
        KeyMatch::Valid(config_key) => match kind {
            EventType::Put => applier.put(&config_key, &source, value),
            EventType::Delete => applier.delete(&config_key, &source),
        },
        KeyMatch::Invalid(reason) => applier.skipped(&source, &reason, false),
        KeyMatch::Foreign => tracing::debug!(key = %source, "Ignoring key outside the layout."),
    }
}

/// The cluster's current revision and id: a read of the prefix key alone (no range: a count
/// over the prefix would cost etcd a walk over every key).
async fn current_revision(
    kv: &mut KvClient,
    layout: &KeyLayout,
) -> Result<(i64, u64), SessionError> {
    let options = GetOptions::new().with_keys_only();
    let response = opening("revision read", kv.get(layout.prefix(), Some(options))).await?;
    response
        .header()
        .map(|h| (h.revision(), h.cluster_id()))
        .ok_or(SessionError::NoHeader)
}
