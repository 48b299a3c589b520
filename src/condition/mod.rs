//! Conditions: a small declarative language, written as JSON in a webhook's entry, that decides
//! on what a request says (its headers, query, JSON body or form fields). No scripting: a fixed
//! set of operators and combinators, parsed and bounded once when the entry is read, so that
//! evaluating one costs at most a known number of steps, each linear in the value it reads.
//!
//! ```json
//! {"all": [{"header": "X-GitHub-Event", "in": ["push", "release"]},
//!          {"json_pointer": "/ref", "eq": "refs/heads/main"},
//!          {"not": {"query": "dry_run", "exists": true}}]}
//! ```

mod borrowed;
mod mapping;
mod pointers;

pub use borrowed::{Json, Name};
pub use mapping::Mapping;
pub use pointers::Pointers;

use std::cell::OnceCell;

use serde_json::{Map, Value};

use crate::config::ConfigError;

/// Deepest nesting of combinators.
pub const MAX_DEPTH: usize = 8;
/// Most conditions (tests and combinators) in one rule: the evaluation bound.
pub const MAX_CONDITIONS: usize = 64;
/// Most values an `in` list holds.
const MAX_IN: usize = 256;
/// Longest regex pattern, and the compiled program's size bound.
const MAX_PATTERN: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test(Test),
}

/// One test: what it reads, what it checks, and how it was written (for `check --explain`).
#[derive(Debug, Clone)]
pub struct Test {
    selector: Selector,
    op: Op,
    written: Box<str>,
}

/// What a test reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A request header (its first value), by case-insensitive name.
    Header(String),
    /// A query parameter (its first value).
    Query(String),
    /// A value in the JSON body: an RFC 6901 pointer, split into its unescaped reference
    /// tokens once, when the entry is read.
    JsonPointer(Vec<String>),
    /// A field of a form-encoded body (its first value).
    Form(String),
}

/// What a test checks of the value read.
#[derive(Debug, Clone)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Exists(bool),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
}

const SELECTORS: [&str; 4] = ["header", "query", "json_pointer", "form"];
const OPERATORS: [&str; 12] = [
    "eq", "ne", "in", "exists", "prefix", "suffix", "contains", "regex", "gt", "gte", "lt", "lte",
];

impl Condition {
    /// Parses and bounds a condition written at `path` of the entry (`filter`,
    /// `chain[1].when`): every error names the path of the part that is wrong.
    pub fn parse(value: &Value, path: &str) -> Result<Self, ConfigError> {
        let mut count = 0;
        parse(value, path, 1, &mut count)
    }

    /// Adds every JSON pointer this condition reads to `into`.
    pub fn pointers(&self, into: &mut Pointers) {
        match self {
            Condition::All(all) | Condition::Any(all) => {
                all.iter().for_each(|c| c.pointers(into));
            }
            Condition::Not(inner) => inner.pointers(into),
            Condition::Test(test) => test.selector.pointer(into),
        }
    }

    /// Whether `request` matches.
    pub fn matches(&self, request: &Request<'_, '_>) -> bool {
        self.eval(request, &mut 0)
    }

    /// Evaluates, counting the conditions visited in `steps` (at most the number parsed: each
    /// is visited once at most).
    fn eval(&self, request: &Request<'_, '_>, steps: &mut usize) -> bool {
        *steps += 1;
        match self {
            Condition::All(all) => all.iter().all(|c| c.eval(request, steps)),
            Condition::Any(any) => any.iter().any(|c| c.eval(request, steps)),
            Condition::Not(inner) => !inner.eval(request, steps),
            Condition::Test(test) => test.op.holds(request.select(&test.selector).as_ref()),
        }
    }

