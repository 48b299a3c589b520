//! `switchyard migrate`: write a file-backend config into etcd under the key layout.
//!
//! Nothing is skipped silently: when any entry is invalid, every problem is printed and nothing
//! is written.

use std::{fmt::Write as _, path::Path};

use super::{file_entries, validate, Report};
use crate::provider::Rules;
use crate::{
    keys::{ConfigKey, KeyLayout, Namespace},
    provider::etcd::{admin, EtcdLink},
    settings::Settings,
};

/// What was (or would be) written.
pub struct Plan {
    pub puts: Vec<(String, String)>,
    pub report: Report,
}

impl Plan {
    pub fn render(&self, dry_run: bool) -> String {
        let mut out = self.report.render();
        let verb = if dry_run { "would put" } else { "put" };
        for (key, value) in &self.puts {
            let _ = writeln!(out, "{verb}  {key}  {value}");
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
) -> Result<Plan, String> {
    let mut report = Report::default();
    let entries = file_entries(webhooks, connections, namespace, &mut report);
    validate(&entries, Rules::from_settings(settings), &mut report);
    let layout = KeyLayout::new(&settings.etcd_prefix);
    if !report.problems.is_empty() {
        return Ok(Plan {
            puts: Vec::new(),
            report,
        });
    }
    let puts: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            let key = match &e.key {
                ConfigKey::Webhook(key) => layout.webhook_key(key),
                ConfigKey::Connection(name) => layout.connection_key(name),
            };
            (key, e.raw.clone())
        })
        .collect();
    if !dry_run {
        admin::put_all(&EtcdLink::from_settings(settings), &puts)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Plan { puts, report })
}
