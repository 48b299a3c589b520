//! `{$VAR}` and `{$VAR:default}` substitution, only in the fields that hold a credential or a
//! connection parameter.
//!
//! Anyone who can write one namespace could otherwise copy any process variable
//! (`ETCD_PASSWORD`) into a field that is echoed (a schema `const`, a topic in an error) and
//! read it back. So references are replaced only at the paths listed by the entry's kind; a
//! reference anywhere else makes the entry invalid (the message names where it is). Substituted
//! values never appear in an error: [`Substituted::scrub`] masks them.
//!
//! Pure: the variable lookup is passed in, so tests never touch the process environment.

use serde_json::Value;

use super::seal;

/// A reference to a variable that is neither set nor given a default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable `{0}` is not set and has no default (write {{${0}:default}})")]
pub struct MissingVar(pub String);

/// A path into an entry where references are substituted; `*` matches any key or index.
pub type FieldPath = &'static [&'static str];

/// A reference found outside the substituted fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{{$...}}` at {0} is not substituted: environment references work only in credential and \
     connection fields (secrets, api keys, passwords, hosts, ports, URLs, client_config)"
)]
pub struct NotSubstitutable(pub String);

/// A sealed value in a credential field that does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed value at `{field}` {error}")]
pub struct SealedField {
    /// The field as `seal --field` names it (`hmac.secret`).
    pub field: String,
    #[source]
    pub error: seal::OpenError,
}

/// A sealed value outside the credential fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the sealed value at {0} is not opened: only credential fields (the same ones that take \
     `{{$VAR}}`) may be sealed"
)]
pub struct NotSealable(pub String);

/// Why substitution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    #[error(transparent)]
    Missing(#[from] MissingVar),
    #[error(transparent)]
    NotSubstitutable(#[from] NotSubstitutable),
    #[error(transparent)]
    Sealed(#[from] SealedField),
    #[error(transparent)]
    NotSealable(#[from] NotSealable),
}

/// Opens the sealed value of a field (named as `seal --field` names it).
pub type Open<'a> = &'a dyn Fn(&str, &str) -> Result<String, seal::OpenError>;

/// The values that substitution put into an entry, so that errors can be scrubbed of them.
#[derive(Debug, Default)]
pub struct Substituted(Vec<String>);

/// Values shorter than this are not masked in messages (`1`, `on`): masking them would garble
/// the message without protecting anything.
const MIN_SCRUBBED_LEN: usize = 3;

impl Substituted {
    /// `text` with every substituted value replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.0 {
            if value.len() >= MIN_SCRUBBED_LEN && out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }
}

/// Replaces the references in the strings at `paths` of `value`, and opens the sealed values
/// there with `open`; a reference or a sealed value at any other string is an error. Object
/// keys are never substituted.
pub fn substitute_fields(
    value: &mut Value,
    paths: &[FieldPath],
    lookup: &dyn Fn(&str) -> Option<String>,
    open: Open<'_>,
) -> Result<Substituted, SubstError> {
    let mut substituted = Substituted::default();
    let mut at = Vec::new();
    let resolve = Resolve { lookup, open };
    walk(value, paths, &resolve, &mut at, &mut substituted)?;
    Ok(substituted)
}

/// The two ways a credential field is resolved.
struct Resolve<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    open: Open<'a>,
}

/// The version prefix a sealed value outside the credential fields is recognised by (a Redis
/// key `sealed:orders` elsewhere stays what it is).
const SEALED_V1: &str = "sealed:v1:";

fn walk(
    value: &mut Value,
    paths: &[FieldPath],
    resolve: &Resolve<'_>,
    at: &mut Vec<String>,
    substituted: &mut Substituted,
) -> Result<(), SubstError> {
    match value {
        Value::String(s) if s.contains("{$") || seal::is_sealed(s) => {
            let allowed = paths.iter().any(|path| {
                path.len() == at.len()
                    && path.iter().zip(at.iter()).all(|(p, a)| *p == "*" || p == a)
            });
            if !allowed {
                return if s.starts_with(SEALED_V1) {
                    Err(NotSealable(format!("/{}", at.join("/"))).into())
                } else if has_reference(s) {
                    Err(NotSubstitutable(format!("/{}", at.join("/"))).into())
                } else {
                    Ok(())
                };
            }
            if seal::is_sealed(s) {
                let field = at.join(".");
                let opened =
                    (resolve.open)(&field, s).map_err(|error| SealedField { field, error })?;
                substituted.0.push(opened.clone());
                *s = opened;
                return Ok(());
            }
            let lookup = resolve.lookup;
            let seen = std::cell::RefCell::new(Vec::new());
            let record = |name: &str| {
                let found = lookup(name);
                if let Some(v) = &found {
                    seen.borrow_mut().push(v.clone());
                }
                found
            };
            *s = substitute_str(s, &record)?;
            substituted.0.extend(seen.into_inner());
            Ok(())
        }
        Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| {
            at.push(i.to_string());
            let result = walk(item, paths, resolve, at, substituted);
            at.pop();
            result
        }),
        Value::Object(map) => map.iter_mut().try_for_each(|(key, item)| {
            at.push(key.clone());
            let result = walk(item, paths, resolve, at, substituted);
            at.pop();
            result
        }),
        _ => Ok(()),
    }
}

