//! `credential_cleanup`: masks or removes credential fields of a JSON payload, at any depth,
//! before any module sees it.

use serde::Deserialize;
use serde_json::Value;

/// Field names cleaned when `fields` is not given (compared case-insensitively, `-` as `_`).
pub const DEFAULT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credit_card",
    "card_number",
    "cvv",
    "ssn",
];

pub const MASK: &str = "***";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace the value with `***` (default).
    #[default]
    Mask,
    /// Drop the field.
    Remove,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// A compiled cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    mode: Mode,
    fields: Vec<String>,
}

impl CleanupConfig {
    /// `None` when disabled.
    pub fn compile(self) -> Option<Cleanup> {
        if !self.enabled {
            return None;
        }
        let fields = match self.fields {
            Some(fields) => fields.iter().map(|f| normalise(f)).collect(),
            None => DEFAULT_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        };
        Some(Cleanup {
            mode: self.mode,
            fields,
        })
    }
}

impl Cleanup {
    /// Cleans `value` in place; returns whether anything changed.
    pub fn apply(&self, value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                let mut changed = false;
                let names: Vec<String> = map.keys().cloned().collect();
                for name in names {
                    if self.fields.contains(&normalise(&name)) {
                        changed = true;
                        match self.mode {
                            Mode::Mask => {
                                map.insert(name, Value::String(MASK.into()));
                            }
                            Mode::Remove => {
                                map.remove(&name);
                            }
                        }
                    } else if let Some(child) = map.get_mut(&name) {
                        changed |= self.apply(child);
                    }
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, v| self.apply(v) | c),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_at_any_depth_case_insensitively() {
        let c = CleanupConfig {
            enabled: true,
            mode: Mode::Mask,
            fields: None,
        }
        .compile()
        .unwrap();
        let mut v = json!({"user": {"Password": "p", "name": "n"},
                           "items": [{"api-key": "k"}, {"x": 1}], "token": {"nested": 1}});
        assert!(c.apply(&mut v));
        assert_eq!(
            v,
            json!({"user": {"Password": "***", "name": "n"},
                             "items": [{"api-key": "***"}, {"x": 1}], "token": "***"})
        );
    }

    #[test]
    fn removes_listed_fields_only() {
        let c = CleanupConfig {
            enabled: true,
            mode: Mode::Remove,
            fields: Some(vec!["pin".into()]),
        }
        .compile()
        .unwrap();
        let mut v = json!({"pin": 1, "password": "kept: not listed", "a": [{"PIN": 2}]});
        assert!(c.apply(&mut v));
        assert_eq!(v, json!({"password": "kept: not listed", "a": [{}]}));
        let mut clean = json!({"a": 1});
        assert!(!c.apply(&mut clean));
    }

    #[test]
    fn disabled_is_none() {
        assert!(CleanupConfig {
            enabled: false,
            mode: Mode::Mask,
            fields: None
        }
        .compile()
        .is_none());
    }
}
