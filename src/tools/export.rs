//! `switchyard export`: one namespace's webhooks (and, with `--connections`, the global
//! connections) from etcd as the file backend's files.
//!
//! Values are exported exactly as stored. Entries the server would refuse are exported too (so
//! nothing is lost) and flagged; values that are not JSON cannot be and are skipped and flagged.

use std::path::Path;

use super::{etcd_entries, object_of, validate, Entry, Report};
use crate::{
    keys::{ConfigKey, KeyLayout, Namespace},
    provider::{
        etcd::{admin, EtcdLink},
        Rules,
    },
    settings::Settings,
};

/// The exported webhooks file, and what was flagged.
pub struct Export {
    pub webhooks: String,
    pub connections_written: usize,
    /// Connections in etcd that were not exported (no `--connections` path).
    pub connections_left: usize,
    pub report: Report,
}

pub async fn run(
    settings: &Settings,
    namespace: &Namespace,
    connections_path: Option<&Path>,
) -> Result<Export, String> {
    let layout = KeyLayout::new(&settings.etcd_prefix);
    // Only this namespace's folder and the connections: other namespaces' entries, valid or
    // not, are not this export's to flag.
    let link = EtcdLink::from_settings(settings);
    let mut kvs = Vec::new();
    for folder in [
        layout.namespace_prefix(namespace),
        layout.connections_prefix(),
    ] {
        kvs.extend(
            admin::read_prefix(&link, &folder)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut report = Report::default();
    let entries: Vec<Entry> = etcd_entries(&layout, kvs, &mut report);
    // Flags what the server would refuse (exported anyway).
    validate(
        &entries,
        Rules::from_settings(settings),
        &super::seal_keys(settings)?,
        &mut report,
    );
    let named = |webhooks: bool| -> Vec<(String, String)> {
        entries
            .iter()
            .filter_map(|e| match (&e.key, webhooks) {
                (ConfigKey::Webhook(key), true) => Some((key.id.to_string(), e.raw.clone())),
                (ConfigKey::Connection(name), false) => Some((name.to_string(), e.raw.clone())),
                _ => None,
            })
            .collect()
    };
    let webhooks = object_of(&named(true), &mut report)?;
    let connections = named(false);
    let mut export = Export {
        webhooks,
        connections_written: 0,
        connections_left: 0,
        report,
    };
    match connections_path {
        Some(path) => {
            let text = object_of(&connections, &mut export.report)?;
            write_private(path, &(text + "\n"))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            export.connections_written = connections.len();
        }
        None => export.connections_left = connections.len(),
    }
    Ok(export)
}

/// Writes a file only its owner can read: connections hold passwords.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it before emptying and writing it.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.set_len(0)?;
    file.write_all(text.as_bytes())
}
