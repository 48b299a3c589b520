//! What a config entry *means*: parsing and validating webhook and connection entries.
//!
//! Nothing here does I/O; providers hand raw bytes in and get validated values (or a reason) out.

pub mod connection;
pub mod env_subst;
pub mod secret;
pub mod webhook;

pub use connection::Connection;
pub use webhook::{DataType, Webhook};

use serde_json::Value;

/// Why an entry was refused. The provider logs it with the key and keeps the last good value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("value is not valid JSON: {0}")]
    Json(String),
    #[error("value must be a JSON object")]
    NotAnObject,
    #[error(transparent)]
    MissingVar(#[from] env_subst::MissingVar),
    #[error("{0}")]
    Invalid(String),
}

/// Variable lookup used for `{$VAR}` substitution.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses an entry's raw bytes into a JSON object with environment references substituted.
pub(crate) fn parse_object(bytes: &[u8], env: EnvLookup<'_>) -> Result<Value, ConfigError> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ConfigError::NotAnObject);
    }
    env_subst::substitute_value(&mut value, env)?;
    Ok(value)
}

impl Connection {
    /// Parses a connection entry's raw bytes.
    pub fn from_bytes(bytes: &[u8], env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        Self::from_value(parse_object(bytes, env)?)
    }
}