    /// Evaluates every part (no short cut), writing one line per part into `out`, indented by
    /// depth: whether it matched and, for a test, the value it read. For `check --explain`.
    pub fn explain(&self, request: &Request<'_, '_>, depth: usize, out: &mut Vec<String>) -> bool {
        let at = out.len();
        let indent = "  ".repeat(depth);
        let (matched, label) = match self {
            Condition::All(all) | Condition::Any(all) => {
                out.push(String::new());
                let results: Vec<bool> = all
                    .iter()
                    .map(|c| c.explain(request, depth + 1, out))
                    .collect();
                if matches!(self, Condition::All(_)) {
                    (results.iter().all(|r| *r), "all".to_owned())
                } else {
                    (results.iter().any(|r| *r), "any".to_owned())
                }
            }
            Condition::Not(inner) => {
                out.push(String::new());
                (!inner.explain(request, depth + 1, out), "not".to_owned())
            }
            Condition::Test(test) => {
                let value = request.select(&test.selector);
                let read = match &value {
                    None => "absent".to_owned(),
                    Some(Selected::Text(text)) => {
                        serde_json::Value::String(text.to_string()).to_string()
                    }
                    Some(Selected::Json(value)) => value.to_value().to_string(),
                };
                out.push(String::new());
                (
                    test.op.holds(value.as_ref()),
                    format!("{} (read: {})", test.written, cut(&read)),
                )
            }
        };
        let mark = if matched { "match" } else { "no match" };
        out[at] = format!("{indent}{mark}: {label}");
        matched
    }
}

/// A value shown by `--explain`, cut to a readable length.
fn cut(text: &str) -> String {
    const SHOWN: usize = 120;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn invalid(path: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("`{path}`: {why}"))
}

fn parse(
    value: &Value,
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<Condition, ConfigError> {
    if depth > MAX_DEPTH {
        return Err(invalid(
            path,
            format!("conditions nest at most {MAX_DEPTH} deep"),
        ));
    }
    *count += 1;
    if *count > MAX_CONDITIONS {
        return Err(invalid(
            path,
            format!("a rule holds at most {MAX_CONDITIONS} conditions"),
        ));
    }
    let Value::Object(object) = value else {
        return Err(invalid(path, "a condition is an object"));
    };
    let list = |name: &str, items: &Value, count: &mut usize| {
        let Value::Array(items) = items else {
            return Err(invalid(
                &format!("{path}.{name}"),
                "takes a list of conditions",
            ));
        };
        if items.is_empty() {
            return Err(invalid(
                &format!("{path}.{name}"),
                "takes at least one condition",
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| parse(item, &format!("{path}.{name}[{i}]"), depth + 1, count))
            .collect::<Result<Vec<_>, _>>()
    };
    if object.len() == 1 {
        if let Some((name, inner)) = object.iter().next() {
            match name.as_str() {
                "all" => return list("all", inner, count).map(Condition::All),
                "any" => return list("any", inner, count).map(Condition::Any),
                "not" => {
                    let inner = parse(inner, &format!("{path}.not"), depth + 1, count)?;
                    return Ok(Condition::Not(Box::new(inner)));
                }
                _ => {}
            }
        }
    }
    test(object, path)
}

/// `{"<selector>": "<name>", "<operator>": <operand>}`.
fn test(object: &Map<String, Value>, path: &str) -> Result<Condition, ConfigError> {
    if let Some(unknown) = object
        .keys()
        .find(|k| !SELECTORS.contains(&k.as_str()) && !OPERATORS.contains(&k.as_str()))
    {
        return Err(invalid(
            path,
            format!(
                "unknown field `{unknown}`; a condition is `all`, `any`, `not`, or one of \
                 {SELECTORS:?} with one of {OPERATORS:?}"
            ),
        ));
    }
    let selectors: Vec<_> = object
        .iter()
        .filter(|(k, _)| SELECTORS.contains(&k.as_str()))
        .collect();
    let operators: Vec<_> = object
        .iter()
        .filter(|(k, _)| OPERATORS.contains(&k.as_str()))
        .collect();
    let ([(selector, name)], [(operator, operand)]) = (&selectors[..], &operators[..]) else {
        return Err(invalid(
            path,
            "a test names exactly one of `header`, `query`, `json_pointer`, `form` and exactly one \
             operator",
        ));
    };
    let selector = Selector::parse(selector, name, &format!("{path}.{selector}"))?;
    let at = format!("{path}.{operator}");
    let json = matches!(selector, Selector::JsonPointer(_));
    let text = |v: &Value| -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(&at, "takes a string"))
    };
    // Headers, query parameters and form fields are text: their operands are strings.
    let operand_value = |v: &Value| -> Result<Value, ConfigError> {
        match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(_) | Value::Bool(_) | Value::Null if json => Ok(v.clone()),
            Value::Array(_) | Value::Object(_) if json => Ok(v.clone()),
            _ => Err(invalid(
                &at,
                "takes a string (a header, query or form value is text)",
            )),
        }
    };
    let number = |v: &Value| -> Result<f64, ConfigError> {
        v.as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| invalid(&at, "takes a number"))
    };
    let op = match operator.as_str() {
        "eq" => Op::Eq(operand_value(operand)?),
        "ne" => Op::Ne(operand_value(operand)?),
        "in" => {
            let Value::Array(items) = operand else {
                return Err(invalid(&at, "takes a list"));
            };
            if items.is_empty() || items.len() > MAX_IN {
                return Err(invalid(&at, format!("takes 1 to {MAX_IN} values")));
            }
            Op::In(items.iter().map(operand_value).collect::<Result<_, _>>()?)
        }
        "exists" => Op::Exists(
            operand
                .as_bool()
                .ok_or_else(|| invalid(&at, "takes true or false"))?,
        ),
        "prefix" => Op::Prefix(text(operand)?),
        "suffix" => Op::Suffix(text(operand)?),
        "contains" => Op::Contains(text(operand)?),
        "regex" => {
            let pattern = text(operand)?;
            if pattern.len() > MAX_PATTERN {
                return Err(invalid(&at, format!("is longer than {MAX_PATTERN} bytes")));
            }
            // `regex` runs in linear time (no backreferences or look-around to backtrack on).
            let compiled = regex::RegexBuilder::new(&pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| invalid(&at, format!("is not a valid pattern: {e}")))?;
            Op::Regex(compiled)
        }
        "gt" => Op::Gt(number(operand)?),
        "gte" => Op::Gte(number(operand)?),
        "lt" => Op::Lt(number(operand)?),
        _ => Op::Lte(number(operand)?),
    };
    let written = Value::Object(object.clone()).to_string().into_boxed_str();
    Ok(Condition::Test(Test {
        selector,
        op,
        written,
    }))
}

