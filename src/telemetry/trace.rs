//! OpenTelemetry traces, exported over OTLP: off unless an endpoint is set, and then a span per
//! webhook request with its stages (verification, dedup, each destination, the spool) as
//! children, and a `forward` span per spooled copy joining the request's trace later.
//!
//! Configured by the standard variables only (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, ...;
//! the README's "Tracing" lists them). Spans are handed to a batch exporter on its own thread: a
//! collector that is slow or gone costs the request path nothing but a bounded queue.
//!
//! Off, a [`Span`] is `None` and every call on it returns at once: the cost is one load of the
//! tracer slot per span.

use std::{borrow::Cow, fmt, sync::OnceLock, time::Duration};

use opentelemetry::{
    trace::{
        Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
        TraceState, Tracer as _, TracerProvider as _,
    },
    Context, KeyValue, Value,
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    resource::EnvResourceDetector,
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};

/// The tracer, once an exporter is installed; empty when tracing is off.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported (work that only feeds spans is skipped otherwise).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Why tracing could not be set up (exit 64, naming the variable).
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("invalid setting {name}: `{value}` (use `grpc` or `http/protobuf`)")]
    Protocol { name: &'static str, value: String },
    #[error("invalid setting OTEL_TRACES_EXPORTER: `{0}` (use `otlp` or `none`)")]
    Exporter(String),
    #[error("invalid setting {name}: `{value}` (an http:// or https:// URL with a host)")]
    Endpoint { name: &'static str, value: String },
    #[error("cannot build the OTLP trace exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("tracing is already installed")]
    AlreadyInstalled,
}

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318; the spec's default).
    HttpProtobuf,
}

/// What the standard variables ask for: `None` when tracing is off.
pub fn configured(env: impl Fn(&str) -> Option<String>) -> Result<Option<Transport>, TracingError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => return Err(TracingError::Exporter(other.to_owned())),
    }
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| Some((name, set(name)?)));
    let Some((name, value)) = endpoint else {
        return Ok(None);
    };
    // The exporter takes a URL it cannot use without a word and fails on every export.
    let usable = value.trim().parse::<hyper::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
    });
    if !usable {
        return Err(TracingError::Endpoint { name, value });
    }
    let (name, value) = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| Some((name, set(name)?)))
    .unwrap_or(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()));
    match value.trim() {
        "grpc" => Ok(Some(Transport::Grpc)),
        "http/protobuf" => Ok(Some(Transport::HttpProtobuf)),
        _ => Err(TracingError::Protocol { name, value }),
    }
}

/// The installed exporter; [`Tracing::shutdown`] sends what is still queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tracing")
    }
}

/// Installs the exporter the environment asks for, or nothing. A gRPC exporter must be built
/// where a Tokio runtime is entered (its connection runs there); an HTTP one outside any.
pub fn init(transport: Transport) -> Result<Tracing, TracingError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match transport {
        Transport::Grpc => builder.with_tonic().build()?,
        Transport::HttpProtobuf => builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()?,
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    TRACER
        .set(provider.tracer("switchyard"))
        .map_err(|_| TracingError::AlreadyInstalled)?;
    Ok(Tracing { provider })
}

/// `service.name` is `switchyard` unless `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) says otherwise; `service.version` is this build's.
fn resource() -> Resource {
    let builder = Resource::builder_empty()
        .with_service_name("switchyard")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_detector(Box::new(EnvResourceDetector::new()));
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.trim().is_empty() => builder.with_service_name(name),
        _ => builder,
    }
    .build()
}

impl Tracing {
    /// Exports the spans still queued, within `timeout`.
    pub fn shutdown(self, timeout: Duration) {
        if let Err(error) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(%error, "Spans still queued at the stop were not all exported.");
        }
    }
}

/// Where a span sits in a trace, as the W3C `traceparent` header writes it; what a spooled
/// record carries so its forward joins the request's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(SpanContext);

impl TraceParent {
    /// `00-<trace id>-<span id>-<flags>`.
    pub fn to_w3c(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.0.trace_id(),
            self.0.span_id(),
            self.0.trace_flags().to_u8()
        )
    }

    /// A `traceparent` value of version `00`, strictly: lower-case hex, non-zero ids.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if parts.next().is_some()
            || version != "00"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let context = SpanContext::new(
            TraceId::from_hex(trace).ok()?,
            SpanId::from_hex(span).ok()?,
            TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8()),
            true,
            TraceState::default(),
        );
        context.is_valid().then_some(Self(context))
    }
}

/// A span in progress, ended when dropped; nothing at all when tracing is off.
#[derive(Debug, Default)]
pub struct Span(Option<Context>);

