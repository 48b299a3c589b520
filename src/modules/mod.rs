//! Destinations: the `Module` trait, what a module is handed (`Delivery`), and the registry.
//!
//! Adding a module means one file or folder here, one `ModuleConfig` variant and one arm in
//! [`ModuleConfig::parse`] and [`ModuleConfig::build`].

pub mod log;

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use serde_json::Value;

use crate::{
    config::ConfigError,
    keys::{Namespace, WebhookId},
};

/// A destination a webhook's payload is handed to (`log`, `kafka`, `redis_stream`, ...).
#[async_trait::async_trait]
pub trait Module: Send + Sync + std::fmt::Debug {
    /// The `module` name used in config, logs and metric labels.
    fn name(&self) -> &'static str;
    /// Returns once the destination has acknowledged the payload (Kafka delivery report,
    /// Redis reply). `Err` makes the sender retry (503); it never means "dropped".
    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError>;
}

/// One accepted request, built once and borrowed by every destination of the webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub namespace: Namespace,
    pub webhook: WebhookId,
    pub request_id: String,
    pub received_at: SystemTime,
    /// Request headers with credentials and signatures removed (see `http::headers`).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Why a destination did not take a payload. Every variant makes the sender retry.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The destination refused or could not be reached.
    #[error("module `{module}` could not deliver: {reason}")]
    Unavailable {
        module: &'static str,
        reason: String,
    },
    /// No acknowledgement within the webhook's timeout.
    #[error("no acknowledgement within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
}

/// The validated `module` + `module-config` of one destination (the registry's closed set).
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleConfig {
    Log(log::LogConfig),
}

/// Names accepted in `module`, listed in errors.
pub const MODULE_NAMES: &[&str] = &["log"];

impl ModuleConfig {
    /// Parses `module-config` for the module called `name`. Pure: no I/O.
    pub fn parse(name: &str, config: Option<Value>) -> Result<Self, ConfigError> {
        let config = config.unwrap_or_else(|| Value::Object(Default::default()));
        match name {
            "log" => Ok(Self::Log(from_config(name, config)?)),
            "redis_rq" | "redis-rq" => Err(ConfigError::Invalid(
                "module `redis_rq` is not supported (RQ jobs are Python pickles); \
                 use `redis_list` for a queue or `redis_stream` for a durable log"
                    .into(),
            )),
            other => Err(ConfigError::Invalid(format!(
                "unknown module `{other}`; expected one of {}",
                MODULE_NAMES.join(", ")
            ))),
        }
    }

    /// The module name as written in config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Log(_) => "log",
        }
    }

    /// Builds the live module. Does no I/O.
    pub fn build(&self) -> Arc<dyn Module> {
        match self {
            Self::Log(config) => Arc::new(log::LogModule::new(config.clone())),
        }
    }
}

fn from_config<T: serde::de::DeserializeOwned>(
    name: &str,
    config: Value,
) -> Result<T, ConfigError> {
    serde_json::from_value(config)
        .map_err(|e| ConfigError::Invalid(format!("`module-config` of module `{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_module_lists_the_valid_ones() {
        let err = ModuleConfig::parse("kafak", None).unwrap_err().to_string();
        assert!(err.contains("kafak"), "{err}");
        assert!(err.contains("log"), "{err}");
    }

    #[test]
    fn redis_rq_points_to_the_replacements() {
        let err = ModuleConfig::parse("redis_rq", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis_list") && err.contains("redis_stream"),
            "{err}"
        );
    }

    #[test]
    fn module_config_rejects_unknown_fields() {
        let err = ModuleConfig::parse("log", Some(json!({"pretty": true})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pretty"), "{err}");
    }

    #[test]
    fn log_without_config_uses_defaults() {
        assert_eq!(
            ModuleConfig::parse("log", None).unwrap(),
            ModuleConfig::Log(log::LogConfig::default())
        );
    }
}
