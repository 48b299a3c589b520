//! `json_schema`: the payload must satisfy a JSON Schema (compiled once per config version).

use std::sync::Arc;

use serde_json::Value;

use crate::config::ConfigError;

/// Bytes one compiled pattern (and its lazy DFA cache) may take.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A compiled schema. Remote `$ref`s are not fetched (no network from config).
#[derive(Clone)]
pub struct Schema(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Patterns (`pattern`, `patternProperties`) run on the `regex` crate's engine, which
    /// matches in time linear in the text: a pattern it cannot compile (backreferences,
    /// look-around) makes the entry invalid instead of running a backtracking engine on an HTTP
    /// worker. The compiled size is bounded too, so one entry cannot take much memory.
    pub fn compile(schema: &Value) -> Result<Self, ConfigError> {
        jsonschema::options()
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .dfa_size_limit(PATTERN_SIZE_LIMIT),
            )
            .build(schema)
            .map(|v| Self(Arc::new(v)))
            .map_err(|e| ConfigError::Invalid(format!("`json_schema` is not a valid schema: {e}")))
    }

    /// The first violation as `(instance path, rule)`. The rule is the schema keyword that
    /// failed, plus for `required` the missing property (a name from the schema). Never the
    /// offending value: it may be a credential that the cleanup has not masked yet.
    pub fn first_violation(&self, payload: &Value) -> Option<(String, String)> {
        let error = self.0.iter_errors(payload).next()?;
        let path = error.instance_path().to_string();
        let kind = error.kind();
        let rule = match kind {
            jsonschema::error::ValidationErrorKind::Required {
                property: Value::String(name),
            } => format!("{}: `{name}` is missing", kind.keyword()),
            _ => kind.keyword().to_owned(),
        };
        Some((if path.is_empty() { "/".into() } else { path }, rule))
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
        let (path, rule) = s
            .first_violation(&json!({"action": "x", "repository": {"id": "one"}}))
            .unwrap();
        assert_eq!((path.as_str(), rule.as_str()), ("/repository/id", "type"));
        let (path, rule) = s.first_violation(&json!({})).unwrap();
        assert_eq!(path, "/");
        assert_eq!(rule, "required: `action` is missing");
    }

    #[test]
    fn violations_never_echo_the_value() {
        let s = Schema::compile(&json!({"properties": {
            "token": {"const": "expected-value"},
            "pin": {"maxLength": 2, "pattern": "^[0-9]+$"}}}))
        .unwrap();
        for payload in [
            json!({"token": "hunter2-secret"}),
            json!({"pin": "hunter2-secret"}),
        ] {
            let (path, rule) = s.first_violation(&payload).unwrap();
            let all = format!("{path} {rule}");
            assert!(!all.contains("hunter2"), "{all}");
            assert!(!all.contains("expected-value"), "{all}");
        }
    }

    #[test]
    fn a_remote_ref_makes_the_entry_invalid() {
        let err = Schema::compile(&json!({"$ref": "https://example.com/schema.json"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`json_schema` is not a valid schema"),
            "{err}"
        );
    }

    #[test]
    fn a_pattern_that_needs_backtracking_makes_the_entry_invalid() {
        // The first once took 7 s per request on an HTTP worker (a backreference under a star).
        for schema in [
            json!({"pattern": r"^(?:(a|a)*\1c|.*)$"}),
            json!({"pattern": r"^(?=a)a$"}),
            json!({"patternProperties": {r"(a)\1": {}}}),
        ] {
            let err = Schema::compile(&schema).unwrap_err().to_string();
            assert!(
                err.starts_with("`json_schema` is not a valid schema"),
                "{schema}: {err}"
            );
        }
    }

    #[test]
    fn linear_patterns_still_validate() {
        let s =
            Schema::compile(&json!({"properties": {"ref": {"pattern": "^refs/heads/[a-z]+$"}}}))
                .unwrap();
        assert!(s
            .first_violation(&json!({"ref": "refs/heads/main"}))
            .is_none());
        let (path, rule) = s.first_violation(&json!({"ref": "refs/tags/v1"})).unwrap();
        assert_eq!((path.as_str(), rule.as_str()), ("/ref", "pattern"));
    }

    #[test]
    fn invalid_schema_is_a_config_error() {
        let err = Schema::compile(&json!({"type": 12}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`json_schema` is not a valid schema"),
            "{err}"
        );
    }
}
