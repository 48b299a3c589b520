//! The file backend: `webhooks.json` and `connections.json`, loaded at start and watched.
//!
//! Each file is one JSON object (webhook id or connection name -> entry). A change replaces all of
//! the files' entries at once, removals included. A file that does not parse keeps the last good
//! config. All webhooks live in the default namespace (`ETCD_NAMESPACE`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{set_status, Applier, ProviderStatus};
use crate::{
    keys::{ConfigKey, ConnectionName, Namespace, WebhookId, WebhookKey},
    settings::Settings,
};

/// Changes closer together than this are applied as one reload (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The two files and the namespace their webhooks belong to.
#[derive(Debug, Clone)]
pub struct Files {
    pub webhooks: PathBuf,
    pub connections: PathBuf,
    pub namespace: Namespace,
}

impl Files {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            webhooks: settings.webhooks_config_file.clone(),
            connections: settings.connections_config_file.clone(),
            namespace: settings.etcd_namespace.clone(),
        }
    }
}

/// Why a file could not be used as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a JSON object of entries: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Reads a file as an object of entries; a missing file is an empty object.
pub fn read_entries(path: &Path) -> Result<Map<String, Value>, FileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "Config file not found; treating it as empty.");
            return Ok(Map::new());
        }
        Err(source) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FileError::Parse {
            path: path.to_owned(),
            reason: "the top level must be an object".into(),
        }),
        Err(e) => Err(FileError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Loads both files and replaces the cache's content with them.
pub fn load(files: &Files, applier: &Applier, revision: i64) -> Result<(), FileError> {
    let webhooks = read_entries(&files.webhooks)?;
    let connections = read_entries(&files.connections)?;
    let mut snapshot = applier.snapshot();
    for (id, value) in &webhooks {
        let source = format!("{}#{id}", files.webhooks.display());
        match WebhookId::parse(id) {
            Ok(id) => {
                let key = ConfigKey::Webhook(WebhookKey::new(files.namespace.clone(), id));
                snapshot.add(&key, &source, value.to_string().as_bytes());
            }
            Err(reason) => snapshot.skip(&source, &reason),
        }
    }
    for (name, value) in &connections {
        let source = format!("{}#{name}", files.connections.display());
        match ConnectionName::parse(name) {
            Ok(name) => {
                let key = ConfigKey::Connection(name);
                snapshot.add(&key, &source, value.to_string().as_bytes());
            }
            Err(reason) => snapshot.skip(&source, &reason),
        }
    }
    let stats = snapshot.apply(revision);
    tracing::info!(
        webhooks = applier.cache.webhook_count(),
        connections = applier.pool.len(),
        removed = stats.removed,
        revision,
        "Config files loaded."
    );
    Ok(())
}

/// Loads the files, then reloads them on every change until `token` is cancelled.
pub async fn run(
    files: Files,
    applier: Applier,
    status: watch::Sender<ProviderStatus>,
    token: CancellationToken,
) {
    let (tx, mut changes) = mpsc::channel::<()>(1);
    let _watcher = match watch_files(&files, tx) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::error!(%error, "Cannot watch the config files; changes need a restart.");
            None
        }
    };
    let mut revision = 0;
    let reload = |revision: &mut i64| match load(&files, &applier, *revision + 1) {
        Ok(()) => {
            *revision += 1;
            set_status(&status, Some(true), None);
        }
        Err(error) => {
            super::ProviderStats::bump(&applier.stats.rejected_loads);
            tracing::error!(%error, "Config file rejected; the last good config keeps serving.");
        }
    };
    reload(&mut revision);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            change = changes.recv() => {
                if change.is_none() {
                    return;
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
                // Drop the signal that arrived while debouncing: this reload covers it.
                let _ = changes.try_recv();
                reload(&mut revision);
            }
        }
    }
}

/// Watches the folders of both files (editors replace files by rename, which a file watch misses).
fn watch_files(files: &Files, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let names: Vec<_> = [&files.webhooks, &files.connections]
        .iter()
        .filter_map(|p| p.file_name().map(ToOwned::to_owned))
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
        if relevant {
            // Full means a reload is already pending, which covers this change too.
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = [&files.webhooks, &files.connections]
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}
