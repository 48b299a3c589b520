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

pub async fn run(settings: &Settings, source: Source) -> Result<Report, String> {
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
    Ok(report)
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
