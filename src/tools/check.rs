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
    validate(&entries, Rules::from_settings(settings), &mut report);
    Ok(report)
}
