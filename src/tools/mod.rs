//! Config tooling, as subcommands of the same binary: `check`, `migrate`, `export`.
//!
//! Each validates entries exactly as the server does (same parsers, same environment
//! substitution) and prints one line per problem with its key and reason.

pub mod check;
pub mod export;
pub mod migrate;

use std::{fmt::Write as _, path::Path};

use serde_json::{Map, Value};

use crate::{
    config::env_subst::process_env,
    keys::{ConfigKey, ConnectionName, KeyLayout, KeyMatch, Namespace, WebhookId, WebhookKey},
    provider::{file::read_entries, parse_connection, parse_webhook, Rules},
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
    pub ok: usize,
}

impl Report {
    pub fn problem(&mut self, source: &str, reason: impl std::fmt::Display) {
        self.problems.push(format!("{source}: {reason}"));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            let _ = writeln!(out, "invalid  {p}");
        }
        let _ = writeln!(out, "{} valid, {} invalid", self.ok, self.problems.len());
        out
    }
}

/// Reads the two files of the file backend into entries of `namespace`.
pub fn file_entries(
    webhooks: &Path,
    connections: &Path,
    namespace: &Namespace,
    report: &mut Report,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut read = |path: &Path, webhook: bool| match read_entries(path) {
        Ok(map) => {
            for (name, value) in map {
                let source = format!("{}#{name}", path.display());
                let key = if webhook {
                    WebhookId::parse(&name)
                        .map(|id| ConfigKey::Webhook(WebhookKey::new(namespace.clone(), id)))
                } else {
                    ConnectionName::parse(&name).map(ConfigKey::Connection)
                };
                match key {
                    Ok(key) => entries.push(Entry {
                        source,
                        key,
                        raw: value.to_string(),
                    }),
                    Err(reason) => report.problem(&source, reason),
                }
            }
        }
        Err(e) => report.problem(&path.display().to_string(), e),
    };
    read(webhooks, true);
    read(connections, false);
    entries
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
            KeyMatch::Valid(key) => entries.push(Entry {
                source,
                key,
                raw: String::from_utf8_lossy(&value).into_owned(),
            }),
            KeyMatch::Invalid(reason) => report.problem(&source, reason),
            KeyMatch::Foreign => {}
        }
    }
    entries
}

/// Validates every entry as the server would, plus cross-entry checks (connections named by
/// webhooks must exist).
pub fn validate(entries: &[Entry], rules: Rules, report: &mut Report) {
    let env = &process_env;
    let connections: std::collections::HashSet<&ConnectionName> = entries
        .iter()
        .filter_map(|e| match &e.key {
            ConfigKey::Connection(name) => parse_connection(e.raw.as_bytes(), env)
                .is_ok()
                .then_some(name),
            ConfigKey::Webhook(_) => None,
        })
        .collect();
    for entry in entries {
        let result = match &entry.key {
            ConfigKey::Webhook(_) => parse_webhook(entry.raw.as_bytes(), env, rules).and_then(|w| {
                match w
                    .destinations
                    .iter()
                    .filter_map(|d| d.connection())
                    .find(|c| !connections.contains(c))
                {
                    Some(missing) => Err(crate::config::ConfigError::Invalid(format!(
                        "connection `{missing}` is not defined (requests would get 503 connection_missing)"
                    ))),
                    None => Ok(()),
                }
            }),
            ConfigKey::Connection(_) => parse_connection(entry.raw.as_bytes(), env).map(|_| ()),
        };
        match result {
            Ok(()) => report.ok += 1,
            Err(reason) => report.problem(&entry.source, reason),
        }
    }
}

/// Pretty JSON of an object of raw entries (unparsable values are reported, not dropped silently).
pub fn object_of(entries: &[(String, String)], report: &mut Report) -> Value {
    let mut map = Map::new();
    for (name, raw) in entries {
        match serde_json::from_str::<Value>(raw) {
            Ok(value) => {
                map.insert(name.clone(), value);
            }
            Err(e) => report.problem(name, format!("value is not JSON, not exported: {e}")),
        }
    }
    Value::Object(map)
}