impl Selector {
    /// Adds this selector's JSON pointer, if it reads one, to `into`.
    fn pointer(&self, into: &mut Pointers) {
        if let Selector::JsonPointer(tokens) = self {
            into.add(tokens);
        }
    }

    /// The selector `kind` (one of [`SELECTORS`]) reading `name`, written at `path`.
    fn parse(kind: &str, name: &Value, path: &str) -> Result<Self, ConfigError> {
        let Value::String(name) = name else {
            return Err(invalid(path, "is a string"));
        };
        Ok(match kind {
            "header" => {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(invalid(path, "is not a header name"));
                }
                Selector::Header(name.to_ascii_lowercase())
            }
            "query" => Selector::Query(name.clone()),
            "form" => Selector::Form(name.clone()),
            _ => {
                if !name.is_empty() && !name.starts_with('/') {
                    return Err(invalid(
                        path,
                        "is empty (the whole body) or starts with `/`",
                    ));
                }
                // `~1` is `/` and `~0` is `~`, in that order (RFC 6901, section 4).
                let tokens = name
                    .split('/')
                    .skip(1)
                    .map(|token| token.replace("~1", "/").replace("~0", "~"))
                    .collect();
                Selector::JsonPointer(tokens)
            }
        })
    }
}

/// A value a selector read: text (header, query, form) or a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Selected<'a> {
    Text(std::borrow::Cow<'a, str>),
    Json(&'a Json<'a>),
}

impl Selected<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Selected::Text(text) => Some(text),
            Selected::Json(value) => value.as_str(),
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            Selected::Text(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            Selected::Json(value) => value.as_f64(),
        }
    }

    /// Equal to an operand: text to a string; JSON values as JSON, numbers by value (`1` is
    /// `1.0`).
    fn equals(&self, operand: &Value) -> bool {
        match (self, operand) {
            (Selected::Text(text), Value::String(s)) => text == s,
            (Selected::Text(_), _) => false,
            (Selected::Json(value), operand) => value.equals(operand),
        }
    }
}

