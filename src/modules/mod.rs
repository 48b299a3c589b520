//! Destinations: the `Module` trait, what a module is handed (`Delivery`), and the registry.
//!
//! Adding a module means one file or folder here, one row in [`REGISTRY`] and, for a new kind of
//! destination, one [`Kind`] variant with its arm in [`ModuleConfig::build`].

pub mod connect;
pub mod http;
pub mod kafka;
pub mod log;
pub mod redis;

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use serde_json::Value;

use crate::{
    condition::Mapping,
    config::ConfigError,
    connections::{ConnectionPool, PoolError},
    keys::{ConnectionName, Namespace, WebhookId},
    telemetry::trace::TraceParent,
};

/// A destination a webhook's payload is handed to (`log`, `kafka`, `redis_stream`, ...).
#[async_trait::async_trait]
pub trait Module: Send + Sync + std::fmt::Debug {
    /// The `module` name used in config, logs and metric labels.
    fn name(&self) -> &'static str;
    /// Returns once the destination has acknowledged the payload (Kafka delivery report,
    /// Redis reply). `Err` makes the sender retry (503); it never means "dropped".
    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError>;
    /// Hands several deliveries over at once, in order (the spool's forwarder); one result
    /// each. By default one `deliver` each, all started together; a module with a cheaper
    /// batch (one Redis transaction) overrides it.
    async fn deliver_all(&self, deliveries: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        deliver_each(self, deliveries).await
    }
}

/// One `deliver` per delivery, all started together (the default batch).
pub async fn deliver_each<M: Module + ?Sized>(
    module: &M,
    deliveries: &[Delivery],
) -> Vec<Result<(), DeliveryError>> {
    futures_util::future::join_all(deliveries.iter().map(|d| module.deliver(d))).await
}

/// One accepted request, built once and borrowed by every destination of the webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub namespace: Namespace,
    pub webhook: WebhookId,
    pub request_id: String,
    pub received_at: SystemTime,
    /// Request headers with credentials and signatures removed (see `http::webhook`).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The body is known to be valid JSON (checked at the edge for `data_type: json`).
    pub json: bool,
    /// The request's span, when traces are exported: each destination's span goes under it,
    /// and a spooled copy carries it to its forward.
    pub trace: Option<TraceParent>,
    /// The headers `headers` leaves out that a `connect` channel carries on, so that the
    /// private side can verify the sender's signature itself (every header but cookies,
    /// `Authorization` and `Proxy-Authorization`). Empty unless the webhook has a `connect`
    /// destination; no other module reads it, and it is never spooled (a channel is durable
    /// storage of its own).
    pub relayed: Vec<(String, String)>,
}

