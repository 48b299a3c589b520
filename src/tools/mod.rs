//! Tooling, as subcommands of the same binary: `check`, `migrate`, `export` (config), `seal`
//! (a sealed credential) and `spool` (the spool's state, dead letters, replay, purge).
//!
//! Each validates entries exactly as the server does (same parsers, same environment
//! substitution) and prints one line per problem with its key and reason.

pub mod check;
pub mod export;
pub mod migrate;
pub mod seal;
pub mod spool;

use std::{fmt::Write as _, path::Path};

use crate::{
    config::{env_subst::process_env, seal::Keyring, ConfigError, Connection, Secrets},
    keys::{ConfigKey, ConnectionName, KeyLayout, KeyMatch, Namespace},
    provider::{
        file::{self, Files, Missing},
        fits_connections, parse_connection, parse_webhook, Rules,
    },
};

/// A parsed entry from a file or etcd, with where it came from.
pub struct Entry {
    pub source: String,
    pub key: ConfigKey,
    /// The value exactly as stored (placeholders unexpanded).
    pub raw: String,
}

/// Problems found, one line each: `<source>: <reason>`.
#[derive(Default)]
pub struct Report {
    pub problems: Vec<String>,
    /// Valid entries that will probably misbehave (they do not fail the check).
    pub warnings: Vec<String>,
    pub ok: usize,
    /// `check --explain`: how one request would be routed, printed before the rest.
    pub explained: Vec<String>,
}

impl Report {
    pub fn problem(&mut self, source: &str, reason: impl std::fmt::Display) {
        self.problems.push(format!("{source}: {reason}"));
    }

    pub fn warning(&mut self, source: &str, reason: impl std::fmt::Display) {
        self.warnings.push(format!("{source}: {reason}"));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.explained {
            let _ = writeln!(out, "{line}");
        }
        for p in &self.problems {
            let _ = writeln!(out, "invalid  {p}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning  {w}");
        }
        let _ = writeln!(out, "{} valid, {} invalid", self.ok, self.problems.len());
        out
    }
}

/// Reads the two files of the file backend into entries of `namespace`, exactly as the server
/// reads them. A file that is missing or does not parse is an error (the tool cannot run), not
/// an empty config.
pub fn file_entries(
    webhooks: &Path,
    connections: &Path,
    namespace: &Namespace,
    report: &mut Report,
) -> Result<Vec<Entry>, String> {
    let files = Files {
        webhooks: webhooks.to_owned(),
        connections: connections.to_owned(),
        namespace: namespace.clone(),
    };
    let read = file::entries(&files, Missing::Error).map_err(|e| e.to_string())?;
    for key in &read.duplicates {
        report.problem(
            key,
            "written more than once in the file (the server uses the last one)",
        );
    }
    Ok(read
        .entries
        .into_iter()
        .filter_map(|entry| match entry.key {
            Ok(key) => Some(Entry {
                source: entry.source,
                key,
                raw: entry.raw,
            }),
            Err(reason) => {
                report.problem(&entry.source, reason);
                None
            }
        })
        .collect())
}

/// Entries from raw etcd keys under `layout`; foreign keys are ignored as the server does.
pub fn etcd_entries(
    layout: &KeyLayout,
    kvs: Vec<(Vec<u8>, Vec<u8>)>,
    report: &mut Report,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (key, value) in kvs {
        let source = String::from_utf8_lossy(&key).into_owned();
        match layout.parse(&key) {
            // The server refuses a value that is not UTF-8 (it cannot be JSON): so does `check`.
            KeyMatch::Valid(key) => match String::from_utf8(value) {
                Ok(raw) => entries.push(Entry { source, key, raw }),
                Err(_) => report.problem(&source, "value is not valid JSON: not UTF-8"),
            },
            KeyMatch::Invalid(reason) => report.problem(&source, reason),
            KeyMatch::Foreign => {}
        }
    }
    entries
}

