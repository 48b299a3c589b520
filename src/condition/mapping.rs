//! Light mapping: a destination's target (a Kafka topic, a Redis stream, list or channel) taken
//! from what the request says, only within an explicit allow-list, so one entry can fan event
//! types out to their own targets without a sender naming arbitrary ones.
//!
//! ```json
//! {"from_header": "X-GitHub-Event", "prefix": "gh-",
//!  "allowed": ["gh-push", "gh-release"], "default": "gh-other"}
//! ```
//!
//! The value read, after `prefix`, must equal one of `allowed`; otherwise the request goes to
//! `default`, or, without one, not to this destination.

use serde_json::Value;

use super::{invalid, Request, Selected, Selector, SELECTORS};
use crate::config::ConfigError;

/// Most targets an `allowed` list holds (each is a spool queue of its own).
pub const MAX_ALLOWED: usize = 64;

/// A compiled mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    selector: Selector,
    prefix: String,
    /// Every target this destination may write to: `allowed`, then `default` when it is not
    /// among them.
    targets: Vec<String>,
    /// How many of `targets` are `allowed` (the rest is the default).
    allowed: usize,
    /// `default`'s place in `targets`.
    default: Option<usize>,
}

impl Mapping {
    /// Parses a mapping written at `path` (`module-config.topic`): every error names the path of
    /// the part that is wrong. The targets are checked by the module, each in turn.
    pub fn parse(value: &Value, path: &str) -> Result<Self, ConfigError> {
        let Value::Object(object) = value else {
            return Err(invalid(path, "is a name or a mapping object"));
        };
        let fields = ["prefix", "allowed", "default"];
        let sources: Vec<_> = object
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("from_")?, v)))
            .filter(|(k, _)| SELECTORS.contains(k))
            .collect();
        if let Some(unknown) = object.keys().find(|k| {
            !fields.contains(&k.as_str())
                && !k
                    .strip_prefix("from_")
                    .is_some_and(|s| SELECTORS.contains(&s))
        }) {
            return Err(invalid(
                path,
                format!(
                    "unknown field `{unknown}`; a mapping is one of `from_header`, `from_query`, \
                     `from_json_pointer`, `from_form`, with `allowed` and optional `prefix` and \
                     `default`"
                ),
            ));
        }
        let [(kind, name)] = sources[..] else {
            return Err(invalid(
                path,
                "a mapping reads exactly one of `from_header`, `from_query`, \
                 `from_json_pointer`, `from_form`",
            ));
        };
        let selector = Selector::parse(kind, name, &format!("{path}.from_{kind}"))?;
        let text = |field: &str, value: &Value| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(&format!("{path}.{field}"), "is a string"))
        };
        let prefix = match object.get("prefix") {
            Some(prefix) => text("prefix", prefix)?,
            None => String::new(),
        };
        let Some(Value::Array(allowed)) = object.get("allowed") else {
            return Err(invalid(
                &format!("{path}.allowed"),
                "is required: the list of targets requests may choose",
            ));
        };
        if allowed.is_empty() || allowed.len() > MAX_ALLOWED {
            return Err(invalid(
                &format!("{path}.allowed"),
                format!("takes 1 to {MAX_ALLOWED} targets"),
            ));
        }
        let mut targets = allowed
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let target = text(&format!("allowed[{i}]"), target)?;
                if target.starts_with(&prefix) {
                    Ok(target)
                } else {
                    Err(invalid(
                        &format!("{path}.allowed[{i}]"),
                        format!(
                            "{target:?} does not start with the prefix {prefix:?}: no request \
                             could choose it"
                        ),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = targets.len();
        let default = match object.get("default") {
            None => None,
            Some(default) => {
                let default = text("default", default)?;
                Some(match targets.iter().position(|t| *t == default) {
                    Some(at) => at,
                    None => {
                        targets.push(default);
                        count
                    }
                })
            }
        };
        Ok(Self {
            selector,
            prefix,
            targets,
            allowed: count,
            default,
        })
    }

    /// Adds the JSON pointer this mapping reads, if any, to `into`.
    pub fn pointers(&self, into: &mut super::Pointers) {
        self.selector.pointer(into);
    }

    /// Every target this destination may write to, in a fixed order: what [`Mapping::choose`]
    /// indexes.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The target `request` goes to (an index into [`Mapping::targets`]); `None` when the value
    /// is absent or not allowed and there is no `default`.
    pub fn choose(&self, request: &Request<'_, '_>) -> Option<usize> {
        let value = request.select(&self.selector);
        self.allowed(value.as_ref().and_then(Selected::as_str))
            .or(self.default)
    }

    /// [`Mapping::choose`], with a line saying what was read and where it led (for
    /// `check --explain`).
    pub fn explain(&self, request: &Request<'_, '_>) -> (Option<usize>, String) {
        let value = request.select(&self.selector);
        let text = value.as_ref().and_then(Selected::as_str);
        let read = match (&value, text) {
            (None, _) => "absent".to_owned(),
            (Some(_), None) => "a value that is not a string".to_owned(),
            (Some(_), Some(text)) => Value::String(super::cut(text)).to_string(),
        };
        match (self.allowed(text), self.default) {
            (Some(at), _) => (Some(at), format!("read {read}: to {:?}", self.targets[at])),
            (None, Some(at)) => (
                Some(at),
                format!(
                    "read {read}: not allowed, to the default {:?}",
                    self.targets[at]
                ),
            ),
            (None, None) => (
                None,
                format!("read {read}: not allowed and no default, so not delivered here"),
            ),
        }
    }

    /// The allowed target `prefix` + `text` names, if any.
    fn allowed(&self, text: Option<&str>) -> Option<usize> {
        let text = text?;
        self.targets[..self.allowed]
            .iter()
            .position(|t| t.strip_prefix(self.prefix.as_str()) == Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(value: Value) -> Mapping {
        Mapping::parse(&value, "module-config.topic").unwrap()
    }

    fn error(value: Value) -> String {
        Mapping::parse(&value, "module-config.topic")
            .unwrap_err()
            .to_string()
    }

    /// The target chosen for a request with `headers` and `body`, by name.
    fn chosen(mapping: &Mapping, headers: &[(&str, &str)], body: &str) -> Option<String> {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let request = Request::new(&lookup, Some("kind=a"), body.as_bytes());
        let (explained, _) = mapping.explain(&request);
        let at = mapping.choose(&request);
        assert_eq!(at, explained, "explain and choose agree");
        at.map(|at| mapping.targets()[at].clone())
    }

    #[test]
    fn a_value_chooses_only_an_allowed_target() {
        let m = mapping(json!({
            "from_header": "X-GitHub-Event", "prefix": "gh-", "allowed": ["gh-push", "gh-release"],
        }));
        assert_eq!(m.targets(), ["gh-push", "gh-release"]);
        let event = |e| chosen(&m, &[("x-github-event", e)], "");
        assert_eq!(event("push").as_deref(), Some("gh-push"));
        assert_eq!(event("release").as_deref(), Some("gh-release"));
        // Outside the list, a prefix of a target, a name with the prefix already on, and a
        // path-like value choose nothing.
        for outside in ["issues", "pus", "gh-push", "../push", ""] {
            assert_eq!(event(outside), None, "{outside:?}");
        }
        assert_eq!(chosen(&m, &[], ""), None);
    }

    #[test]
    fn a_default_takes_the_rest() {
        let m = mapping(json!({
            "from_json_pointer": "/event/type", "allowed": ["message", "reaction_added"],
            "default": "other",
        }));
        assert_eq!(m.targets(), ["message", "reaction_added", "other"]);
        let body = |t: &str| chosen(&m, &[], &json!({"event": {"type": t}}).to_string());
        assert_eq!(body("message").as_deref(), Some("message"));
        assert_eq!(body("app_mention").as_deref(), Some("other"));
        assert_eq!(chosen(&m, &[], "{}").as_deref(), Some("other"));
        assert_eq!(
            chosen(&m, &[], r#"{"event":{"type":7}}"#).as_deref(),
            Some("other")
        );
        // A default among the allowed targets is not repeated.
        let m = mapping(json!({"from_query": "kind", "allowed": ["a", "b"], "default": "b"}));
        assert_eq!(m.targets(), ["a", "b"]);
        assert_eq!(chosen(&m, &[], "").as_deref(), Some("a"));
    }

    #[test]
    fn invalid_mappings_are_refused_with_their_path() {
        for (value, reason) in [
            (
                json!("x"),
                "`module-config.topic`: is a name or a mapping object",
            ),
            (
                json!({"allowed": ["a"]}),
                "`module-config.topic`: a mapping reads exactly one of",
            ),
            (
                json!({"from_header": "a", "from_query": "b", "allowed": ["a"]}),
                "reads exactly one of",
            ),
            (
                json!({"from_header": "a", "allowed": ["a"], "to": "b"}),
                "`module-config.topic`: unknown field `to`",
            ),
            (
                json!({"from_body": "/a", "allowed": ["a"]}),
                "unknown field `from_body`",
            ),
            (
                json!({"from_header": "a b", "allowed": ["a"]}),
                "`module-config.topic.from_header`: is not a header name",
            ),
            (
                json!({"from_json_pointer": "a", "allowed": ["a"]}),
                "`module-config.topic.from_json_pointer`: is empty (the whole body)",
            ),
            (
                json!({"from_header": "a"}),
                "`module-config.topic.allowed`: is required",
            ),
            (
                json!({"from_header": "a", "allowed": []}),
                "`module-config.topic.allowed`: takes 1 to 64 targets",
            ),
            (
                json!({"from_header": "a", "allowed": ["a", 1]}),
                "`module-config.topic.allowed[1]`: is a string",
            ),
            (
                json!({"from_header": "a", "prefix": "gh-", "allowed": ["gh-a", "b"]}),
                "`module-config.topic.allowed[1]`: \"b\" does not start with the prefix \"gh-\"",
            ),
            (
                json!({"from_header": "a", "allowed": ["a"], "default": 1}),
                "`module-config.topic.default`: is a string",
            ),
        ] {
            let err = error(value.clone());
            assert!(err.contains(reason), "{value}: {err}");
        }
        let many: Vec<String> = (0..=MAX_ALLOWED).map(|i| format!("t{i}")).collect();
        assert!(error(json!({"from_header": "a", "allowed": many})).contains("takes 1 to 64"));
        let most: Vec<String> = (0..MAX_ALLOWED).map(|i| format!("t{i}")).collect();
        assert_eq!(
            mapping(json!({"from_header": "a", "allowed": most}))
                .targets()
                .len(),
            MAX_ALLOWED
        );
    }
}