impl Span {
    /// The root span of a request this server received (`SERVER`). A `traceparent` the sender
    /// sent is a link, never the parent: a sender on the internet cannot place our spans in
    /// its trace, nor choose whether we sample.
    pub fn request(name: impl Into<Cow<'static, str>>, sent: Option<&str>) -> Self {
        Self::start(
            name,
            SpanKind::Server,
            &Context::new(),
            |builder| match sent.and_then(TraceParent::parse) {
                Some(TraceParent(context)) => builder.with_links(vec![Link::with_context(context)]),
                None => builder,
            },
        )
    }

    /// A stage of this span's work.
    pub fn child(&self, name: impl Into<Cow<'static, str>>) -> Self {
        match &self.0 {
            Some(parent) => Self::start(name, SpanKind::Internal, parent, |b| b),
            None => Self(None),
        }
    }

    /// A stage of a request's work done where only its [`TraceParent`] travelled (the
    /// dispatch, the spool); nothing when there is none.
    pub fn stage(parent: Option<&TraceParent>, name: &'static str) -> Self {
        match parent {
            Some(TraceParent(context)) => Self::start(
                name,
                SpanKind::Internal,
                &Context::new().with_remote_span_context(context.clone()),
                |b| b,
            ),
            None => Self(None),
        }
    }

    /// A hand-over to a destination (`CLIENT`), under `parent` (a request's span, read back
    /// from a spooled record), or a trace of its own for a record stored without one. It
    /// counts as failed unless [`Span::ok`] is called: a hand-over cut off by its deadline
    /// ends without an answer.
    pub fn destination(parent: Option<&TraceParent>, name: &'static str) -> Self {
        let parent = parent.map_or_else(Context::new, |TraceParent(context)| {
            Context::new().with_remote_span_context(context.clone())
        });
        let span = Self::start(name, SpanKind::Client, &parent, |b| b);
        span.fail(&"cut off before the destination answered");
        span
    }

    fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        build: impl FnOnce(opentelemetry::trace::SpanBuilder) -> opentelemetry::trace::SpanBuilder,
    ) -> Self {
        let Some(tracer) = TRACER.get() else {
            return Self(None);
        };
        let builder = build(tracer.span_builder(name).with_kind(kind));
        let span = tracer.build_with_context(builder, parent);
        Self(Some(Context::new().with_span(span)))
    }

    /// Sets an attribute (nothing when off).
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(context) = &self.0 {
            context.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed, with the error's text.
    pub fn fail(&self, error: &dyn fmt::Display) {
        if let Some(context) = &self.0 {
            context.span().set_status(Status::error(error.to_string()));
        }
    }

    /// Marks the span succeeded (final: later failures do not change it).
    pub fn ok(&self) {
        if let Some(context) = &self.0 {
            context.span().set_status(Status::Ok);
        }
    }

    /// Where this span sits, for a record that outlives it.
    pub fn parent_of_later(&self) -> Option<TraceParent> {
        let context = self.0.as_ref()?.span().span_context().clone();
        context.is_valid().then_some(TraceParent(context))
    }

    /// Whether spans are exported at all (skips work that only feeds attributes).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_and_when_disabled() {
        assert!(configured(env(&[])).unwrap().is_none());
        assert!(configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]))
            .unwrap()
            .is_none());
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")];
        assert_eq!(configured(env(&on)).unwrap(), Some(Transport::HttpProtobuf));
        let disabled = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert!(configured(env(&disabled)).unwrap().is_none());
        let none = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert!(configured(env(&none)).unwrap().is_none());
    }

    #[test]
    fn the_protocol_is_read_from_the_signal_variable_first() {
        let grpc = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ];
        assert_eq!(configured(env(&grpc)).unwrap(), Some(Transport::Grpc));
        let json = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        let error = configured(env(&json)).unwrap_err().to_string();
        assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
        for bad in [
            "collector:4318",
            "http://bad host:4318",
            "ftp://collector",
            "http://",
        ] {
            let error = configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]));
            assert!(matches!(error, Err(TracingError::Endpoint { .. })), "{bad}");
        }
        let zipkin = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
        ];
        assert!(configured(env(&zipkin)).is_err());
    }

    #[test]
    fn a_traceparent_round_trips_and_anything_else_is_refused() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(text).unwrap().to_w3c(), text);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn off_every_span_is_nothing() {
        let span = Span::request("POST /webhook/{id}", None);
        assert!(!span.is_on());
        assert!(!span.child("verify").is_on());
        assert!(span.parent_of_later().is_none());
        span.set("request_id", "r-1");
        span.fail(&"down");
    }
}
