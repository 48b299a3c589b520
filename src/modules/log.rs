//! The `log` module: writes each payload as one `tracing` event.

use std::borrow::Cow;

use serde::Deserialize;

use super::{Delivery, DeliveryError, Module};

/// `module-config` of the `log` module.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Pretty-print JSON bodies over several lines (default false: one line per webhook).
    #[serde(default)]
    pub pretty_print: bool,
    /// Request headers to log with the payload (`["X-GitHub-Event"]`: for GitHub the event
    /// type is only in a header). Credential headers are never handed to modules, so never
    /// logged.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Bytes of a body written per log line at most (default 64 KiB, at most 16 MiB); the rest
    /// is replaced by a marker with the body's full length (`size` has it too).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Where the webhook's provider (its `hmac` preset) puts the event type and the delivery
    /// id, logged as `event_type` and `delivery_id`; set by the webhook, not written.
    #[serde(skip)]
    pub event_fields: Option<EventFields>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            pretty_print: false,
            headers: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            event_fields: None,
        }
    }
}

/// Where a provider puts one field the log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The first of these request headers present (lower-case names).
    Headers(Vec<String>),
    /// A string at this path of a JSON body.
    Json(Vec<String>),
}

/// A provider's event type and delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields {
    pub event_type: Option<Field>,
    pub delivery_id: Option<Field>,
}

/// A logged event type or delivery id is cut to this many bytes.
const MAX_FIELD_BYTES: usize = 256;
/// Bodies larger than this are not searched for an event type or delivery id.
const MAX_SEARCHED_BODY: usize = 1024 * 1024;

fn default_max_body_bytes() -> usize {
    64 * 1024
}

/// The largest `max_body_bytes` accepted.
pub const MAX_LOGGED_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Most headers one `log` module logs.
pub const MAX_LOGGED_HEADERS: usize = 20;

impl LogConfig {
    /// Checks the header names (valid names, at most [`MAX_LOGGED_HEADERS`]).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_LOGGED_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(format!(
                "`max_body_bytes` is {}; it must be between 1 and {MAX_LOGGED_BODY_BYTES}",
                self.max_body_bytes
            ));
        }
        if self.headers.len() > MAX_LOGGED_HEADERS {
            return Err(format!(
                "`headers` lists at most {MAX_LOGGED_HEADERS} header names"
            ));
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        match self
            .headers
            .iter()
            .find(|h| h.is_empty() || !h.chars().all(token))
        {
            Some(bad) => Err(format!("`headers`: {bad:?} is not a header name")),
            None => Ok(()),
        }
    }
}

/// Logs every delivery at INFO under the target `switchyard::payload`.
#[derive(Debug)]
pub struct LogModule {
    config: LogConfig,
    /// The body fields' top-level member names, quoted (`"event"`), as searchers built once:
    /// a body without the name is not scanned.
    quoted: [Option<memchr::memmem::Finder<'static>>; 2],
}

impl LogModule {
    pub fn new(config: LogConfig) -> Self {
        let fields = config.event_fields.as_ref();
        let quoted = [
            fields.and_then(|f| f.event_type.as_ref()),
            fields.and_then(|f| f.delivery_id.as_ref()),
        ]
        .map(|field| {
            top_member(field).map(|key| {
                memchr::memmem::Finder::new(format!("\"{key}\"").as_bytes()).into_owned()
            })
        });
        Self { config, quoted }
    }

    /// The configured headers present on the request, as one JSON object (`None`: none
    /// configured).
    fn render_headers(&self, delivery: &Delivery) -> Option<String> {
        if self.config.headers.is_empty() {
            return None;
        }
        let found: serde_json::Map<String, serde_json::Value> = self
            .config
            .headers
            .iter()
            .filter_map(|name| {
                delivery
                    .header(name)
                    .map(|v| (name.to_ascii_lowercase(), v.into()))
            })
            .collect();
        Some(ascii_json(serde_json::Value::Object(found).to_string()))
    }

