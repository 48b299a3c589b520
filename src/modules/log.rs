//! The `log` module: writes each payload as one `tracing` event.

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
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            pretty_print: false,
            headers: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

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
}

impl LogModule {
    pub fn new(config: LogConfig) -> Self {
        Self { config }
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
        Some(serde_json::Value::Object(found).to_string())
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
        // A one-line JSON body is logged as JSON (`body_json`): structured for log processors,
        // and no escaping on the hot path. Anything else is an escaped string (`body`). Raw CR
        // is JSON whitespace too, and would let a body redraw a terminal line: not one line.
        if delivery.json
            && !self.config.pretty_print
            && delivery.body.len() <= self.config.max_body_bytes
            && logs_as_is(&delivery.body)
        {
            if let Ok(body) = std::str::from_utf8(&delivery.body) {
                tracing::info!(
                    target: "switchyard::payload",
                    namespace = delivery.namespace.as_str(),
                    webhook = delivery.webhook.as_str(),
                    request_id = delivery.request_id.as_str(),
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
