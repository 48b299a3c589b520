//! Destinations: the `Module` trait, what a module is handed (`Delivery`), and the registry.
//!
//! Adding a module means one file or folder here, one `ModuleConfig` variant and one arm in
//! [`ModuleConfig::parse`] and [`ModuleConfig::build`].

pub mod kafka;
pub mod log;
pub mod redis;

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use serde_json::Value;

use crate::{
    config::ConfigError,
    connections::ConnectionPool,
    keys::{ConnectionName, Namespace, WebhookId},
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
    /// The body is known to be valid JSON (checked at the edge for `data_type: json`).
    pub json: bool,
}

impl Delivery {
    /// A forwardable request header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `2023-11-14T22:13:20.123Z`: the timestamp format of every module.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
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
    /// The webhook names a connection that does not exist (yet).
    #[error("connection `{name}` does not exist")]
    ConnectionMissing { name: ConnectionName },
    /// The named connection is of another type than the module needs.
    #[error("connection `{name}` is of type {found}; module `{module}` needs {expected}")]
    ConnectionMismatch {
        name: ConnectionName,
        module: &'static str,
        expected: &'static str,
        found: &'static str,
    },
}

/// The validated `module` + `module-config` (+ `connection`) of one destination: the registry's
/// closed set.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleConfig {
    Log(log::LogConfig),
    Kafka(kafka::KafkaConfig, ConnectionName),
    Redis(redis::Command, ConnectionName),
}

/// Names accepted in `module`, listed in errors.
pub const MODULE_NAMES: &[&str] = &[
    "log",
    "kafka",
    "redis_publish",
    "redis_stream",
    "redis_list",
];

fn needs(name: &str, connection: Option<ConnectionName>) -> Result<ConnectionName, ConfigError> {
    connection.ok_or_else(|| {
        ConfigError::Invalid(format!(
            "module `{name}` needs a `connection` (a name under global/connections/)"
        ))
    })
}

impl ModuleConfig {
    /// Parses `module-config` for the module called `name`. Pure: no I/O.
    pub fn parse(
        name: &str,
        config: Option<Value>,
        connection: Option<ConnectionName>,
    ) -> Result<Self, ConfigError> {
        let config = config.unwrap_or_else(|| Value::Object(Default::default()));
        match name {
            "log" => Ok(Self::Log(from_config(name, config)?)),
            "kafka" => {
                let c: kafka::KafkaConfig = from_config(name, config)?;
                Ok(Self::Kafka(c.validate()?, needs(name, connection)?))
            }
            "redis_publish" => {
                let c: redis::PublishConfig = from_config(name, config)?;
                let command = redis::Command::Publish(c.validate()?);
                Ok(Self::Redis(command, needs(name, connection)?))
            }
            "redis_stream" => {
                let c: redis::StreamConfig = from_config(name, config)?;
                let command = redis::Command::Stream(c.validate()?);
                Ok(Self::Redis(command, needs(name, connection)?))
            }
            "redis_list" => {
                let c: redis::ListConfig = from_config(name, config)?;
                let command = redis::Command::List(c.validate()?);
                Ok(Self::Redis(command, needs(name, connection)?))
            }
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
            Self::Kafka(..) => "kafka",
            Self::Redis(redis::Command::Publish(_), _) => "redis_publish",
            Self::Redis(redis::Command::Stream(_), _) => "redis_stream",
            Self::Redis(redis::Command::List(_), _) => "redis_list",
        }
    }

    /// The connection this destination uses, if any.
    pub fn connection(&self) -> Option<&ConnectionName> {
        match self {
            Self::Log(_) => None,
            Self::Kafka(_, c) | Self::Redis(_, c) => Some(c),
        }
    }

    /// Builds the live module. Does no I/O: clients come from the pool on first delivery.
    pub fn build(&self, pool: &ConnectionPool) -> Arc<dyn Module> {
        match self {
            Self::Log(config) => Arc::new(log::LogModule::new(config.clone())),
            Self::Kafka(config, connection) => Arc::new(kafka::KafkaModule::new(
                config.clone(),
                connection.clone(),
                pool.clone(),
            )),
            Self::Redis(command, connection) => Arc::new(redis::RedisModule::new(
                command.clone(),
                connection.clone(),
                pool.clone(),
            )),
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
        let err = ModuleConfig::parse("kafak", None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafak"), "{err}");
        assert!(
            err.contains("log, kafka, redis_publish, redis_stream, redis_list"),
            "{err}"
        );
    }

    #[test]
    fn connection_modules_need_a_connection() {
        let err = ModuleConfig::parse("kafka", Some(json!({"topic": "t"})), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection"), "{err}");
        let conn = ConnectionName::parse("c").ok();
        for (name, config) in [
            ("kafka", json!({"topic": "t"})),
            ("redis_list", json!({"key": "k"})),
            ("redis_stream", json!({"stream": "s"})),
            ("redis_publish", json!({"channel": "c"})),
        ] {
            let parsed = ModuleConfig::parse(name, Some(config), conn.clone()).unwrap();
            assert_eq!(parsed.name(), name);
        }
    }

    #[test]
    fn module_configs_are_validated() {
        let conn = ConnectionName::parse("c").ok();
        for (name, config) in [
            ("kafka", json!({"topic": "bad topic"})),
            ("kafka", json!({})),
            ("redis_list", json!({"key": "k", "direction": "middle"})),
            ("redis_list", json!({"key": "k", "max_length": 0})),
            ("redis_stream", json!({"stream": ""})),
            ("redis_publish", json!({"channel": "c", "extra": 1})),
        ] {
            assert!(
                ModuleConfig::parse(name, Some(config.clone()), conn.clone()).is_err(),
                "{name} {config}"
            );
        }
    }

    #[test]
    fn redis_rq_points_to_the_replacements() {
        let err = ModuleConfig::parse("redis_rq", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis_list") && err.contains("redis_stream"),
            "{err}"
        );
    }

    #[test]
    fn module_config_rejects_unknown_fields() {
        let err = ModuleConfig::parse("log", Some(json!({"pretty": true})), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pretty"), "{err}");
    }

    #[test]
    fn log_without_config_uses_defaults() {
        assert_eq!(
            ModuleConfig::parse("log", None, None).unwrap(),
            ModuleConfig::Log(log::LogConfig::default())
        );
    }
}