    /// The event type and delivery id of the webhook's provider, where the request has them.
    fn event_fields<'a>(
        &self,
        delivery: &'a Delivery,
    ) -> (Option<Cow<'a, str>>, Option<Cow<'a, str>>) {
        let Some(fields) = &self.config.event_fields else {
            return (None, None);
        };
        // Both body fields' top-level members are found in one scan of the body.
        let searched = delivery.json && delivery.body.len() <= MAX_SEARCHED_BODY;
        let (event_type, delivery_id) = (fields.event_type.as_ref(), fields.delivery_id.as_ref());
        // A name that is nowhere in the body, quoted, is not looked for (one written with
        // escapes is then missed: it only goes unlogged).
        let first = |field, quoted: &Option<memchr::memmem::Finder<'static>>| {
            let present = quoted.as_ref()?.find(&delivery.body).is_some();
            (searched && present).then(|| top_member(field)).flatten()
        };
        let tops = members(
            &delivery.body,
            [
                first(event_type, &self.quoted[0]),
                first(delivery_id, &self.quoted[1]),
            ],
        );
        let find = |field: Option<&Field>, top: Option<&'a str>| -> Option<Cow<'a, str>> {
            let found = match field? {
                Field::Headers(names) => names
                    .iter()
                    .find_map(|name| delivery.header(name))
                    .map(Cow::Borrowed),
                Field::Json(path) => json_string(top?.as_bytes(), path.get(1..)?).map(Cow::Owned),
            }?;
            Some(cut(found))
        };
        (find(event_type, tops[0]), find(delivery_id, tops[1]))
    }

    fn render_body<'a>(&self, body: &'a [u8]) -> std::borrow::Cow<'a, str> {
        if body.len() > self.config.max_body_bytes {
            // Cut on a character boundary where the cut falls inside one (lossy decoding would
            // turn the split character into U+FFFD, which is harmless either way).
            let shown = String::from_utf8_lossy(&body[..self.config.max_body_bytes]);
            return format!(
                "{}…[truncated: {} bytes in all]",
                shown.trim_end_matches('\u{fffd}'),
                body.len()
            )
            .into();
        }
        if self.config.pretty_print {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
                if let Ok(pretty) = serde_json::to_string_pretty(&value) {
                    return pretty.into();
                }
            }
        }
        String::from_utf8_lossy(body)
    }
}

/// The top-level member a body field is under.
fn top_member(field: Option<&Field>) -> Option<&str> {
    match field? {
        Field::Json(path) => path.first().map(String::as_str),
        Field::Headers(_) => None,
    }
}

/// The string at `path` inside the JSON text `json` (an empty path: `json` itself), read
/// without building any of it: each level is scanned for its member, skipping the others.
fn json_string(json: &[u8], path: &[impl AsRef<str>]) -> Option<String> {
    let mut current = json;
    for key in path {
        current = members(current, [Some(key.as_ref()), None])[0]?.as_bytes();
    }
    serde_json::from_slice::<String>(current).ok()
}

/// The raw JSON text of the members `keys` of the object `json`, in one scan that skips other
/// values unparsed and stops once every key wanted is found. `None` keys are not wanted.
fn members<'a>(json: &'a [u8], keys: [Option<&str>; 2]) -> [Option<&'a str>; 2] {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;
    /// Which wanted key a member name is, compared as read (escaped or not), never stored.
    struct Which<'k>(&'k [Option<&'k str>; 2]);
    impl<'de> serde::de::DeserializeSeed<'de> for Which<'_> {
        type Value = Option<usize>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl Visitor<'_> for Which<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a member name")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
            Ok(self.0.iter().position(|key| *key == Some(name)))
        }
    }
    struct Find<'k, 'a> {
        keys: &'k [Option<&'k str>; 2],
        found: &'k mut [Option<&'a str>; 2],
    }
    impl<'de> Visitor<'de> for Find<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(which) = map.next_key_seed(Which(self.keys))? {
                let Some(index) = which else {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                };
                self.found[index] = Some(map.next_value::<&'de RawValue>()?.get());
                let done = (0..2).all(|i| self.keys[i].is_none() || self.found[i].is_some());
                if done {
                    // Stop here: the rest of the body is not read.
                    return Err(serde::de::Error::custom("found"));
                }
            }
            Ok(())
        }
    }
    let mut found = [None, None];
    if keys.iter().all(Option::is_none) {
        return found;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let _ = deserializer.deserialize_map(Find {
        keys: &keys,
        found: &mut found,
    });
    found
}