impl Op {
    /// Whether the test holds of `value` (`None`: nothing there). Every operator but `exists`
    /// and `ne` is false for a missing value; `ne` is true.
    fn holds(&self, value: Option<&Selected<'_>>) -> bool {
        let text = || value.and_then(Selected::as_str);
        let number = || value.and_then(Selected::as_number);
        match self {
            Op::Exists(wanted) => value.is_some() == *wanted,
            Op::Eq(operand) => value.is_some_and(|v| v.equals(operand)),
            Op::Ne(operand) => !value.is_some_and(|v| v.equals(operand)),
            Op::In(operands) => value.is_some_and(|v| operands.iter().any(|o| v.equals(o))),
            Op::Prefix(p) => text().is_some_and(|t| t.starts_with(p.as_str())),
            Op::Suffix(s) => text().is_some_and(|t| t.ends_with(s.as_str())),
            Op::Contains(c) => text().is_some_and(|t| t.contains(c.as_str())),
            Op::Regex(re) => text().is_some_and(|t| re.is_match(t)),
            Op::Gt(n) => number().is_some_and(|v| v > *n),
            Op::Gte(n) => number().is_some_and(|v| v >= *n),
            Op::Lt(n) => number().is_some_and(|v| v < *n),
            Op::Lte(n) => number().is_some_and(|v| v <= *n),
        }
    }
}

/// What the conditions see of a request. The body is parsed (as JSON, or as form fields) at
/// most once, and only when a condition reads it.
pub struct Request<'a, 'h> {
    headers: &'a dyn Fn(&str) -> Option<&'h str>,
    query: Option<&'a str>,
    body: &'a [u8],
    json: OnceCell<Option<Json<'a>>>,
}

