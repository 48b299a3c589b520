//! `switchyard migrate`: write a file-backend config into etcd under the key layout.
//!
//! Nothing is skipped silently: when any entry is invalid, every problem is printed and nothing
//! is written. Keys that already hold a different value (a connection in `global/` is shared by
//! every namespace) are not overwritten without `--force`; values are written exactly as they
//! are in the files (key order, formatting, `{$VAR}` placeholders).

use std::{collections::HashMap, fmt::Write as _, path::Path};

use serde_json::Value;

use super::{file_entries, validate, Report};
use crate::{
    keys::{ConfigKey, KeyLayout, Namespace},
    provider::{
        etcd::{admin, EtcdLink},
        Rules,
    },
    settings::Settings,
};

/// What happens to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not in etcd yet.
    Create,
    /// In etcd with the same JSON value: left alone.
    Unchanged,
    /// In etcd with another value: written only with `--force`.
    Overwrite,
}

/// What was (or would be) written.
pub struct Plan {
    pub steps: Vec<(Action, String, String)>,
    pub report: Report,
    /// Whether anything was written.
    pub written: bool,
}

impl Plan {
    /// Keys that hold another value and were not overwritten.
    pub fn conflicts(&self, force: bool) -> usize {
        if force {
            return 0;
        }
        self.steps
            .iter()
            .filter(|(a, _, _)| *a == Action::Overwrite)
            .count()
    }

    pub fn render(&self, force: bool) -> String {
        let mut out = self.report.render();
        for (action, key, value) in &self.steps {
            let word = match (action, self.written, force) {
                (Action::Unchanged, ..) => "unchanged",
                (Action::Create, true, _) => "put",
                (Action::Create, false, _) => "would put",
                (Action::Overwrite, true, _) => "overwrote",
                (Action::Overwrite, false, true) => "would overwrite",
                (Action::Overwrite, false, false) => "conflict",
            };
            let _ = writeln!(out, "{word}  {key}  {value}");
        }
        out
    }
}

pub async fn run(
    settings: &Settings,
    webhooks: &Path,
    connections: &Path,
    namespace: &Namespace,
    dry_run: bool,
    force: bool,
) -> Result<Plan, String> {
    let mut report = Report::default();
    let entries = file_entries(webhooks, connections, namespace, &mut report)?;
    validate(
        &entries,
        Rules::from_settings(settings),
        &super::seal_keys(settings)?,
        &mut report,
    );
    let layout = KeyLayout::new(&settings.etcd_prefix);
    if !report.problems.is_empty() {
        return Ok(Plan {
            steps: Vec::new(),
            report,
            written: false,
        });
    }
    let link = EtcdLink::from_settings(settings);
    let existing: HashMap<String, (Vec<u8>, i64)> =
        admin::read_prefix_revisions(&link, layout.prefix())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(k, v, revision)| (String::from_utf8_lossy(&k).into_owned(), (v, revision)))
            .collect();
    let mut revisions = HashMap::new();
    let steps: Vec<(Action, String, String)> = entries
        .iter()
        .map(|e| {
            let key = match &e.key {
                ConfigKey::Webhook(key) => layout.webhook_key(key),
                ConfigKey::Connection(name) => layout.connection_key(name),
            };
            let action = match existing.get(&key) {
                None => Action::Create,
                Some((old, _)) if same_json(old, e.raw.as_bytes()) => Action::Unchanged,
                Some(_) => Action::Overwrite,
            };
            revisions.insert(key.clone(), existing.get(&key).map_or(0, |(_, r)| *r));
            (action, key, e.raw.clone())
        })
        .collect();
    let conflicts = steps.iter().any(|(a, _, _)| *a == Action::Overwrite);
    let write = !dry_run && (force || !conflicts);
    if write {
        // Each key is written only if it still holds what the plan was made from.
        let puts: Vec<(String, String, i64)> = steps
            .iter()
            .filter(|(a, _, _)| *a != Action::Unchanged)
            .map(|(_, k, v)| (k.clone(), v.clone(), revisions.get(k).copied().unwrap_or(0)))
            .collect();
        let unchanged = admin::put_all_if_unchanged(&link, &puts)
            .await
            .map_err(|e| e.to_string())?;
        if !unchanged {
            return Err(
                "a key changed in etcd while migrating; the rest was not written: run it again \
                 to see the new plan"
                    .into(),
            );
        }
    }
    Ok(Plan {
        steps,
        report,
        written: write,
    })
}

/// Whether two stored values are the same JSON (formatting aside).
fn same_json(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
