//! The `tracing` subscriber: text or JSON lines, filtered by `RUST_LOG`.

mod json;
pub mod text;
pub mod trace;

use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

use crate::settings::LogFormat;

/// Characters that change how a log line reads without being visible text, besides the C0
/// and C1 controls: the line and paragraph separators (a line break to some viewers) and the
/// bidirectional controls (U+202E turns `txt.exe` around). Both formats escape them, and the
/// `log` module never writes a body holding one raw.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `error` and its causes on one line, each said once: a cause whose text the message already
/// holds (errors that quote their source) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = source.source();
    }
    line
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid setting RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber writing to `writer` (stdout in `main`, a sink in tests).
pub fn init<W>(format: LogFormat, filter: &str, writer: W) -> Result<(), TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colours only on a terminal: files, pipes, journald and `docker logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match format {
        LogFormat::Text => builder.fmt_fields(text::fields()).try_init(),
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the spool in /x: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("spool store: {0}")]
    struct Inner(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Terse(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::other("Database already open");
        assert_eq!(
            super::error_chain(&Outer(Inner(io()))),
            "cannot open the spool in /x: spool store: Database already open"
        );
        assert_eq!(
            super::error_chain(&Terse(io())),
            "cannot start: Database already open"
        );
    }
}
