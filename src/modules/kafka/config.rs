//! `module-config` of the `kafka` module.

use serde::Deserialize;

use crate::config::ConfigError;

/// Where a record's key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// A JSON pointer into the payload, e.g. `/repository/id` (no key when absent).
    JsonPointer(String),
    /// A request header, e.g. `X-GitHub-Delivery` (no key when absent).
    Header(String),
}

/// `module: "kafka"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Topic to produce to (must exist).
    pub topic: String,
    /// Record key source; none by default (the partitioner spreads records).
    #[serde(default)]
    pub key: Option<KeySource>,
    /// Fixed partition; by default the partitioner chooses (by key when there is one).
    #[serde(default)]
    pub partition: Option<i32>,
    /// Request headers copied into Kafka headers (credential headers are never copied).
    #[serde(default)]
    pub forward_headers: Vec<String>,
}

/// The highest fixed partition accepted (far above any real topic's count).
pub const MAX_PARTITION: i32 = 1_000_000;

impl KafkaConfig {
    /// Checks what serde cannot: the topic grammar, the pointer syntax, the partition.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        validate_topic(&self.topic)?;
        if let Some(KeySource::JsonPointer(p)) = &self.key {
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(ConfigError::Invalid(format!(
                    "`key.json_pointer` {p:?} must be empty or start with `/`"
                )));
            }
        }
        if let Some(KeySource::Header(h)) = &self.key {
            if h.is_empty() {
                return Err(ConfigError::Invalid(
                    "`key.header` must not be empty".into(),
                ));
            }
        }
        if let Some(p) = self.partition.filter(|p| !(0..=MAX_PARTITION).contains(p)) {
            return Err(ConfigError::Invalid(format!(
                "`partition` is {p}; it must be between 0 and {MAX_PARTITION}"
            )));
        }
        for h in &mut self.forward_headers {
            *h = h.to_ascii_lowercase();
        }
        Ok(self)
    }
}

/// Kafka's topic grammar: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), ConfigError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "`topic` {topic:?} is not a valid Kafka topic name \
             (1-249 characters of [a-zA-Z0-9._-], not `.` or `..`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_grammar() {
        for good in ["events", "a.b_c-d", &"x".repeat(249)] {
            assert!(validate_topic(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "has space", "ü", &"x".repeat(250)] {
            let err = validate_topic(bad).unwrap_err().to_string();
            assert!(
                err.contains("is not a valid Kafka topic name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn key_sources_parse() {
        let c: KafkaConfig =
            serde_json::from_str(r#"{"topic":"t","key":{"json_pointer":"/repository/id"}}"#)
                .unwrap();
        assert_eq!(c.key, Some(KeySource::JsonPointer("/repository/id".into())));
        let c: KafkaConfig =
            serde_json::from_str(r#"{"topic":"t","key":{"header":"X-GitHub-Delivery"}}"#).unwrap();
        assert_eq!(c.key, Some(KeySource::Header("X-GitHub-Delivery".into())));
        let err = serde_json::from_str::<KafkaConfig>(r#"{"topic":"t","key":{"body":1}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `body`"), "{err}");
    }

    #[test]
    fn bad_pointer_and_partition_are_refused() {
        let c: KafkaConfig =
            serde_json::from_str(r#"{"topic":"t","key":{"json_pointer":"a"}}"#).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("must be empty or start with `/`"), "{err}");
        let c: KafkaConfig = serde_json::from_str(r#"{"topic":"t","partition":-1}"#).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(err, "`partition` is -1; it must be between 0 and 1000000");
    }
}
