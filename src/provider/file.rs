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
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{set_status, Applier, ProviderStatus};
use crate::{
    keys::{ConfigKey, ConnectionName, NameError, Namespace, WebhookId, WebhookKey},
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

/// What a missing file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The server: an empty file, reported in `/health` and `/status`.
    Empty,
    /// The tools: an error (a typo in a path must not look like an empty config).
    Error,
}

/// Reads a file as an object of raw entries (each value exactly as written); `Ok(None)` when it
/// is missing and that means empty.
fn read_entries(path: &Path, missing: Missing) -> Result<Option<Ordered>, FileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing == Missing::Empty => {
            return Ok(None);
        }
        Err(source) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let parse_error = |reason: String| FileError::Parse {
        path: path.to_owned(),
        reason,
    };
    match serde_json::from_slice::<Box<RawValue>>(&bytes) {
        Ok(raw) if raw.get().trim_start().starts_with('{') => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|e| parse_error(e.to_string())),
        Ok(_) => Err(parse_error("the top level must be an object".into())),
        Err(e) => Err(parse_error(e.to_string())),
    }
}

/// A file's entries in the order written, duplicates included (serde's maps keep only the last
/// of a repeated name, silently).
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// One entry of the two files: where it came from, its key (or why the name is not one) and
/// its value exactly as written.
pub struct FileEntry {
    /// `<path>#<name>`.
    pub source: String,
    pub key: Result<ConfigKey, NameError>,
    pub raw: String,
}

/// Both files as entries: the one reading of the files shared by the server and the tools.
pub struct FileEntries {
    pub entries: Vec<FileEntry>,
    /// Files that do not exist (read as empty; only with [`Missing::Empty`]).
    pub missing: Vec<String>,
    /// `<path>#<name>` of names written more than once in a file (the last one is used).
    pub duplicates: Vec<String>,
}

/// Reads both files into entries of `files.namespace`.
pub fn entries(files: &Files, missing: Missing) -> Result<FileEntries, FileError> {
    let mut out = FileEntries {
        entries: Vec::new(),
        missing: Vec::new(),
        duplicates: Vec::new(),
    };
    for (path, webhook) in [(&files.webhooks, true), (&files.connections, false)] {
        let Some(map) = read_entries(path, missing)? else {
            out.missing.push(path.display().to_string());
            continue;
        };
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, (name, _)) in map.0.iter().enumerate() {
            let source = format!("{}#{name}", path.display());
            if last.insert(name.as_str(), index).is_some() && !out.duplicates.contains(&source) {
                out.duplicates.push(source);
            }
        }
        let keep: std::collections::BTreeSet<usize> = last.into_values().collect();
        for (index, (name, raw)) in map.0.into_iter().enumerate() {
            if !keep.contains(&index) {
                continue;
            }
            let key = if webhook {
                WebhookId::parse(&name)
                    .map(|id| ConfigKey::Webhook(WebhookKey::new(files.namespace.clone(), id)))
            } else {
                ConnectionName::parse(&name).map(ConfigKey::Connection)
            };
            out.entries.push(FileEntry {
                source: format!("{}#{name}", path.display()),
                key,
                raw: raw.get().to_owned(),
            });
        }
    }
    Ok(out)
}

/// Loads both files and replaces the live config with them.
pub fn load(files: &Files, applier: &Applier, revision: i64) -> Result<(), FileError> {
    let read = entries(files, Missing::Empty)?;
    for path in &read.missing {
        tracing::warn!(
            path,
            "Config file not found; serving it as empty until it appears."
        );
    }
    for key in &read.duplicates {
        tracing::warn!(
            key,
            "Name written more than once in the file; the last one is used."
        );
    }
    if let Ok(mut missing) = applier.stats.missing_files.lock() {
        *missing = read.missing;
    }
    let mut snapshot = applier.snapshot();
    for entry in &read.entries {
        match &entry.key {
            Ok(key) => snapshot.add(key, &entry.source, entry.raw.as_bytes()),
            Err(reason) => snapshot.skip(&entry.source, reason),
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
    let watch = |tx: mpsc::Sender<()>| match watch_files(&files, tx) {
        Ok(watching) => Some(watching),
        Err(error) => {
            tracing::error!(%error, "Cannot watch the config files; changes need a restart.");
            None
        }
    };
    let mut watching = watch(tx.clone());
    let mut revision = 0;
    let reload = |revision: &mut i64| match load(&files, &applier, *revision + 1) {
        Ok(()) => {
            *revision += 1;
            set_status(&status, Some(true), None);
        }
        Err(error) => {
            super::ProviderStats::bump(&applier.stats.rejected_loads);
            if *revision == 0 {
                tracing::error!(
                    %error,
                    "Config file rejected; no config is loaded yet, so requests get 503 not_ready \
                     until the file is fixed."
                );
            } else {
                tracing::error!(%error, "Config file rejected; the last good config keeps serving.");
            }
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
                // A folder of a file was missing (a parent of it is watched): it may be there
                // now, and is watched from here on.
                if watching.as_ref().is_some_and(|w| !w.complete) {
                    watching = watch(tx.clone());
                }
                reload(&mut revision);
            }
        }
    }
}

/// The watch on the config files' folders.
struct Watching {
    _watcher: notify::RecommendedWatcher,
    /// Every file's folder is watched; otherwise the nearest existing parent of a missing
    /// folder is, and the watch is set up again once that folder appears.
    complete: bool,
}

/// Watches the folders of both files (editors replace files by rename, which a file watch
/// misses). A folder that does not exist yet is watched through its nearest existing parent:
/// its creation counts as a change.
fn watch_files(files: &Files, tx: mpsc::Sender<()>) -> notify::Result<Watching> {
    let names: Vec<_> = [&files.webhooks, &files.connections]
        .iter()
        .filter_map(|p| p.file_name().map(ToOwned::to_owned))
        .collect();
    let mut folders: Vec<PathBuf> = [&files.webhooks, &files.connections]
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    folders.dedup();
    // Events name absolute paths.
    let wanted: Vec<PathBuf> = folders
        .iter()
        .map(|folder| match std::env::current_dir() {
            Ok(here) if folder.is_relative() => here.join(folder),
            _ => folder.clone(),
        })
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| names.iter().any(|m| m == n))
                || wanted.iter().any(|folder| folder.starts_with(p))
        });
        if relevant {
            // Full means a reload is already pending, which covers this change too.
            let _ = tx.try_send(());
        }
    })?;
    let mut complete = true;
    let mut watched: Vec<PathBuf> = Vec::new();
    for folder in folders {
        let existing = folder.ancestors().find(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.is_dir()
        });
        let Some(existing) = existing else { continue };
        let existing = if existing.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            existing.to_owned()
        };
        complete &= existing == folder;
        if !watched.contains(&existing) {
            watcher.watch(&existing, RecursiveMode::NonRecursive)?;
            watched.push(existing);
        }
    }
    Ok(Watching {
        _watcher: watcher,
        complete,
    })
}