/// Whether `s` holds a well-formed reference.
fn has_reference(s: &str) -> bool {
    let found = std::cell::Cell::new(false);
    let _ = substitute_str(s, &|_| {
        found.set(true);
        Some(String::new())
    });
    found.get()
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

    const PATHS: &[FieldPath] = &[&["hmac", "secret"], &["client_config", "*"], &["list", "*"]];

    #[test]
    fn substitutes_only_at_the_listed_paths() {
        let mut v = json!({"hmac": {"secret": "{$HOST}"}, "client_config": {"a.b": "{$NOPE:z}"},
                           "list": ["{$HOST}", 1], "other": "no reference", "{$HOST}": 1});
        let substituted = substitute_fields(&mut v, PATHS, &env, &refuse).unwrap();
        assert_eq!(
            v,
            json!({"hmac": {"secret": "kafka:9092"}, "client_config": {"a.b": "z"},
                   "list": ["kafka:9092", 1], "other": "no reference", "{$HOST}": 1})
        );
        assert_eq!(
            substituted.scrub("saw kafka:9092 twice: kafka:9092"),
            "saw *** twice: ***"
        );
    }

    #[test]
    fn a_reference_elsewhere_is_an_error_naming_where() {
        for (entry, at) in [
            (
                json!({"json_schema": {"const": "{$HOST}"}}),
                "/json_schema/const",
            ),
            (json!({"chain": [{"topic": "{$NOPE:x}"}]}), "/chain/0/topic"),
            (json!({"hmac": {"header": "{$HOST}"}}), "/hmac/header"),
        ] {
            let mut v = entry.clone();
            let err = substitute_fields(&mut v, PATHS, &env, &refuse).unwrap_err();
            assert_eq!(
                err,
                SubstError::NotSubstitutable(NotSubstitutable(at.into())),
                "{entry}"
            );
            assert!(!err.to_string().contains("kafka:9092"));
        }
        // Text that is not a reference is fine anywhere.
        let mut v = json!({"pattern": "^\\{\\$", "x": "{$ not a ref}"});
        assert!(substitute_fields(&mut v, PATHS, &env, &refuse).is_ok());
    }

    fn refuse(_: &str, _: &str) -> Result<String, seal::OpenError> {
        Err(seal::OpenError::Malformed)
    }

    #[test]
    fn sealed_values_open_only_in_credential_fields_named_by_their_field() {
        let open = |field: &str, value: &str| match (field, value) {
            ("hmac.secret", "sealed:v1:k:good") => Ok("opened-secret".to_owned()),
            ("list.1", "sealed:v1:k:good") => Ok("second".to_owned()),
            _ => Err(seal::OpenError::Rejected("k".into())),
        };
        let mut v = json!({"hmac": {"secret": "sealed:v1:k:good"}, "list": [1, "sealed:v1:k:good"],
                           "redis_key": "sealed:orders"});
        let substituted = substitute_fields(&mut v, PATHS, &env, &open).unwrap();
        assert_eq!(
            v,
            json!({"hmac": {"secret": "opened-secret"}, "list": [1, "second"],
                   "redis_key": "sealed:orders"})
        );
        assert_eq!(substituted.scrub("was opened-secret"), "was ***");
        // One that does not open names its field, never its value.
        let mut v = json!({"hmac": {"secret": "sealed:v1:k:bad"}});
        let err = substitute_fields(&mut v, PATHS, &env, &open).unwrap_err();
        assert_eq!(
            err,
            SubstError::Sealed(SealedField {
                field: "hmac.secret".into(),
                error: seal::OpenError::Rejected("k".into())
            })
        );
        assert!(err
            .to_string()
            .starts_with("sealed value at `hmac.secret` does not open"));
        // A sealed value is not a template: `{$VAR}` inside is not substituted.
        let mut v = json!({"hmac": {"secret": "sealed:v1:{$HOST}"}});
        assert!(substitute_fields(&mut v, PATHS, &env, &open).is_err());
        // Elsewhere it is refused, naming where.
        let mut v = json!({"topic": "sealed:v1:k:good"});
        assert_eq!(
            substitute_fields(&mut v, PATHS, &env, &open).unwrap_err(),
            SubstError::NotSealable(NotSealable("/topic".into()))
        );
    }

    #[test]
    fn short_values_are_not_scrubbed() {
        let mut v = json!({"hmac": {"secret": "{$ONE}"}});
        let one = |n: &str| (n == "ONE").then(|| "1".to_owned());
        let substituted = substitute_fields(&mut v, PATHS, &one, &refuse).unwrap();
        assert_eq!(substituted.scrub("chain[1]"), "chain[1]");
    }
}
