//! `LOG_FORMAT=json`: one JSON object per line, written straight into the line buffer.
//!
//! tracing-subscriber's own JSON formatter goes through serde and an `io::Write` adaptor that
//! re-validates UTF-8 on every write; on the `log` module's path (every payload is a log line)
//! that was the largest user-space cost in the profile (see BENCHMARKS.md). This formatter
//! escapes while writing and allocates nothing per field.
//!
//! A string field whose name ends in `_json`, or is `headers`, is written as raw JSON: the caller
//! guarantees it is valid, single-line JSON (the `log` module's `body_json`, checked at the HTTP
//! edge, and its `headers`, serialized by serde_json from header values that are visible ASCII).

use std::fmt::{self, Write as _};

use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{
    field::Visit,
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// The event formatter.
pub struct JsonLines;

/// Bytes that may need an escape: controls, `"`, `\\`, DEL, and the lead bytes of C1 controls
/// (0xC2), of U+061C (0xD8) and of the separators and bidirectional controls (0xE2). Everything
/// else is copied without a second look.
const ATTENTION: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table[0xc2] = true;
    table[0xd8] = true;
    table[0xe2] = true;
    table
};

/// A `fmt::Write` that JSON-escapes what passes through it.
struct Escape<'a, 'b>(&'a mut Writer<'b>);

impl fmt::Write for Escape<'_, '_> {
    /// Escapes what JSON requires, plus what a terminal or a log viewer would act on: DEL, the
    /// C1 controls (U+0080-U+009F, e.g. the 8-bit CSI) and the line and paragraph separators.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !ATTENTION[usize::from(b)] {
                i += 1;
                continue;
            }
            let (escape, len): (Option<&str>, usize) = match b {
                b'"' => (Some("\\\""), 1),
                b'\\' => (Some("\\\\"), 1),
                b'\n' => (Some("\\n"), 1),
                b'\r' => (Some("\\r"), 1),
                b'\t' => (Some("\\t"), 1),
                0..=0x1f | 0x7f => (None, 1),
                // C1 controls are U+0080-U+009F: 0xC2 then 0x80-0x9F.
                0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => (None, 2),
                // U+061C (Arabic letter mark): 0xD8 0x9C.
                0xd8 if bytes.get(i + 1) == Some(&0x9c) => (None, 2),
                // U+200E/F, U+2028/9, U+202A-E: 0xE2 0x80 ..; U+2066-9: 0xE2 0x81 0xA6-0xA9.
                0xe2 if matches!(
                    (bytes.get(i + 1), bytes.get(i + 2)),
                    (Some(0x80), Some(0x8e | 0x8f | 0xa8..=0xae)) | (Some(0x81), Some(0xa6..=0xa9))
                ) =>
                {
                    (None, 3)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            if start < i {
                self.0.write_str(&s[start..i])?;
            }
            match escape {
                Some(text) => self.0.write_str(text)?,
                None => {
                    let c = s[i..].chars().next().map_or(0, u32::from);
                    write!(self.0, "\\u{c:04x}")?;
                }
            }
            i += len;
            start = i;
        }
        if start < bytes.len() {
            self.0.write_str(&s[start..])?;
        }
        Ok(())
    }
}

struct Fields<'a, 'b> {
    writer: &'a mut Writer<'b>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_str(",\"")?;
        Escape(self.writer).write_str(field.name())?;
        self.writer.write_str("\":")
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| self.writer.write_fmt(value));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if (field.name().ends_with("_json") || field.name() == "headers") && !value.is_empty() {
            self.raw(field, format_args!("{value}"));
            return;
        }
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.writer.write_char('"')?;
                Escape(self.writer).write_str(value)?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.writer.write_char('"')?;
                write!(Escape(self.writer), "{value:?}")?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            self.raw(field, format_args!("null"));
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(
            writer,
            "{{\"timestamp\":\"{}\",\"level\":\"{}\",\"target\":\"",
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            meta.level()
        )?;
        Escape(&mut writer).write_str(meta.target())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("}\n")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn every_line_is_a_json_object_with_escaped_fields() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(capture.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let body = "{\"a\":\"line\nbreak\\ \u{1}\u{7f}\u{9b}\u{2028}\u{202e}\u{2067}\u{61c}\u{e9}\u{600}\"}";
            tracing::info!(
                target: "switchyard::payload",
                namespace = "acme",
                size = 42u64,
                delta = -1i64,
                ok = true,
                ratio = 0.5f64,
                nan = f64::NAN,
                body = %body,
                body_json = r#"{"nested": [1, "x"]}"#,
                "Webhook \"received\"."
            );
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "switchyard::payload");
        assert_eq!(v["namespace"], "acme");
        assert_eq!(v["size"], 42);
        assert_eq!(v["delta"], -1);
        assert_eq!(v["ok"], true);
        assert_eq!(v["ratio"], 0.5);
        assert!(v["nan"].is_null());
        assert_eq!(
            v["body"],
            "{\"a\":\"line\nbreak\\ \u{1}\u{7f}\u{9b}\u{2028}\u{202e}\u{2067}\u{61c}\u{e9}\u{600}\"}"
        );
        // What a terminal or viewer acts on is escaped; other text stays as it is.
        for raw in [
            '\u{7f}', '\u{9b}', '\u{2028}', '\u{202e}', '\u{2067}', '\u{61c}', '\n',
        ] {
            assert!(!text.trim_end().contains(raw), "{raw:?} in {text:?}");
        }
        assert!(text.contains('\u{e9}') && text.contains('\u{600}'));
        assert_eq!(v["message"], "Webhook \"received\".");
        assert_eq!(v["body_json"], serde_json::json!({"nested": [1, "x"]}));
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