impl Delivery {
    /// A forwardable request header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Name fragments of headers that carry credentials or signatures; such headers never leave.
const SENSITIVE: &[&str] = &[
    "auth",
    "cookie",
    "signature",
    "secret",
    "token",
    "hmac",
    "api-key",
    "apikey",
    "api_key",
    "password",
    "session",
];

/// Whether a header (by lower-case name) may be logged or forwarded.
pub fn is_forwardable(name: &str) -> bool {
    !SENSITIVE.iter().any(|s| name.contains(s))
}

/// `2023-11-14T22:13:20.123Z`: the timestamp format of every module.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Why a destination did not take a payload, and whether retrying can help
/// ([`DeliveryError::is_permanent`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The destination could not be reached or could not take it now: retrying can help.
    #[error("module `{module}` could not deliver: {reason}")]
    Unavailable {
        module: &'static str,
        reason: String,
    },
    /// The destination refused this payload for good (Redis `WRONGTYPE`, a Kafka message over
    /// the broker's limit, no permission): the same attempt fails the same way until someone
    /// changes the destination or the config. Spooled, it goes to the dead letters at once;
    /// without the spool the sender gets `502 destination_rejected`.
    #[error("module `{module}` refused the payload: {reason}")]
    Rejected {
        module: &'static str,
        reason: String,
    },
    /// A spooled record's webhook or destination is not configured now (retried until its
    /// horizon: the entry may come back).
    #[error("{0}")]
    NoRoute(String),
    /// The destination asked to be called less often (HTTP 429): retryable, not before
    /// `retry_after` when it said so.
    #[error("module `{module}` was asked to slow down: {reason}")]
    Throttled {
        module: &'static str,
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// A `connect` channel holds its `max_bytes` of unacknowledged messages (503 `spool_full`
    /// for that channel's webhooks only).
    #[error("channel `{channel}` holds its {max} bytes of unacknowledged messages")]
    ChannelFull { channel: String, max: u64 },
    /// No acknowledgement within the webhook's timeout.
    #[error("no acknowledgement within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// No client for the webhook's connection: missing, of another type, or unusable.
    #[error(transparent)]
    Connection(#[from] PoolError),
}

impl DeliveryError {
    /// `module`'s client did not get the write through: refused for good, or unavailable.
    pub fn from_write(module: &'static str, error: crate::connections::WriteError) -> Self {
        let reason = error.message;
        if error.permanent {
            Self::Rejected { module, reason }
        } else {
            Self::Unavailable { module, reason }
        }
    }

    /// Whether the destination is a store that is full (answered 503 `spool_full`).
    pub fn is_full(&self) -> bool {
        matches!(self, Self::ChannelFull { .. })
    }

    /// Whether retrying the same delivery cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// How long the destination asked to be left alone, when it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Switchyard's own headers, the content type, then the configured `forward_headers` (the
/// headers of the modules that carry them: `kafka`, `http`).
pub fn metadata_headers<'a>(
    delivery: &'a Delivery,
    forward_headers: &'a [String],
    received_at: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("switchyard-namespace", delivery.namespace.as_str()),
        ("switchyard-webhook", delivery.webhook.as_str()),
        ("switchyard-request-id", delivery.request_id.as_str()),
        ("switchyard-received-at", received_at),
    ];
    if let Some(content_type) = delivery.header("content-type") {
        headers.push(("content-type", content_type));
    }
    for name in forward_headers {
        if name == "content-type" || name.starts_with("switchyard-") {
            continue;
        }
        if let Some(value) = delivery.header(name) {
            headers.push((name.as_str(), value));
        }
    }
    headers
}

/// The validated `module` + `module-config` (+ `connection`) of one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfig {
    /// The `module` name as written (a [`REGISTRY`] name).
    name: &'static str,
    /// What it does: one kind, or with a `mapping`, one per target the mapping allows (in
    /// [`Mapping::targets`] order). Never empty.
    variants: Vec<Kind>,
    /// Where the target comes from when the request chooses it (light mapping).
    mapping: Option<Mapping>,
}

/// What a destination does, by kind of destination; the connection modules carry theirs.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Log(log::LogConfig),
    Kafka(kafka::KafkaConfig, ConnectionName),
    Redis(redis::Command, ConnectionName),
    Http(http::HttpConfig, ConnectionName),
    /// A channel (connector mode): the connection is the channel.
    Connect(ConnectionName),
}

