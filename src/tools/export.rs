//! `switchyard export`: print one namespace's webhooks as a `webhooks.json` file.

use super::{object_of, Report};
use crate::{
    keys::{ConfigKey, KeyLayout, KeyMatch, Namespace},
    provider::etcd::{admin, EtcdLink},
    settings::Settings,
};

pub async fn run(settings: &Settings, namespace: &Namespace) -> Result<(String, Report), String> {
    let layout = KeyLayout::new(&settings.etcd_prefix);
    let kvs = admin::read_prefix(
        &EtcdLink::from_settings(settings),
        &layout.namespace_prefix(namespace),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut report = Report::default();
    let mut entries = Vec::new();
    for (key, value) in kvs {
        match layout.parse(&key) {
            KeyMatch::Valid(ConfigKey::Webhook(key)) => {
                entries.push((
                    key.id.to_string(),
                    String::from_utf8_lossy(&value).into_owned(),
                ));
            }
            _ => report.problem(
                &String::from_utf8_lossy(&key),
                "not a webhook key; not exported",
            ),
        }
    }
    let object = object_of(&entries, &mut report);
    report.ok = entries.len() - report.problems.len().min(entries.len());
    let text = serde_json::to_string_pretty(&object).map_err(|e| e.to_string())?;
    Ok((text, report))
}
