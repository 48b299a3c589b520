//! `{$VAR}` and `{$VAR:default}` substitution in every string of a JSON value.
//!
//! Pure: the variable lookup is passed in, so tests never touch the process environment.

use serde_json::Value;

/// A reference to a variable that is neither set nor given a default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable `{0}` is not set and has no default (write {{${0}:default}})")]
pub struct MissingVar(pub String);

/// Replaces every `{$VAR}` / `{$VAR:default}` in the strings of `value`, at any depth.
/// Object keys are left alone. A `{$` that does not form a reference is kept as written.
pub fn substitute_value(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), MissingVar> {
    match value {
        Value::String(s) => {
            if s.contains("{$") {
                *s = substitute_str(s, lookup)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|item| substitute_value(item, lookup)),
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|item| substitute_value(item, lookup)),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Substitutes the references in one string.
pub fn substitute_str(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, MissingVar> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("{$") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(is_var_char)
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            out.push_str("{$");
            rest = after;
            continue;
        }
        match (lookup(name), default) {
            (Some(found), _) => out.push_str(&found),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(MissingVar(name.to_owned())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Looks variables up in the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variable() {
        assert_eq!(substitute_str("{$HOST}", &env).unwrap(), "kafka:9092");
        assert_eq!(
            substitute_str("tcp://{$HOST}/x", &env).unwrap(),
            "tcp://kafka:9092/x"
        );
    }

    #[test]
    fn uses_default_when_unset_and_value_when_set() {
        assert_eq!(substitute_str("{$NOPE:local}", &env).unwrap(), "local");
        assert_eq!(substitute_str("{$HOST:local}", &env).unwrap(), "kafka:9092");
        assert_eq!(substitute_str("{$NOPE:}", &env).unwrap(), "");
        assert_eq!(substitute_str("{$NOPE:a:b}", &env).unwrap(), "a:b");
    }

    #[test]
    fn set_but_empty_variable_wins_over_default() {
        assert_eq!(substitute_str("{$EMPTY:x}", &env).unwrap(), "");
    }

    #[test]
    fn unset_without_default_is_an_error_naming_it() {
        let err = substitute_str("a{$NOPE}b", &env).unwrap_err();
        assert_eq!(err, MissingVar("NOPE".into()));
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn text_that_is_not_a_reference_is_kept() {
        for s in [
            "{$",
            "{$}",
            "{$ x}",
            "a {$unterminated",
            "{$1A}",
            "${HOST}",
            "{HOST}",
        ] {
            assert_eq!(substitute_str(s, &env).unwrap(), s, "{s}");
        }
    }

    #[test]
    fn several_references_in_one_string() {
        assert_eq!(
            substitute_str("{$HOST}-{$NOPE:d}-{$HOST}", &env).unwrap(),
            "kafka:9092-d-kafka:9092"
        );
    }

    #[test]
    fn substitutes_at_any_depth_but_not_in_keys() {
        let mut v = json!({"{$HOST}": {"list": ["{$HOST}", 1, true, null]}, "s": "{$NOPE:z}"});
        substitute_value(&mut v, &env).unwrap();
        assert_eq!(
            v,
            json!({"{$HOST}": {"list": ["kafka:9092", 1, true, null]}, "s": "z"})
        );
    }
}