/// How one module's `module-config` (and `connection`) is parsed.
struct Entry {
    name: &'static str,
    /// The `module-config` field naming what it writes to, when a request may choose it
    /// (a [`Mapping`] there instead of a name).
    target: Option<&'static str>,
    parse: fn(&'static str, Value, Option<ConnectionName>) -> Result<Kind, ConfigError>,
}

/// The connection a connection module needs.
fn needs(name: &str, connection: Option<ConnectionName>) -> Result<ConnectionName, ConfigError> {
    connection.ok_or_else(|| {
        ConfigError::Invalid(format!(
            "module `{name}` needs a `connection` (a name under global/connections/)"
        ))
    })
}

/// The registry: every module name accepted in `module`, in the order errors list them.
const REGISTRY: &[Entry] = &[
    Entry {
        name: "log",
        target: None,
        // A `connection` is accepted and unused, as before: existing entries name one.
        parse: |name, config, _| {
            let c: log::LogConfig = from_config(name, config)?;
            c.validate().map_err(|e| {
                ConfigError::Invalid(format!("`module-config` of module `{name}`: {e}"))
            })?;
            Ok(Kind::Log(c))
        },
    },
    Entry {
        name: "kafka",
        target: Some("topic"),
        parse: |name, config, connection| {
            let c: kafka::KafkaConfig = from_config(name, config)?;
            Ok(Kind::Kafka(c.validate()?, needs(name, connection)?))
        },
    },
    Entry {
        name: "http",
        target: None,
        parse: |name, config, connection| {
            let c: http::HttpConfig = from_config(name, config)?;
            Ok(Kind::Http(c.validate()?, needs(name, connection)?))
        },
    },
    Entry {
        name: "connect",
        target: None,
        parse: |name, config, connection| {
            let connect::ConnectConfig {} = from_config(name, config)?;
            Ok(Kind::Connect(needs(name, connection)?))
        },
    },
    Entry {
        name: "redis_publish",
        target: Some("channel"),
        parse: |name, config, connection| {
            let c: redis::PublishConfig = from_config(name, config)?;
            let command = redis::Command::Publish(c.validate()?);
            Ok(Kind::Redis(command, needs(name, connection)?))
        },
    },
    Entry {
        name: "redis_stream",
        target: Some("stream"),
        parse: |name, config, connection| {
            let c: redis::StreamConfig = from_config(name, config)?;
            let command = redis::Command::Stream(c.validate()?);
            Ok(Kind::Redis(command, needs(name, connection)?))
        },
    },
    Entry {
        name: "redis_list",
        target: Some("key"),
        parse: |name, config, connection| {
            let c: redis::ListConfig = from_config(name, config)?;
            let command = redis::Command::List(c.validate()?);
            Ok(Kind::Redis(command, needs(name, connection)?))
        },
    },
];

/// Names accepted in `module`.
pub fn module_names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|e| e.name)
}

