//! `switchyard check`: validate files or etcd exactly as the server would.

use std::path::PathBuf;

use super::{etcd_entries, file_entries, validate, Report};
use crate::provider::Rules;
use crate::{
    keys::KeyLayout,
    provider::etcd::{admin, EtcdLink},
    settings::Settings,
};

/// Where to check.
pub enum Source {
    Files {
        webhooks: PathBuf,
        connections: PathBuf,
    },
    Etcd,
}

/// `--explain`: a request to route on paper.
pub struct Explain {
    webhook: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    query: Option<String>,
}

impl Explain {
    /// The request from the command line: the body file and `Name: value` headers.
    pub fn read(
        webhook: String,
        body: Option<PathBuf>,
        headers: &[String],
        query: Option<String>,
    ) -> Result<Self, String> {
        let body = match body {
            Some(path) => {
                std::fs::read(&path).map_err(|e| format!("--body {}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        let headers = headers
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(name, value)| {
                        (name.trim().to_ascii_lowercase(), value.trim().to_owned())
                    })
                    .ok_or_else(|| format!("--header {h:?}: write it as `Name: value`"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            webhook,
            body,
            headers,
            query,
        })
    }
}

pub async fn run(
    settings: &Settings,
    source: Source,
    explain: Option<Explain>,
) -> Result<Report, String> {
    let mut report = Report::default();
    let entries = match source {
        Source::Files {
            webhooks,
            connections,
        } => file_entries(
            &webhooks,
            &connections,
            &settings.etcd_namespace,
            &mut report,
        )?,
        Source::Etcd => {
            let layout = KeyLayout::new(&settings.etcd_prefix);
            let kvs = admin::read_prefix(&EtcdLink::from_settings(settings), layout.prefix())
                .await
                .map_err(|e| e.to_string())?;
            etcd_entries(&layout, kvs, &mut report)
        }
    };
    let keys = super::seal_keys(settings)?;
    validate(&entries, Rules::from_settings(settings), &keys, &mut report);
    warn_slow_answers(settings, &keys, &entries, &mut report);
    if let Some(explain) = explain {
        report.explained = explained(settings, &keys, &entries, &explain)?;
    }
    Ok(report)
}

/// How the request of `--explain` would be routed, one line per condition.
fn explained(
    settings: &Settings,
    keys: &crate::config::seal::Keyring,
    entries: &[super::Entry],
    explain: &Explain,
) -> Result<Vec<String>, String> {
    use crate::keys::{ConfigKey, Namespace, WebhookId, WebhookKey};
    let (namespace, id) = match explain.webhook.split_once('/') {
        Some((namespace, id)) => (Namespace::parse(namespace).map_err(|e| e.to_string())?, id),
        None => (settings.etcd_namespace.clone(), explain.webhook.as_str()),
    };
    let key = WebhookKey::new(namespace, WebhookId::parse(id).map_err(|e| e.to_string())?);
    let entry = entries
        .iter()
        .find(|e| e.key == ConfigKey::Webhook(key.clone()))
        .ok_or_else(|| format!("--explain: no webhook `{key}` in this config"))?;
    let webhook = crate::provider::parse_webhook(
        entry.raw.as_bytes(),
        &crate::config::Secrets::new(&crate::config::env_subst::process_env, keys, &entry.key),
        Rules::from_settings(settings),
    )
    .map_err(|e| format!("--explain: `{key}` is invalid: {e}"))?;
    let headers = |name: &str| {
        explain
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let request = crate::condition::Request::new(&headers, explain.query.as_deref(), &explain.body);
    let mut lines = vec![format!("explain {key}:")];
    let passed = match &webhook.filter {
        Some(filter) => {
            lines.push("  filter:".into());
            filter.explain(&request, 2, &mut lines)
        }
        None => true,
    };
    let mut chosen = Vec::new();
    for (index, (destination, when)) in webhook.destinations.iter().zip(&webhook.when).enumerate() {
        let name = match (destination.mapping(), destination.target()) {
            (Some(_), _) => format!("chain[{index}] {} (mapped target)", destination.name()),
            (None, Some(target)) => format!("chain[{index}] {} ({target})", destination.name()),
            (None, None) => format!("chain[{index}] {}", destination.name()),
        };
        let mut taken = match when {
            Some(when) => {
                lines.push(format!("  {name}, when:"));
                when.explain(&request, 2, &mut lines)
            }
            None => {
                lines.push(format!("  {name}: every request"));
                true
            }
        };
        let mut name = name;
        if let (true, Some(mapping)) = (taken, destination.mapping()) {
            let (target, line) = mapping.explain(&request);
            lines.push(format!("    target: {line}"));
            match target.and_then(|at| mapping.targets().get(at)) {
                Some(target) => {
                    name = format!("chain[{index}] {} ({target})", destination.name());
                }
                None => taken = false,
            }
        }
        if taken {
            chosen.push(name);
        }
    }
    lines.push(if !passed || chosen.is_empty() {
        "  => filtered: answered 200 {\"status\":\"filtered\"}, delivered nowhere".into()
    } else {
        format!("  => delivered to: {}", chosen.join(", "))
    });
    Ok(lines)
}

/// Warns about webhooks that may answer after their provider gives up (Slack, Zoom and Okta
/// after 3 s, Shopify after 5 s, GitHub after 10 s): the provider then counts a delivery that
/// arrives as failed, retries it or disables the endpoint.
fn warn_slow_answers(
    settings: &Settings,
    keys: &crate::config::seal::Keyring,
    entries: &[super::Entry],
    report: &mut Report,
) {
    use crate::{keys::ConfigKey, spool::SpoolMode};
    let spool_on = settings.spool_dir().is_some();
    for entry in entries {
        if !matches!(entry.key, ConfigKey::Webhook(_)) {
            continue;
        }
        let Ok(webhook) = crate::provider::parse_webhook(
            entry.raw.as_bytes(),
            &crate::config::Secrets::new(&crate::config::env_subst::process_env, keys, &entry.key),
            Rules::from_settings(settings),
        ) else {
            continue;
        };
        let Some((provider, limit)) = webhook.checks.answer_limit else {
            continue;
        };
        // The longest a request waits for its destinations before it is answered.
        let (worst, why, fix) = match (spool_on, webhook.spool) {
            (true, SpoolMode::Always) => continue,
            (true, SpoolMode::OnFailure) => (
                webhook.timeout.min(settings.spool_handoff()),
                "SPOOL_HANDOFF_MS, capped by timeout_ms",
                "lower SPOOL_HANDOFF_MS or timeout_ms, or use \"spool\": \"always\"",
            ),
            (true, SpoolMode::Off) => (
                webhook.timeout,
                "timeout_ms",
                "lower timeout_ms or let the spool take failed deliveries",
            ),
            (false, _) => (
                webhook.timeout,
                "timeout_ms; the spool is off",
                "lower timeout_ms",
            ),
        };
        if worst > limit {
            report.warning(
                &entry.source,
                format!(
                    "may answer after {} ms ({why}), but {provider} gives up after {} ms: {fix}",
                    worst.as_millis(),
                    limit.as_millis()
                ),
            );
        }
    }
}