/// JSON text with every character outside printable ASCII written as a `\u` escape: the
/// `headers` field is written raw into JSON log lines, where a bidirectional control or a
/// separator must never appear as itself. Such characters occur only inside strings.
fn ascii_json(json: String) -> String {
    if json.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `value` cut to [`MAX_FIELD_BYTES`] on a character boundary.
fn cut(value: Cow<'_, str>) -> Cow<'_, str> {
    if value.len() <= MAX_FIELD_BYTES {
        return value;
    }
    let mut end = MAX_FIELD_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(value[..end].to_owned())
}

/// A JSON body without the whitespace between its tokens (inside strings nothing changes), so a
/// pretty-printed body is logged as one line of JSON like any other. `None`: not JSON this can
/// read (a validated body always is).
fn minified(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in body {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
    (!in_string).then_some(out)
}

/// Whether a one-line JSON body may be written raw into a log line: no CR or LF, no C1 control
/// (an 8-bit CSI repaints some terminals), no separator or bidirectional control (see
/// [`crate::telemetry::is_deceptive`]). Anything else is logged escaped.
fn logs_as_is(body: &[u8]) -> bool {
    if memchr::memchr3(b'\n', b'\r', 0xc2, body).is_some() {
        return false;
    }
    // DEL, and the lead bytes 0xE2 and 0xD8 of many ordinary characters (dashes, quotes,
    // Arabic letters) of which only a few matter: look closer only when one occurs.
    if memchr::memchr3(0x7f, 0xe2, 0xd8, body).is_none() {
        return true;
    }
    std::str::from_utf8(body).is_ok_and(|text| {
        !text
            .chars()
            .any(|c| c != '\t' && crate::telemetry::is_deceptive(c))
    })
}

#[async_trait::async_trait]
impl Module for LogModule {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let headers = self.render_headers(delivery);
        let (event_type, delivery_id) = self.event_fields(delivery);
        // A JSON body is logged as JSON (`body_json`): structured for log processors, and no
        // escaping on the hot path; one written over several lines is logged without the
        // whitespace between its tokens. Anything else is an escaped string (`body`). Raw CR is
        // JSON whitespace too, and would let a body redraw a terminal line: never raw.
        let one_line = if delivery.json
            && !self.config.pretty_print
            && delivery.body.len() <= self.config.max_body_bytes
        {
            if logs_as_is(&delivery.body) {
                Some(Cow::Borrowed(&delivery.body[..]))
            } else {
                minified(&delivery.body)
                    .filter(|body| logs_as_is(body))
                    .map(Cow::Owned)
            }
        } else {
            None
        };
        if let Some(body) = one_line {
            if let Ok(body) = std::str::from_utf8(&body) {
                tracing::info!(
                    target: "switchyard::payload",
                    namespace = delivery.namespace.as_str(),
                    webhook = delivery.webhook.as_str(),
                    request_id = delivery.request_id.as_str(),
                    event_type = event_type.as_deref(),
                    delivery_id = delivery_id.as_deref(),
                    size = delivery.body.len(),
                    content_type = delivery.header("content-type").unwrap_or(""),
                    headers = headers.as_deref(),
                    body_json = body,
                    "Webhook received."
                );
                return Ok(());
            }
        }
        tracing::info!(
            target: "switchyard::payload",
            namespace = delivery.namespace.as_str(),
            webhook = delivery.webhook.as_str(),
            request_id = delivery.request_id.as_str(),
            event_type = event_type.as_deref(),
            delivery_id = delivery_id.as_deref(),
            size = delivery.body.len(),
            content_type = delivery.header("content-type").unwrap_or(""),
            headers = headers.as_deref(),
            body = %self.render_body(&delivery.body),
            "Webhook received."
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_headers_are_rendered_and_names_checked() {
        let module = LogModule::new(LogConfig {
            headers: vec!["X-GitHub-Event".into(), "X-Missing".into()],
            ..LogConfig::default()
        });
        let delivery = Delivery {
            namespace: crate::keys::Namespace::parse("a").unwrap(),
            webhook: crate::keys::WebhookId::parse("w").unwrap(),
            request_id: "r".into(),
            received_at: std::time::SystemTime::now(),
            headers: vec![("x-github-event".into(), "push".into())],
            body: bytes::Bytes::from_static(b"{}"),
            json: true,
            trace: None,
            relayed: Vec::new(),
        };
        assert_eq!(
            module.render_headers(&delivery).as_deref(),
            Some(r#"{"x-github-event":"push"}"#)
        );
        assert_eq!(
            LogModule::new(LogConfig::default()).render_headers(&delivery),
            None
        );
        let bad = LogConfig {
            headers: vec!["X Event".into()],
            ..LogConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    fn delivery(headers: &[(&str, &str)], body: &'static [u8]) -> Delivery {
        Delivery {
            namespace: crate::keys::Namespace::parse("a").unwrap(),
            webhook: crate::keys::WebhookId::parse("w").unwrap(),
            request_id: "r".into(),
            received_at: std::time::SystemTime::now(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: bytes::Bytes::from_static(body),
            json: true,
            trace: None,
            relayed: Vec::new(),
        }
    }

    #[test]
    fn event_fields_come_from_headers_or_the_body() {
        let module = |event_type, delivery_id| {
            LogModule::new(LogConfig {
                event_fields: Some(EventFields {
                    event_type,
                    delivery_id,
                }),
                ..LogConfig::default()
            })
        };
        let github = module(
            Some(Field::Headers(vec!["x-github-event".into()])),
            Some(Field::Headers(vec!["x-github-delivery".into()])),
        );
        let d = delivery(
            &[("x-github-event", "push"), ("x-github-delivery", "d-1")],
            b"{}",
        );
        let (event, id) = github.event_fields(&d);
        assert_eq!(
            (event.as_deref(), id.as_deref()),
            (Some("push"), Some("d-1"))
        );
        let slack = module(
            Some(Field::Json(vec!["event".into(), "type".into()])),
            Some(Field::Json(vec!["event_id".into()])),
        );
        let d = delivery(
            &[],
            br#"{"event_id":"Ev1","event":{"type":"app_mention","text":"x"},"n":[1,{"a":2}]}"#,
        );
        let (event, id) = slack.event_fields(&d);
        assert_eq!(
            (event.as_deref(), id.as_deref()),
            (Some("app_mention"), Some("Ev1"))
        );
        // Absent, not a string, or not JSON: nothing logged.
        for body in [&br#"{"event":{"type":7}}"#[..], b"not json", b"[]"] {
            let d = Delivery {
                body: bytes::Bytes::copy_from_slice(body),
                ..delivery(&[], b"")
            };
            assert_eq!(slack.event_fields(&d), (None, None));
        }
        let long = Box::leak(format!(r#"{{"event_id":"{}"}}"#, "x".repeat(1000)).into_boxed_str());
        let d = delivery(&[], long.as_bytes());
        let (_, id) = slack.event_fields(&d);
        assert_eq!(id.map(|i| i.len()), Some(MAX_FIELD_BYTES));
    }

    #[test]
    fn member_names_are_compared_as_read_and_the_scan_stops_when_both_are_found() {
        assert_eq!(
            json_string(br#"{"a\"b":1,"ev\u0065nt_id":"Ev2"}"#, &["event_id"]).as_deref(),
            Some("Ev2"),
            "names are compared decoded by the scan (the module only skips a body without the \
             top-level name as written)"
        );
        let body = br#"{"x":[1,{"y":"}"}],"type":"t","id":"i","rest": not json"#;
        assert_eq!(
            members(body, [Some("type"), Some("id")]),
            [Some(r#""t""#), Some(r#""i""#)],
            "found before the broken rest"
        );
        assert_eq!(members(body, [None, None]), [None, None]);
        assert_eq!(
            json_string(br#"{"event":{"type":"m"}}"#, &["event", "type"]).as_deref(),
            Some("m")
        );
    }

    #[test]
    fn pretty_printed_json_loses_only_the_whitespace_between_tokens() {
        assert_eq!(
            minified(b"{\n  \"a b\": \"x\\\" \\n y\",\r\n\t\"n\": [1, 2]\n}").as_deref(),
            Some(&b"{\"a b\":\"x\\\" \\n y\",\"n\":[1,2]}"[..])
        );
        assert_eq!(minified(b"\"open"), None);
    }

    #[test]
    fn logged_headers_are_ascii_json() {
        assert_eq!(ascii_json(r#"{"a":"b"}"#.into()), r#"{"a":"b"}"#);
        assert_eq!(
            ascii_json("{\"a\":\"\u{202e}\u{e9}\u{1f600}\"}".into()),
            r#"{"a":"\u202e\u00e9\ud83d\ude00"}"#
        );
    }

    #[test]
    fn only_bodies_without_line_breaks_or_controls_are_logged_raw() {
        assert!(logs_as_is(
            "{\"a\":\"caf\\u00e9\",\"b\":\"\u{e9}\u{2014}\"}".as_bytes()
        ));
        for bad in [
            &b"{\"a\":1}\n"[..],
            b"{\"a\":\r1}",
            "{\"a\":\"\u{9b}31m\"}".as_bytes(),
            "{\"a\":\"\u{2028}\"}".as_bytes(),
            "{\"a\":\"invoice\u{202e}fdp.exe\"}".as_bytes(),
            "{\"a\":\"\u{2066}\"}".as_bytes(),
            "{\"a\":\"\u{61c}\"}".as_bytes(),
            "{\"a\":\"\u{7f}\"}".as_bytes(),
        ] {
            assert!(!logs_as_is(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_body_over_the_limit_is_cut_with_a_marker_holding_its_length() {
        let module = LogModule::new(LogConfig {
            max_body_bytes: 5,
            ..LogConfig::default()
        });
        assert_eq!(module.render_body(b"12345"), "12345");
        assert_eq!(
            module.render_body(b"1234567890"),
            "12345…[truncated: 10 bytes in all]"
        );
        // "é" is two bytes: a cut inside it drops the half character.
        assert_eq!(
            module.render_body("1234é".as_bytes()),
            "1234…[truncated: 6 bytes in all]"
        );
        assert_eq!(LogConfig::default().max_body_bytes, 65_536);
        for bad in [0, MAX_LOGGED_BODY_BYTES + 1] {
            let config = LogConfig {
                max_body_bytes: bad,
                ..LogConfig::default()
            };
            assert!(config.validate().unwrap_err().contains("max_body_bytes"));
        }
    }

    #[test]
    fn pretty_print_formats_json_and_keeps_other_bodies() {
        let pretty = LogModule::new(LogConfig {
            pretty_print: true,
            ..LogConfig::default()
        });
        assert_eq!(pretty.render_body(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(pretty.render_body(b"not json"), "not json");
        let plain = LogModule::new(LogConfig::default());
        assert_eq!(plain.render_body(br#"{"a":1}"#), r#"{"a":1}"#);
    }
}
