//! A real OTLP receiver: rotel, a Rust OpenTelemetry collector (PyPI `rotel`, installed by
//! `make deps` into `target/tools-venv`), on free gRPC and HTTP ports, printing every span it
//! receives in the collector's `debug` format; [`Collector::spans`] reads them back.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{ports::free_port, wait_until};

/// A running collector; killed on drop.
pub struct Collector {
    child: Child,
    pub grpc: u16,
    pub http: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// One span as the collector received it.
#[derive(Debug, Clone, Default)]
pub struct ExportedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    /// Empty for a trace's root.
    pub parent_id: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub status: String,
    pub status_message: String,
    /// Values as printed: `Str(..)` and `Int(..)` unwrapped.
    pub attributes: BTreeMap<String, String>,
    /// The trace ids of its links.
    pub links: Vec<String>,
}

impl ExportedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn binary() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    PathBuf::from(format!("{root}/target/tools-venv/bin/rotel-agent"))
}

impl Collector {
    pub async fn start() -> Self {
        let binary = binary();
        assert!(
            binary.exists(),
            "rotel is missing: run ./scripts/install-deps.sh (make deps)"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.txt");
        let file = std::fs::File::create(&out).unwrap();
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(binary)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("rotel starts");
        let collector = Self {
            child,
            grpc,
            http,
            out,
            _dir: dir,
        };
        wait_until(
            Duration::from_secs(20),
            "the collector listening",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", grpc))
                    .await
                    .is_ok()
                    && tokio::net::TcpStream::connect(("127.0.0.1", http))
                        .await
                        .is_ok()
            },
        )
        .await;
        collector
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        parse(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }

    /// Waits until `found` picks something out of the spans received; returns it.
    pub async fn wait_for<T>(&self, what: &str, found: impl Fn(&[ExportedSpan]) -> Option<T>) -> T {
        let mut answer = None;
        super::wait::poll_until(Duration::from_secs(30), || {
            answer = found(&self.spans());
            std::future::ready(answer.is_some())
        })
        .await;
        answer.unwrap_or_else(|| {
            panic!(
                "timed out waiting for spans: {what}; received: {:#?}",
                self.spans()
            )
        })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the `debug` exporter's detailed text: a `Span #n` block per span, its fields as
/// `Name : value` lines, then `Attributes:` and `Links:` as `-> key: value` lines.
fn parse(text: &str) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    let mut current: Option<ExportedSpan> = None;
    let mut in_links = false;
    let mut service = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Span #") || trimmed.starts_with("ResourceSpans #") {
            spans.extend(current.take());
            in_links = false;
            if trimmed.starts_with("Span #") {
                current = Some(ExportedSpan {
                    service: service.clone(),
                    ..ExportedSpan::default()
                });
            }
            continue;
        }
        let Some(span) = current.as_mut() else {
            if let Some(name) = trimmed.strip_prefix("-> service.name: ") {
                service = unwrap_value(name);
            }
            continue;
        };
        if trimmed == "Links:" {
            in_links = true;
        } else if let Some(entry) = trimmed.strip_prefix("-> ") {
            let Some((key, value)) = entry.split_once(": ") else {
                continue;
            };
            if in_links {
                if key == "Trace ID" {
                    span.links.push(value.to_owned());
                }
            } else {
                span.attributes.insert(key.to_owned(), unwrap_value(value));
            }
        } else if let Some((key, value)) = trimmed.split_once(':') {
            let value = value.trim().to_owned();
            match key.trim() {
                "Trace ID" => span.trace_id = value,
                "Parent ID" => span.parent_id = value,
                "ID" => span.id = value,
                "Name" => span.name = value,
                "Kind" => span.kind = value,
                "Status code" => span.status = value,
                "Status message" => span.status_message = value,
                _ => {}
            }
        }
    }
    spans.extend(current);
    spans
}

fn unwrap_value(value: &str) -> String {
    ["Str(", "Int(", "Bool(", "Double("]
        .iter()
        .find_map(|prefix| value.strip_prefix(prefix)?.strip_suffix(')'))
        .unwrap_or(value)
        .to_owned()
}
