//! `LOG_FORMAT=text`: tracing-subscriber's line format, with every field value escaped.
//!
//! Field values carry text from outside (a `blob` body, a header): a raw newline in one would
//! start a convincing forged log line, and an ANSI escape would repaint the operator's
//! terminal. Every control character is written as an escape (`\n`, `\r`, `\t`, `\u{1b}`), so
//! one event is always exactly one line; so are the separators and bidirectional controls
//! ([`super::is_deceptive`]).

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::{
    field::MakeExt,
    fmt::{
        format::{debug_fn, Writer},
        FormatFields,
    },
};

/// A `fmt::Write` that escapes control characters on the way through.
pub struct Escaped<'a, W: fmt::Write + ?Sized>(pub &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if !super::is_deceptive(c) {
                continue;
            }
            self.0.write_str(&s[start..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

fn field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    if field.name() != "message" {
        write!(writer, "{field}=")?;
    }
    write!(Escaped(writer), "{value:?}")
}

/// The field formatter of the text format.
pub fn fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(field).delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write!(Escaped(&mut out), "{s}").unwrap();
        out
    }

    #[test]
    fn control_characters_become_escapes() {
        assert_eq!(
            escaped("ok\nINFO forged\r\x1b[31mred\x1b[0m\ttab\u{85}é"),
            "ok\\nINFO forged\\r\\u{1b}[31mred\\u{1b}[0m\\ttab\\u{85}é"
        );
        assert_eq!(escaped("plain text"), "plain text");
        assert_eq!(
            escaped("invoice\u{202e}fdp.exe\u{2028}x\u{2066}\u{61c}"),
            "invoice\\u{202e}fdp.exe\\u{2028}x\\u{2066}\\u{61c}"
        );
        assert_eq!(escaped(""), "");
    }
}