/// Validates every entry as the server would (sealed values opened with `keys`), plus
/// cross-entry checks (connections named by webhooks must exist).
/// Whether connection `store` of this config can keep a channel (it is a `redis` one).
fn kept_in(
    store: &str,
    defined: &std::collections::HashMap<&ConnectionName, &std::sync::Arc<Connection>>,
) -> Result<(), ConfigError> {
    let found = ConnectionName::parse(store)
        .ok()
        .and_then(|name| defined.get(&name).map(|c| c.kind()));
    match found {
        Some("redis") => Ok(()),
        Some(kind) => Err(ConfigError::Invalid(format!(
            "`store.connection` `{store}` is a {kind} connection; a channel is kept in a redis one"
        ))),
        None => Err(ConfigError::Invalid(format!(
            "`store.connection` `{store}` is not defined (the channel's webhooks would get 503 \
             until it is)"
        ))),
    }
}

pub fn validate(entries: &[Entry], rules: Rules, keys: &Keyring, report: &mut Report) {
    let secrets = |key| Secrets::new(&process_env, keys, key);
    // Each entry is parsed once; connections first, so webhooks can be checked against them.
    let connections: Vec<(&Entry, Result<std::sync::Arc<Connection>, ConfigError>)> = entries
        .iter()
        .filter(|e| matches!(e.key, ConfigKey::Connection(_)))
        .map(|e| {
            (
                e,
                parse_connection(e.raw.as_bytes(), &secrets(&e.key)).map(std::sync::Arc::new),
            )
        })
        .collect();
    let defined: std::collections::HashMap<&ConnectionName, &std::sync::Arc<Connection>> =
        connections
            .iter()
            .filter_map(|(e, result)| match (&e.key, result) {
                (ConfigKey::Connection(name), Ok(connection)) => Some((name, connection)),
                _ => None,
            })
            .collect();
    let stores: std::collections::HashSet<&str> = defined
        .values()
        .filter_map(|c| match &***c {
            Connection::Connect(channel) => channel.store.as_ref().map(|s| s.connection.as_str()),
            _ => None,
        })
        .collect();
    let webhooks = entries
        .iter()
        .filter_map(|e| match &e.key {
            ConfigKey::Webhook(key) => Some((e, key)),
            ConfigKey::Connection(_) => None,
        })
        .map(|(e, key)| {
            let result = parse_webhook(e.raw.as_bytes(), &secrets(&e.key), rules).and_then(|w| {
                if let Some(missing) = w
                    .destinations
                    .iter()
                    .filter_map(|d| d.connection())
                    .find(|c| !defined.contains_key(c))
                {
                    return Err(ConfigError::Invalid(format!(
                        "connection `{missing}` is not defined (requests would wait in the spool, \
                         202, until it is; with \"spool\": \"off\" they get 503 connection_missing)"
                    )));
                }
                fits_connections(
                    &w,
                    key.namespace.as_str(),
                    |name| defined.get(name).map(|c| std::sync::Arc::clone(c)),
                    |name| stores.contains(name.as_str()),
                )
            });
            (e, result)
        })
        .collect::<Vec<_>>();
    // A channel kept in Redis names a redis connection of this config.
    let connections: Vec<_> = connections
        .iter()
        .map(|(e, result)| {
            let result = match result {
                Ok(connection) => match &**connection {
                    Connection::Connect(channel) => channel
                        .store
                        .as_ref()
                        .map_or(Ok(()), |store| kept_in(&store.connection, &defined)),
                    _ => Ok(()),
                },
                Err(error) => Err(error.clone()),
            };
            (*e, result)
        })
        .collect();
    for (entry, result) in connections.into_iter().chain(webhooks) {
        match result {
            Ok(()) => report.ok += 1,
            Err(reason) => report.problem(&entry.source, reason),
        }
    }
}

/// The keys of SEAL_KEYS_FILE, for the tools that validate entries as the server does.
pub fn seal_keys(settings: &crate::settings::Settings) -> Result<Keyring, String> {
    Keyring::from_setting(settings.seal_keys_file.as_deref()).map_err(|e| e.to_string())
}

/// A JSON object of raw entries, each value exactly as stored (key order, numbers, spacing);
/// values that are not JSON are reported, not dropped silently.
pub fn object_of(entries: &[(String, String)], report: &mut Report) -> Result<String, String> {
    let mut map = std::collections::BTreeMap::new();
    for (name, raw) in entries {
        match serde_json::from_str::<Box<serde_json::value::RawValue>>(raw) {
            Ok(value) => {
                map.insert(name.as_str(), value);
            }
            Err(e) => report.problem(name, format!("value is not JSON, not exported: {e}")),
        }
    }
    serde_json::to_string_pretty(&map).map_err(|e| e.to_string())
}