impl<'a, 'h: 'a> Request<'a, 'h> {
    pub fn new(
        headers: &'a dyn Fn(&str) -> Option<&'h str>,
        query: Option<&'a str>,
        body: &'a [u8],
    ) -> Self {
        Self {
            headers,
            query,
            body,
            json: OnceCell::new(),
        }
    }

    /// The same request, with its JSON body already read (by the strict check, keeping the
    /// parts the conditions name: see [`Pointers`]).
    pub fn with_json(self, json: Option<Json<'a>>) -> Self {
        match json {
            Some(json) => Self {
                json: OnceCell::from(Some(json)),
                ..self
            },
            None => self,
        }
    }

    fn select(&self, selector: &Selector) -> Option<Selected<'_>> {
        let first = |text: &'a [u8], name: &str| {
            form_urlencoded::parse(text)
                .find(|(k, _)| k == name)
                .map(|(_, v)| Selected::Text(std::borrow::Cow::Owned(v.into_owned())))
        };
        match selector {
            Selector::Header(name) => (self.headers)(name).map(|v| Selected::Text(v.into())),
            Selector::Query(name) => first(self.query?.as_bytes(), name),
            Selector::Form(name) => first(self.body, name),
            Selector::JsonPointer(tokens) => self
                .json
                .get_or_init(|| Json::parse(self.body))
                .as_ref()?
                .at(tokens)
                .map(Selected::Json),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value: Value) -> Condition {
        Condition::parse(&value, "filter").unwrap()
    }

    fn error(value: Value) -> String {
        Condition::parse(&value, "filter").unwrap_err().to_string()
    }

    fn matches(condition: &Value, headers: &[(&str, &str)], query: &str, body: &str) -> bool {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let request = Request::new(&lookup, Some(query), body.as_bytes());
        rule(condition.clone()).matches(&request)
    }

    #[test]
    fn each_operator_on_each_selector() {
        let body = r#"{"ref":"refs/heads/main","n":5,"f":1.5,"tags":["a"],"o":{"k":null},"t":true,"a/b":{"c~d":1}}"#;
        let headers = [("X-GitHub-Event", "push"), ("X-Retry", "3")];
        let query = "type=order.created&dry=1";
        let cases = [
            (json!({"header": "x-github-event", "eq": "push"}), true),
            (json!({"header": "X-GitHub-Event", "ne": "push"}), false),
            (json!({"header": "X-Missing", "ne": "push"}), true),
            (
                json!({"header": "X-GitHub-Event", "in": ["push", "release"]}),
                true,
            ),
            (
                json!({"header": "X-GitHub-Event", "in": ["release"]}),
                false,
            ),
            (json!({"header": "X-Missing", "exists": false}), true),
            (json!({"header": "X-GitHub-Event", "exists": true}), true),
            (json!({"header": "X-GitHub-Event", "prefix": "pu"}), true),
            (json!({"header": "X-GitHub-Event", "suffix": "sh"}), true),
            (json!({"header": "X-GitHub-Event", "contains": "us"}), true),
            (
                json!({"header": "X-GitHub-Event", "regex": "^p(u|a)sh$"}),
                true,
            ),
            (json!({"header": "X-Retry", "gt": 2}), true),
            (json!({"header": "X-Retry", "gte": 3}), true),
            (json!({"header": "X-Retry", "lt": 3}), false),
            (json!({"header": "X-Retry", "lte": 3}), true),
            (json!({"header": "X-GitHub-Event", "gt": 0}), false),
            (json!({"query": "type", "prefix": "order."}), true),
            (json!({"query": "dry", "exists": true}), true),
            (json!({"query": "wet", "exists": true}), false),
            (
                json!({"json_pointer": "/ref", "eq": "refs/heads/main"}),
                true,
            ),
            (json!({"json_pointer": "/n", "eq": 5.0}), true),
            (json!({"json_pointer": "/n", "eq": "5"}), false),
            (json!({"json_pointer": "/f", "gt": 1}), true),
            (json!({"json_pointer": "/f", "lte": 1.5}), true),
            (json!({"json_pointer": "/tags", "eq": ["a"]}), true),
            (json!({"json_pointer": "/tags/0", "in": ["a", "b"]}), true),
            (json!({"json_pointer": "/o/k", "exists": true}), true),
            (json!({"json_pointer": "/o/k", "eq": null}), true),
            (json!({"json_pointer": "/t", "eq": true}), true),
            (
                json!({"json_pointer": "/ref", "regex": "heads/(main|master)$"}),
                true,
            ),
            (json!({"json_pointer": "/n", "prefix": "5"}), false),
            (json!({"json_pointer": "/missing", "exists": false}), true),
            (json!({"json_pointer": "/tags/00", "exists": true}), false),
            (json!({"json_pointer": "/tags/+0", "exists": true}), false),
            (json!({"json_pointer": "/a~1b/c~0d", "eq": 1}), true),
            (json!({"json_pointer": "", "exists": true}), true),
        ];
        for (condition, expected) in cases {
            assert_eq!(
                matches(&condition, &headers, query, body),
                expected,
                "{condition}"
            );
        }
        let form = "payload=%7B%7D&event=message&n=7";
        assert!(matches(
            &json!({"form": "event", "eq": "message"}),
            &[],
            "",
            form
        ));
        assert!(matches(&json!({"form": "n", "gte": 7}), &[], "", form));
        assert!(!matches(
            &json!({"form": "other", "exists": true}),
            &[],
            "",
            form
        ));
    }

    #[test]
    fn combinators_combine() {
        let headers = [("X-GitHub-Event", "push")];
        let body = r#"{"ref":"refs/heads/dev"}"#;
        let push = json!({"header": "X-GitHub-Event", "eq": "push"});
        let main = json!({"json_pointer": "/ref", "eq": "refs/heads/main"});
        assert!(!matches(&json!({"all": [push, main]}), &headers, "", body));
        assert!(matches(&json!({"any": [push, main]}), &headers, "", body));
        assert!(matches(
            &json!({"all": [push, {"not": main}]}),
            &headers,
            "",
            body
        ));
        assert!(!matches(
            &json!({"not": {"any": [push, main]}}),
            &headers,
            "",
            body
        ));
        // A body that is not JSON has no value at any pointer.
        assert!(matches(
            &json!({"json_pointer": "/a", "exists": false}),
            &[],
            "",
            "not json"
        ));
    }

    #[test]
    fn invalid_rules_are_refused_with_their_path() {
        for (bad, reason) in [
            (
                json!({"header": "a", "eqq": "x"}),
                "`filter`: unknown field `eqq`",
            ),
            (
                json!({"all": [{"header": "a"}]}),
                "`filter.all[0]`: a test names exactly one",
            ),
            (
                json!({"header": "a", "query": "b", "eq": "x"}),
                "exactly one",
            ),
            (json!({"header": "a", "eq": "x", "ne": "y"}), "exactly one"),
            (
                json!({"any": [{"header": "a", "regex": "(a"}]}),
                "`filter.any[0].regex`: is not a valid pattern",
            ),
            (
                json!({"header": "a", "regex": "(a)\\1"}),
                "is not a valid pattern",
            ),
            (
                json!({"header": "a", "eq": 5}),
                "`filter.eq`: takes a string",
            ),
            (
                json!({"json_pointer": "/a", "gt": "5"}),
                "`filter.gt`: takes a number",
            ),
            (
                json!({"json_pointer": "a", "eq": 1}),
                "`filter.json_pointer`: is empty",
            ),
            (json!({"header": "a b", "eq": "x"}), "is not a header name"),
            (json!({"header": "a", "in": []}), "takes 1 to 256 values"),
            (
                json!({"header": "a", "exists": "yes"}),
                "takes true or false",
            ),
            (
                json!({"all": []}),
                "`filter.all`: takes at least one condition",
            ),
            (
                json!({"not": [1]}),
                "`filter.not`: a condition is an object",
            ),
            (json!("push"), "a condition is an object"),
        ] {
            let err = error(bad.clone());
            assert!(err.contains(reason), "{bad}: {err}");
        }
        let mut deep = json!({"header": "a", "eq": "x"});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(error(deep).contains("nest at most 8 deep"));
        let many: Vec<Value> = (0..MAX_CONDITIONS)
            .map(|_| json!({"header": "a", "eq": "x"}))
            .collect();
        assert!(error(json!({"any": many})).contains("at most 64 conditions"));
        let fit: Vec<Value> = (0..MAX_CONDITIONS - 1)
            .map(|_| json!({"header": "a", "eq": "x"}))
            .collect();
        assert!(Condition::parse(&json!({"any": fit}), "filter").is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn leaf() -> impl Strategy<Value = Value> {
            let selector = prop_oneof![
                Just("header"),
                Just("query"),
                Just("json_pointer"),
                Just("form"),
                Just("bogus")
            ];
            let operator = prop::sample::select(
                &[
                    "eq", "ne", "in", "exists", "prefix", "suffix", "contains", "regex", "gt",
                    "gte", "lt", "lte", "nope",
                ][..],
            );
            let operand = prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                any::<f64>().prop_map(|f| json!(f)),
                "\\PC{0,12}".prop_map(Value::String),
                prop::collection::vec("\\PC{0,6}".prop_map(Value::String), 0..4)
                    .prop_map(Value::Array),
                Just(Value::Null),
            ];
            (selector, "/?\\PC{0,8}", operator, operand)
                .prop_map(|(s, name, o, v)| json!({s: name, o: v}))
        }

        fn rule() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(10, 80, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(|v| json!({"all": v})),
                    prop::collection::vec(inner.clone(), 0..5).prop_map(|v| json!({"any": v})),
                    inner.prop_map(|v| json!({"not": v})),
                ]
            })
        }

        proptest! {
            #[test]
            fn evaluation_never_panics_and_stays_within_its_bound(
                rule in rule(),
                header in "\\PC{0,20}",
                query in "\\PC{0,40}",
                body in prop_oneof![
                    "\\PC{0,80}",
                    Just(r#"{"a":{"b":[1,"x",{"c":null}]},"n":3.5}"#.to_owned()),
                ],
            ) {
                let Ok(condition) = Condition::parse(&rule, "filter") else {
                    return Ok(());
                };
                let lookup = |_: &str| Some(header.as_str());
                let request = Request::new(&lookup, Some(&query), body.as_bytes());
                let mut steps = 0;
                let _ = condition.eval(&request, &mut steps);
                prop_assert!(steps <= MAX_CONDITIONS, "{steps} steps");
            }
        }
    }
}