impl ModuleConfig {
    /// Parses `module-config` for the module called `name`. Pure: no I/O.
    pub fn parse(
        name: &str,
        config: Option<Value>,
        connection: Option<ConnectionName>,
    ) -> Result<Self, ConfigError> {
        let config = config.unwrap_or_else(|| Value::Object(Default::default()));
        let Some(entry) = REGISTRY.iter().find(|e| e.name == name) else {
            return Err(ConfigError::Invalid(
                if matches!(name, "redis_rq" | "redis-rq") {
                    "module `redis_rq` is not supported (RQ jobs are Python pickles); \
                 use `redis_list` for a queue or `redis_stream` for a durable log"
                        .into()
                } else {
                    format!(
                        "unknown module `{name}`; expected one of {}",
                        module_names().collect::<Vec<_>>().join(", ")
                    )
                },
            ));
        };
        let mapped = entry
            .target
            .and_then(|field| Some((field, config.get(field).filter(|v| v.is_object())?)));
        let Some((field, mapping)) = mapped else {
            return Ok(Self {
                name: entry.name,
                variants: vec![(entry.parse)(entry.name, config, connection)?],
                mapping: None,
            });
        };
        let mapping = Mapping::parse(mapping, &format!("module-config.{field}"))?;
        // One destination per allowed target, each checked as if it were written there.
        let variants = mapping
            .targets()
            .iter()
            .map(|target| {
                let mut config = config.clone();
                if let Some(object) = config.as_object_mut() {
                    object.insert(field.to_owned(), Value::String(target.clone()));
                }
                (entry.parse)(entry.name, config, connection.clone()).map_err(|e| {
                    ConfigError::Invalid(format!("`module-config.{field}` target {target:?}: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: entry.name,
            variants,
            mapping: Some(mapping),
        })
    }

    /// This destination, told where the webhook's provider puts its event type and delivery
    /// id (the `log` module logs them).
    pub fn with_event_fields(mut self, fields: Option<log::EventFields>) -> Self {
        for kind in &mut self.variants {
            if let Kind::Log(config) = kind {
                config.event_fields = fields.clone();
            }
        }
        self
    }

    /// The module name as written in config.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the destination does (writing to its first target, when the request chooses one).
    pub fn kind(&self) -> &Kind {
        &self.variants[0]
    }

    /// Where the target comes from, when the request chooses it.
    pub fn mapping(&self) -> Option<&Mapping> {
        self.mapping.as_ref()
    }

    /// The connection this destination uses, if any.
    pub fn connection(&self) -> Option<&ConnectionName> {
        match self.kind() {
            Kind::Log(_) => None,
            Kind::Kafka(_, connection)
            | Kind::Redis(_, connection)
            | Kind::Http(_, connection)
            | Kind::Connect(connection) => Some(connection),
        }
    }

    /// The connection `type` this destination needs (`kafka`, `redis`), if it uses one.
    pub fn connection_kind(&self) -> Option<&'static str> {
        match self.kind() {
            Kind::Log(_) => None,
            Kind::Kafka(..) => Some("kafka"),
            Kind::Redis(..) => Some("redis"),
            Kind::Http(..) => Some("http"),
            Kind::Connect(_) => Some("connect"),
        }
    }

    /// What this destination writes to on its connection (topic, stream, key or channel); its
    /// first target when the request chooses one.
    pub fn target(&self) -> Option<&str> {
        self.kind().target()
    }

    /// Every target this destination may write to: one, or each a mapping allows.
    pub fn targets(&self) -> impl Iterator<Item = Option<&str>> {
        self.variants.iter().map(Kind::target)
    }

    /// Builds the live modules, one per target (in [`ModuleConfig::targets`] order). Does no
    /// I/O: clients come from the pool on first delivery.
    pub fn build(&self, pool: &ConnectionPool) -> Vec<Arc<dyn Module>> {
        self.variants.iter().map(|kind| kind.build(pool)).collect()
    }
}

impl Kind {
    /// What it writes to on its connection (topic, stream, key or channel).
    pub fn target(&self) -> Option<&str> {
        match self {
            Kind::Log(_) | Kind::Connect(_) => None,
            Kind::Kafka(config, _) => Some(&config.topic),
            Kind::Redis(command, _) => Some(command.target()),
            Kind::Http(config, _) => Some(&config.path),
        }
    }

    fn build(&self, pool: &ConnectionPool) -> Arc<dyn Module> {
        match self {
            Kind::Log(config) => Arc::new(log::LogModule::new(config.clone())),
            Kind::Kafka(config, connection) => Arc::new(kafka::KafkaModule::new(
                config.clone(),
                connection.clone(),
                pool.clone(),
            )),
            Kind::Redis(command, connection) => Arc::new(redis::RedisModule::new(
                command.clone(),
                connection.clone(),
                pool.clone(),
            )),
            Kind::Http(config, connection) => Arc::new(http::HttpModule::new(
                config.clone(),
                connection.clone(),
                pool.clone(),
            )),
            Kind::Connect(connection) => Arc::new(connect::ConnectModule::new(
                connection.clone(),
                pool.clone(),
            )),
        }
    }
}

fn from_config<T: serde::de::DeserializeOwned>(
    name: &str,
    config: Value,
) -> Result<T, ConfigError> {
    serde_json::from_value(config)
        .map_err(|e| ConfigError::Invalid(format!("`module-config` of module `{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_module_lists_the_valid_ones() {
        let err = ModuleConfig::parse("kafak", None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafak"), "{err}");
        assert!(
            err.contains("log, kafka, http, connect, redis_publish, redis_stream, redis_list"),
            "{err}"
        );
    }

    #[test]
    fn connection_modules_need_a_connection() {
        let err = ModuleConfig::parse("kafka", Some(json!({"topic": "t"})), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "module `kafka` needs a `connection` (a name under global/connections/)"
        );
        let conn = ConnectionName::parse("c").ok();
        for (name, config) in [
            ("kafka", json!({"topic": "t"})),
            ("redis_list", json!({"key": "k"})),
            ("redis_stream", json!({"stream": "s"})),
            ("redis_publish", json!({"channel": "c"})),
        ] {
            let parsed = ModuleConfig::parse(name, Some(config), conn.clone()).unwrap();
            assert_eq!(parsed.name(), name);
        }
    }

    #[test]
    fn module_configs_are_validated() {
        let conn = ConnectionName::parse("c").ok();
        for (name, config, reason) in [
            (
                "kafka",
                json!({"topic": "bad topic"}),
                "not a valid Kafka topic name",
            ),
            ("kafka", json!({}), "missing field `topic`"),
            (
                "redis_list",
                json!({"key": "k", "direction": "middle"}),
                "unknown variant `middle`",
            ),
            (
                "redis_list",
                json!({"key": "k", "max_length": 0}),
                "max_length",
            ),
            ("redis_stream", json!({"stream": ""}), "stream"),
            (
                "redis_publish",
                json!({"channel": "c", "extra": 1}),
                "unknown field `extra`",
            ),
        ] {
            let err = ModuleConfig::parse(name, Some(config.clone()), conn.clone())
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{name} {config}: {err}");
        }
    }

    #[test]
    fn a_mapped_target_builds_one_destination_per_allowed_target() {
        let conn = ConnectionName::parse("c").ok();
        let mapped = json!({"from_header": "X-GitHub-Event", "prefix": "gh-",
                            "allowed": ["gh-push", "gh-release"], "default": "gh-other"});
        let parsed = ModuleConfig::parse(
            "kafka",
            Some(json!({"topic": mapped, "forward_headers": ["X-GitHub-Event"]})),
            conn.clone(),
        )
        .unwrap();
        assert!(parsed.mapping().is_some());
        let targets: Vec<_> = parsed.targets().collect();
        assert_eq!(
            targets,
            [Some("gh-push"), Some("gh-release"), Some("gh-other")]
        );
        let pool = ConnectionPool::new(tokio_util::task::TaskTracker::new());
        assert_eq!(parsed.build(&pool).len(), 3);
        for (name, field) in [
            ("redis_stream", "stream"),
            ("redis_list", "key"),
            ("redis_publish", "channel"),
        ] {
            let config = json!({ field: {"from_query": "kind", "allowed": ["a", "b"]} });
            let parsed = ModuleConfig::parse(name, Some(config), conn.clone()).unwrap();
            assert_eq!(parsed.targets().collect::<Vec<_>>(), [Some("a"), Some("b")]);
        }
        // Each target is checked as if written there; a module without a target field takes
        // no mapping.
        let bad = json!({"topic": {"from_header": "e", "allowed": ["ok", "not ok"]}});
        let err = ModuleConfig::parse("kafka", Some(bad), conn.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`module-config.topic` target \"not ok\": `topic` \"not ok\" is not"),
            "{err}"
        );
        let err = ModuleConfig::parse(
            "http",
            Some(json!({"path": {"from_header": "e", "allowed": ["/a"]}})),
            conn,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`module-config` of module `http`"), "{err}");
    }

    #[test]
    fn redis_rq_points_to_the_replacements() {
        let err = ModuleConfig::parse("redis_rq", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis_list") && err.contains("redis_stream"),
            "{err}"
        );
    }

    #[test]
    fn module_config_rejects_unknown_fields() {
        let err = ModuleConfig::parse("log", Some(json!({"pretty": true})), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pretty"), "{err}");
    }

    #[test]
    fn log_without_config_uses_defaults() {
        assert_eq!(
            ModuleConfig::parse("log", None, None).unwrap().kind(),
            &Kind::Log(log::LogConfig::default())
        );
    }

    #[tokio::test]
    async fn every_registered_name_parses_and_builds_a_module_of_that_name() {
        let pool = ConnectionPool::new(tokio_util::task::TaskTracker::new());
        let configs = [
            ("log", json!({})),
            ("kafka", json!({"topic": "t"})),
            ("http", json!({"path": "/hooks"})),
            ("connect", json!({})),
            ("redis_publish", json!({"channel": "c"})),
            ("redis_stream", json!({"stream": "s"})),
            ("redis_list", json!({"key": "k"})),
        ];
        assert_eq!(
            module_names().collect::<Vec<_>>(),
            configs.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        );
        for (name, config) in configs {
            let connection = (name != "log").then(|| ConnectionName::parse("c").unwrap());
            let parsed = ModuleConfig::parse(name, Some(config), connection).unwrap();
            assert_eq!(parsed.build(&pool)[0].name(), name);
        }
    }
}
