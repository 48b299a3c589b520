//! `json_schema`: the payload must satisfy a JSON Schema (compiled once per config version).

use std::sync::Arc;

use serde_json::Value;

use crate::config::ConfigError;

/// A compiled schema. Remote `$ref`s are not fetched (no network from config).
#[derive(Clone)]
pub struct Schema(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

/// Longest violation message echoed to the sender.
const MAX_MESSAGE: usize = 200;

impl Schema {
    pub fn compile(schema: &Value) -> Result<Self, ConfigError> {
        jsonschema::validator_for(schema)
            .map(|v| Self(Arc::new(v)))
            .map_err(|e| ConfigError::Invalid(format!("`json_schema` is not a valid schema: {e}")))
    }

    /// The first violation as `(instance path, message)`.
    pub fn first_violation(&self, payload: &Value) -> Option<(String, String)> {
        let error = self.0.iter_errors(payload).next()?;
        let path = error.instance_path().to_string();
        let mut message = error.to_string();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Some((if path.is_empty() { "/".into() } else { path }, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_the_path_of_the_first_violation() {
        let s = Schema::compile(&json!({
            "type": "object", "required": ["action"],
            "properties": {"repository": {"type": "object",
                "properties": {"id": {"type": "integer"}}}}
        }))
        .unwrap();
        assert!(s
            .first_violation(&json!({"action": "x", "repository": {"id": 1}}))
            .is_none());
        let (path, _) = s
            .first_violation(&json!({"action": "x", "repository": {"id": "one"}}))
            .unwrap();
        assert_eq!(path, "/repository/id");
        let (path, message) = s.first_violation(&json!({})).unwrap();
        assert_eq!(path, "/");
        assert!(message.contains("action"), "{message}");
    }

    #[test]
    fn invalid_schema_is_a_config_error() {
        assert!(Schema::compile(&json!({"type": 12})).is_err());
    }
}
