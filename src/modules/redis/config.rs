//! `module-config` of the Redis modules.

use serde::Deserialize;

use crate::config::ConfigError;

/// `module: "redis_publish"`: PUBLISH the envelope on a channel (fire-and-forget for Redis:
/// subscribers that are not connected miss it; use `redis_stream` for durability).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    pub channel: String,
}

/// `module: "redis_stream"`: XADD the envelope's fields (the durable Redis choice).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub stream: String,
    /// Approximate cap on the stream's length (`MAXLEN ~`).
    #[serde(default)]
    pub maxlen: Option<u64>,
}

/// Which end of the list new envelopes go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Lpush,
    Rpush,
}

/// `module: "redis_list"`: LPUSH/RPUSH the envelope, optionally trimmed to `max_length`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    pub key: String,
    #[serde(default)]
    pub direction: Direction,
    /// Keep at most this many entries (the newest), trimmed in the same transaction.
    #[serde(default)]
    pub max_length: Option<u64>,
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(ConfigError::Invalid(format!("`{field}` must not be empty")))
    } else {
        Ok(())
    }
}

/// The longest stream or list a destination may keep (`maxlen`, `max_length`).
pub const MAX_LENGTH: u64 = 1_000_000_000;

fn positive(field: &str, value: Option<u64>) -> Result<(), ConfigError> {
    match value {
        Some(n) if !(1..=MAX_LENGTH).contains(&n) => Err(ConfigError::Invalid(format!(
            "`{field}` is {n}; it must be between 1 and {MAX_LENGTH}"
        ))),
        _ => Ok(()),
    }
}

impl PublishConfig {
    pub fn validate(self) -> Result<Self, ConfigError> {
        non_empty("channel", &self.channel)?;
        Ok(self)
    }
}

impl StreamConfig {
    pub fn validate(self) -> Result<Self, ConfigError> {
        non_empty("stream", &self.stream)?;
        positive("maxlen", self.maxlen)?;
        Ok(self)
    }
}

impl ListConfig {
    pub fn validate(self) -> Result<Self, ConfigError> {
        non_empty("key", &self.key)?;
        positive("max_length", self.max_length)?;
        Ok(self)
    }
}
