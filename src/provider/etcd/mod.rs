//! The etcd backend: full load at revision R, watch from R+1, reconnect and catch up.
//!
//! The loop survives every etcd failure: it keeps the cache serving, marks the link disconnected,
//! waits out the reconnect backoff and resumes from the last applied revision (or reloads in full
//! when that revision was compacted or the cluster's revision went backwards).

pub mod admin;
mod client;
mod load;
pub mod members;
pub mod watch;

use std::time::Duration;

use tokio::sync::watch as status_watch;
use tokio_util::sync::CancellationToken;

pub use client::EtcdLink;
use members::Members;

use super::{
    backoff::ReconnectBackoff, set_status, Applier, EtcdState, ProviderStats, ProviderStatus,
};
use crate::{keys::KeyLayout, settings::Settings};

/// Where config lives in etcd.
#[derive(Debug, Clone)]
pub struct EtcdSource {
    pub link: EtcdLink,
    pub layout: KeyLayout,
}

impl EtcdSource {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            link: EtcdLink::from_settings(settings),
            layout: KeyLayout::new(&settings.etcd_prefix),
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd link: {0}")]
    Link(#[from] client::LinkError),
    #[error("etcd answered without a response header")]
    NoHeader,
    #[error("watch stream ended")]
    StreamEnded,
    #[error("watch cancelled by etcd: {0}")]
    Cancelled(String),
    #[error("no message from etcd for {0:?} (dead connection)")]
    Silent(Duration),
    #[error("{0} timed out after {1:?}")]
    Timeout(&'static str, Duration),
    /// Parsing a full load failed (a bug: entries are parsed without panicking).
    #[error("config load: {0}")]
    Load(String),
}

/// Bound on a page of a full load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut` bounded by `limit`; `what` names the step in the error.
async fn timed_for<T, E: Into<SessionError>>(
    what: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(SessionError::Timeout(what, limit)),
    }
}

/// Revision bookkeeping that survives reconnects.
#[derive(Debug, Default)]
pub struct SyncState {
    /// The revision every applied change is up to; `None` before the first full load.
    pub applied: Option<i64>,
    /// The watch was established at least once.
    pub ever_connected: bool,
    /// The current session's watch was established (only that makes a session healthy).
    pub watched: bool,
    /// The cluster the applied revision belongs to; another cluster means a full reload.
    pub cluster_id: Option<u64>,
}

/// Runs until `token` is cancelled.
///
/// Each session uses one member. When it ends, the member is remembered as failed and the next
/// attempt goes to another one. The wait before it follows the 1 s -> 60 s backoff, which only a
/// session that reached its watch resets; meanwhile a status probe of every member (cheap, no
/// credentials) ends the wait as soon as one answers with a leader. A probe that led to a failed
/// attempt sits out the next wait, so a member that answers its status but cannot serve does
/// not turn the backoff into a tight loop.
pub async fn run(
    source: EtcdSource,
    applier: Applier,
    status: status_watch::Sender<ProviderStatus>,
    token: CancellationToken,
) {
    let mut state = SyncState::default();
    let mut backoff = ReconnectBackoff::new();
    let mut members = Members::new(source.link.endpoints.clone());
    let mut probed: Option<usize> = None;
    tracing::info!(endpoints = ?source.link.endpoints, prefix = source.layout.prefix(), "Connecting to etcd.");
    loop {
        let from_probe = probed.is_some();
        let index = members.pick(probed.take());
        let endpoint = members.url(index).to_owned();
        state.watched = false;
        let error = tokio::select! {
            () = token.cancelled() => return,
            error = watch::session(&source, &endpoint, &applier, &status, &mut state) => error,
        };
        let next = if state.ever_connected {
            EtcdState::Disconnected
        } else {
            EtcdState::Connecting
        };
        set_status(&status, None, Some(next));
        members.failed(index);
        applier.stats.etcd.failed(&endpoint, &error.to_string());
        if state.watched {
            backoff = ReconnectBackoff::new();
        }
        // A probe that led to a failed attempt sits out one wait (a member that answers its
        // status but cannot serve costs one attempt per backoff step, never a tight loop);
        // after an attempt of the backoff's own fails, the probe is trusted again, so one
        // unlucky probe early in an outage (a member still up when probed, killed before the
        // attempt) does not leave the whole outage to the growing backoff.
        let trust_probe = state.watched || !from_probe;
        let delay = backoff.next().unwrap_or(super::backoff::MAX_DELAY);
        tracing::warn!(
            %error,
            endpoint,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            applied_revision = state.applied,
            "etcd unavailable; serving from cache and reconnecting."
        );
        let probe = async {
            if trust_probe {
                members::probe_until_leader(&source.link, members.urls(), &applier.stats.etcd).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
            found = probe => {
                tracing::info!(endpoint = members.url(found), "etcd member with a leader found; reconnecting now.");
                probed = Some(found);
            }
        }
        ProviderStats::bump(&applier.stats.reconnects);
    }
}
