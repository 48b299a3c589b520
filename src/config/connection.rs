//! A global connection entry (`<prefix>global/connections/<name>`): what it means and whether it is valid.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{env_subst::FieldPath, secret::Secret, ConfigError};

/// The fields of a connection entry where `{$VAR}` is substituted: its connection parameters.
pub const SUBSTITUTED: &[FieldPath] = &[
    &["bootstrap_servers"],
    &["client_config", "*"],
    &["host"],
    &["port"],
    &["username"],
    &["password"],
    &["url"],
    &["base_url"],
    &["headers", "*"],
];

/// A validated connection, shared by every webhook that names it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Connection {
    /// A Kafka cluster.
    #[serde(rename = "kafka")]
    Kafka(KafkaConnection),
    /// A Redis server (`redis-rq` is accepted as an alias for older configs).
    #[serde(rename = "redis", alias = "redis-rq")]
    Redis(RedisConnection),
    /// An HTTP service (the `http` module).
    #[serde(rename = "http")]
    Http(HttpConnection),
    /// A channel a connector pulls (connector mode; the `connect` module).
    #[serde(rename = "connect")]
    Connect(ConnectConnection),
}

impl Connection {
    /// The `type` as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            Connection::Kafka(_) => "kafka",
            Connection::Redis(_) => "redis",
            Connection::Http(_) => "http",
            Connection::Connect(_) => "connect",
        }
    }

    /// Who may use this connection and what they may name on it.
    pub fn access(&self) -> Access<'_> {
        let (namespaces, target_prefix) = match self {
            Connection::Kafka(k) => (&k.namespaces, &k.target_prefix),
            Connection::Redis(r) => (&r.namespaces, &r.target_prefix),
            Connection::Http(h) => (&h.namespaces, &h.target_prefix),
            // A channel has no names of its own: only who may deliver to it.
            Connection::Connect(c) => {
                return Access {
                    namespaces: c.namespaces.as_deref(),
                    target_prefix: None,
                }
            }
        };
        Access {
            namespaces: namespaces.as_deref(),
            target_prefix: target_prefix.as_deref(),
        }
    }
}

/// `type: "kafka"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConnection {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `linger.ms`, ...), passed through.
    #[serde(default)]
    pub client_config: BTreeMap<String, ConfigScalar>,
    /// Producer `acks`: `all` (default; also `-1`), `1` or `0`, as a string or a number.
    #[serde(default = "default_acks", deserialize_with = "acks")]
    pub acks: String,
    /// Idempotent producer (default on): retries never duplicate or reorder within a partition.
    #[serde(default = "default_true")]
    pub idempotence: bool,
    // Not `#[serde(flatten)]`: serde's flatten does not work with `deny_unknown_fields`.
    /// The namespaces whose webhooks may use this connection (absent: all).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Every topic, stream, list key or channel a webhook names on this connection must start
    /// with this, `{namespace}` replaced by the webhook's namespace (e.g. `"{namespace}."`).
    #[serde(default)]
    pub target_prefix: Option<String>,
}

/// Who may use a connection (`namespaces`) and what they may name on it (`target_prefix`):
/// without them every namespace may use it and name anything, as a single-tenant instance
/// wants. Connections are global, so on a shared instance these keep one tenant from writing
/// into another's topics, streams, keys or channels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Access<'a> {
    pub namespaces: Option<&'a [String]>,
    pub target_prefix: Option<&'a str>,
}

/// The placeholder `target_prefix` replaces with the webhook's namespace.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

impl Access<'_> {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(namespaces) = self.namespaces {
            if let Some(bad) = namespaces
                .iter()
                .find(|n| crate::keys::Namespace::parse(n).is_err())
            {
                return Err(ConfigError::Invalid(format!(
                    "`namespaces`: {bad:?} is not a namespace name"
                )));
            }
        }
        if self.target_prefix == Some("") {
            return Err(ConfigError::Invalid(
                "`target_prefix` must not be empty (leave it out to allow any name)".into(),
            ));
        }
        Ok(())
    }

    /// Whether `namespace` may use the connection and name `target` (what a destination
    /// writes to: a topic, stream, key or channel) on it. The error names the rule broken.
    pub fn permits(&self, namespace: &str, target: Option<&str>) -> Result<(), String> {
        if let Some(namespaces) = self.namespaces {
            if !namespaces.iter().any(|n| n == namespace) {
                return Err(format!(
                    "namespace `{namespace}` may not use this connection (its `namespaces` \
                     lists {})",
                    namespaces.join(", ")
                ));
            }
        }
        if let (Some(prefix), Some(target)) = (self.target_prefix, target) {
            let prefix = prefix.replace(NAMESPACE_PLACEHOLDER, namespace);
            if !target.starts_with(&prefix) {
                return Err(format!(
                    "{target:?} is outside what namespace `{namespace}` may name on this \
                     connection (names starting with {prefix:?})"
                ));
            }
        }
        Ok(())
    }
}

/// A librdkafka property value: written as a string, number or boolean, always passed as a string.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct ConfigScalar(pub String);

impl std::fmt::Debug for ConfigScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be SASL passwords: never print them.
        f.write_str("\"***\"")
    }
}

impl TryFrom<Value> for ConfigScalar {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::String(s) => Ok(Self(s)),
            Value::Number(n) => Ok(Self(n.to_string())),
            Value::Bool(b) => Ok(Self(b.to_string())),
            other => Err(format!(
                "client_config values must be strings, numbers or booleans, not {other}"
            )),
        }
    }
}

/// The highest Redis database number accepted (Redis's own `databases` setting caps it lower).
pub const MAX_REDIS_DB: i64 = 1_000_000;

/// `type: "redis"` (alias `redis-rq`): either `url`, or `host`/`port`/`db`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConnection {
    /// Host name or address (default `localhost`).
    pub host: Option<String>,
    /// TCP port (default 6379): a number, or a string of digits (`"{$REDIS_PORT}"`).
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
    /// Database number (default 0).
    pub db: Option<i64>,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (never logged).
    pub password: Option<Secret>,
    /// Connect with TLS (`rediss://`).
    #[serde(default)]
    pub tls: bool,
    /// A single `redis://` or `rediss://` URL instead of the fields above.
    pub url: Option<Secret>,
    /// The namespaces whose webhooks may use this connection (absent: all).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Every topic, stream, list key or channel a webhook names on this connection must start
    /// with this, `{namespace}` replaced by the webhook's namespace (e.g. `"{namespace}."`).
    #[serde(default)]
    pub target_prefix: Option<String>,
}

/// The longest an HTTP service may take to answer, and the default.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 600_000;
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;
/// Idle keep-alive connections kept per service host, at most, and the default.
pub const MAX_HTTP_POOL_SIZE: usize = 1024;
pub const DEFAULT_HTTP_POOL_SIZE: usize = 32;

/// `type: "http"`: an HTTP service webhooks are forwarded to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnection {
    /// `http://` or `https://`, a host, an optional port and path prefix; no query, fragment
    /// or user info. A module's `path` is appended to it.
    pub base_url: Secret,
    /// Headers sent with every request (an API key); values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Time the service gets to answer (default 10000; the webhook's `timeout_ms` also bounds it).
    pub timeout_ms: Option<u64>,
    /// CA certificate(s) (PEM) the service's certificate must chain to, besides the public roots.
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS, with `key_file`.
    pub cert_file: Option<String>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<String>,
    /// Accept any certificate (testing only): must be written `true` to take effect, and is
    /// logged as a warning whenever the client is built.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Idle keep-alive connections kept per host (default 32).
    pub pool_size: Option<usize>,
    /// The namespaces whose webhooks may use this connection (absent: all).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Every `path` a webhook names on this connection must start with this, `{namespace}`
    /// replaced by the webhook's namespace (e.g. `"/{namespace}/"`).
    #[serde(default)]
    pub target_prefix: Option<String>,
}

impl HttpConnection {
    /// The answer timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_HTTP_TIMEOUT_MS))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.base_url.expose();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                ConfigError::Invalid("`base_url` must start with http:// or https://".into())
            })?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(ConfigError::Invalid(
                "`base_url` needs a host, and no user info (`user@`): put credentials in `headers`"
                    .into(),
            ));
        }
        if url.contains(['?', '#']) || url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(ConfigError::Invalid(
                "`base_url` must not have a query, a fragment, spaces or control characters".into(),
            ));
        }
        if let Some(ms) = self
            .timeout_ms
            .filter(|ms| !(1..=MAX_HTTP_TIMEOUT_MS).contains(ms))
        {
            return Err(ConfigError::Invalid(format!(
                "`timeout_ms` is {ms}; it must be between 1 and {MAX_HTTP_TIMEOUT_MS}"
            )));
        }
        if let Some(size) = self
            .pool_size
            .filter(|n| !(1..=MAX_HTTP_POOL_SIZE).contains(n))
        {
            return Err(ConfigError::Invalid(format!(
                "`pool_size` is {size}; it must be between 1 and {MAX_HTTP_POOL_SIZE}"
            )));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::Invalid(
                "give both `cert_file` and `key_file` (mutual TLS), or neither".into(),
            ));
        }
        for (name, value) in &self.headers {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(ConfigError::Invalid(format!(
                    "`headers`: {name:?} is not a header name"
                )));
            }
            if value
                .expose()
                .bytes()
                .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(ConfigError::Invalid(format!(
                    "`headers`: the value of {name:?} holds a control character"
                )));
            }
        }
        Ok(())
    }
}

/// How long a channel keeps a message nobody acknowledged, by default (3 days), and at most.
pub const DEFAULT_RETENTION_SECONDS: u64 = 259_200;
pub const MAX_RETENTION_SECONDS: u64 = 30 * 86_400;
/// How many bytes of unacknowledged messages a channel holds, by default (1 GiB), and at most.
pub const DEFAULT_CHANNEL_BYTES: u64 = 1 << 30;
pub const MAX_CHANNEL_BYTES: u64 = 1 << 40;
/// Most token hashes a channel lists (two during a rotation; a few connectors of their own).
pub const MAX_TOKENS: usize = 16;

/// `type: "connect"`: a channel. The connection's name is the channel's: webhooks deliver to it
/// with the `connect` module, and a connector pulls it from `/connect/v1/<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConnection {
    /// SHA-256 (hex) of each token a connector may present. Two hashes rotate a token without
    /// a disconnect; a hash removed closes its token's streams.
    pub token_sha256: Vec<String>,
    /// Messages not acknowledged within this many seconds become dead letters.
    #[serde(default = "default_retention")]
    pub retention_seconds: u64,
    /// Unacknowledged bytes the channel holds; past them its webhooks answer 503 `spool_full`.
    #[serde(default = "default_channel_bytes")]
    pub max_bytes: u64,
    /// The namespaces whose webhooks may deliver to this channel (absent: all).
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Where the queue lives: absent, in this instance's `SPOOL_DIR`; with a `redis`
    /// connection, in a Redis stream that every instance of a fleet shares.
    #[serde(default)]
    pub store: Option<ChannelStore>,
}

/// A channel's shared store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelStore {
    /// A `redis` connection (`<prefix>global/connections/<name>`).
    pub connection: String,
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION_SECONDS
}

fn default_channel_bytes() -> u64 {
    DEFAULT_CHANNEL_BYTES
}

impl ConnectConnection {
    /// Whether `token` is one of the channel's (its SHA-256 among `token_sha256`), compared in
    /// constant time.
    pub fn admits(&self, token: &str) -> bool {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        self.token_sha256.iter().fold(false, |found, hash| {
            let hash = hash.to_ascii_lowercase();
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(hash.as_bytes(), digest.as_bytes()).into();
            found | same
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.token_sha256.is_empty() || self.token_sha256.len() > MAX_TOKENS {
            return Err(ConfigError::Invalid(format!(
                "`token_sha256` lists 1 to {MAX_TOKENS} hashes"
            )));
        }
        for (i, hash) in self.token_sha256.iter().enumerate() {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "`token_sha256[{i}]` is not a SHA-256 in hex (64 hex digits): store the \
                     token's hash, `printf %s TOKEN | sha256sum`, never the token"
                )));
            }
        }
        if !(1..=MAX_RETENTION_SECONDS).contains(&self.retention_seconds) {
            return Err(ConfigError::Invalid(format!(
                "`retention_seconds` is {}; it must be between 1 and {MAX_RETENTION_SECONDS}",
                self.retention_seconds
            )));
        }
        if !((1 << 20)..=MAX_CHANNEL_BYTES).contains(&self.max_bytes) {
            return Err(ConfigError::Invalid(format!(
                "`max_bytes` is {}; it must be between 1 MiB and {MAX_CHANNEL_BYTES}",
                self.max_bytes
            )));
        }
        if let Some(store) = &self.store {
            crate::keys::ConnectionName::parse(&store.connection)
                .map_err(|e| ConfigError::Invalid(format!("`store.connection`: {e}")))?;
        }
        Ok(())
    }
}

/// A port written as a number or as a string of digits. The message never repeats the value
/// (it may come from the environment).
fn port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    let invalid = || serde::de::Error::custom("`port` must be a number from 1 to 65535");
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(invalid),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

/// `acks` written as `"all"`, `"1"`, `1`, `-1`, ...: kept as the string librdkafka takes.
fn acks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom(
            "`acks` must be \"all\", \"1\" or \"0\" (or the numbers -1, 1, 0)",
        )),
    }
}

fn default_acks() -> String {
    "all".to_owned()
}

fn default_true() -> bool {
    true
}

impl Connection {
    /// Parses and validates a connection entry (after environment substitution).
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let connection: Connection =
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        connection.validate()?;
        Ok(connection)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.access().validate()?;
        match self {
            Connection::Kafka(k) => {
                if k.bootstrap_servers.trim().is_empty() {
                    return Err(ConfigError::Invalid(
                        "`bootstrap_servers` must list at least one host:port".into(),
                    ));
                }
                if !matches!(k.acks.as_str(), "all" | "-1" | "0" | "1") {
                    return Err(ConfigError::Invalid(format!(
                        "`acks` is {:?}; expected one of \"all\" (or -1), \"1\", \"0\"",
                        k.acks
                    )));
                }
                if k.idempotence && !matches!(k.acks.as_str(), "all" | "-1") {
                    return Err(ConfigError::Invalid(format!(
                        "`acks: {}` needs `idempotence: false`: the idempotent producer (the \
                         default) only works with `acks: all`",
                        k.acks
                    )));
                }
                Ok(())
            }
            Connection::Redis(r) => {
                if let Some(url) = &r.url {
                    if r.host.is_some() || r.port.is_some() || r.db.is_some() {
                        return Err(ConfigError::Invalid(
                            "give either `url` or `host`/`port`/`db`, not both".into(),
                        ));
                    }
                    let url = url.expose();
                    if !(url.starts_with("redis://")
                        || url.starts_with("rediss://")
                        || url.starts_with("unix://"))
                    {
                        return Err(ConfigError::Invalid(
                            "`url` must start with redis://, rediss:// or unix://".into(),
                        ));
                    }
                }
                if let Some(db) = r.db {
                    if !(0..=MAX_REDIS_DB).contains(&db) {
                        return Err(ConfigError::Invalid(format!(
                            "`db` is {db}; it must be between 0 and {MAX_REDIS_DB}"
                        )));
                    }
                }
                Ok(())
            }
            Connection::Http(h) => h.validate(),
            Connection::Connect(c) => c.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_admits_the_tokens_whose_hash_it_lists_in_either_case() {
        use sha2::Digest as _;
        let hash = hex::encode(sha2::Sha256::digest(b"t0k3n"));
        let entry = |hashes: Vec<String>| {
            Connection::from_value(serde_json::json!({"type": "connect", "token_sha256": hashes}))
        };
        let Ok(Connection::Connect(c)) = entry(vec!["0".repeat(64), hash.to_ascii_uppercase()])
        else {
            panic!("a valid channel");
        };
        assert!(c.admits("t0k3n"));
        assert!(!c.admits("t0k3n "));
        assert!(!c.admits(""));
        let err = entry(vec!["t0k3n".into()]).unwrap_err().to_string();
        assert!(
            err.contains("`token_sha256[0]` is not a SHA-256 in hex"),
            "{err}"
        );
        assert!(entry(vec![]).is_err());
    }
    use serde_json::json;

    #[test]
    fn kafka_defaults() {
        let c = Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k:9092"}))
            .unwrap();
        let Connection::Kafka(k) = c else {
            panic!("expected kafka")
        };
        assert_eq!(k.acks, "all");
        assert!(k.idempotence);
        assert!(k.client_config.is_empty());
    }

    #[test]
    fn kafka_client_config_scalars_become_strings() {
        let c = Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k:9092",
            "client_config": {"linger.ms": 5, "enable.ssl.certificate.verification": false}}))
        .unwrap();
        let Connection::Kafka(k) = c else {
            panic!("expected kafka")
        };
        assert_eq!(k.client_config["linger.ms"].0, "5");
        assert_eq!(
            k.client_config["enable.ssl.certificate.verification"].0,
            "false"
        );
    }

    #[test]
    fn acks_may_be_strings_or_numbers() {
        for (acks, expected) in [
            (json!("all"), "all"),
            (json!(-1), "-1"),
            (json!(1), "1"),
            (json!("0"), "0"),
        ] {
            let c = Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k",
                "acks": acks, "idempotence": false}))
            .unwrap();
            let Connection::Kafka(k) = c else {
                panic!("expected kafka")
            };
            assert_eq!(k.acks, expected);
        }
        let err =
            Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k", "acks": 1}))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("`acks: 1` needs `idempotence: false`"),
            "{err}"
        );
        let err =
            Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k", "acks": 2}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("expected one of"), "{err}");
    }

    #[test]
    fn idempotence_needs_acks_all() {
        let err =
            Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k", "acks": "1"}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("needs `idempotence: false`"), "{err}");
        assert!(Connection::from_value(
            json!({"type": "kafka", "bootstrap_servers": "k", "acks": "1", "idempotence": false})
        )
        .is_ok());
    }

    #[test]
    fn redis_rq_is_an_alias_for_redis() {
        let c =
            Connection::from_value(json!({"type": "redis-rq", "host": "r", "port": 6380})).unwrap();
        assert_eq!(c.kind(), "redis");
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        for (entry, reason) in [
            (
                json!({"type": "redis", "hots": "r"}),
                "unknown field `hots`",
            ),
            (json!({"type": "mqtt"}), "unknown variant `mqtt`"),
            (json!({"host": "r"}), "missing field `type`"),
        ] {
            let err = Connection::from_value(entry.clone())
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{entry}: {err}");
        }
    }

    #[test]
    fn redis_port_may_be_a_string_and_errors_do_not_echo_it() {
        let c = Connection::from_value(json!({"type": "redis", "port": "6380"})).unwrap();
        let Connection::Redis(r) = c else {
            panic!("expected redis")
        };
        assert_eq!(r.port, Some(6380));
        for bad in [json!("hunter2"), json!(70000), json!(0), json!(true)] {
            let err = Connection::from_value(json!({"type": "redis", "port": bad}))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`port` must be a number"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn substituted_connection_values_never_reach_errors() {
        let env = |name: &str| (name == "PW").then(|| "hunter2-long".to_owned());
        let err = Connection::from_bytes(
            br#"{"type": "redis", "port": "{$PW}"}"#,
            &crate::config::Secrets::env_only(&env),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = Connection::from_bytes(
            br#"{"type": "redis", "url": "{$PW}"}"#,
            &crate::config::Secrets::env_only(&env),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = Connection::from_bytes(
            br#"{"type": "redis", "tls": "{$PW}"}"#,
            &crate::config::Secrets::env_only(&env),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/tls"), "{err}");
    }

    #[test]
    fn redis_url_excludes_host_fields() {
        let err = Connection::from_value(json!({"type": "redis", "url": "redis://r", "host": "r"}))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "give either `url` or `host`/`port`/`db`, not both");
        let err = Connection::from_value(json!({"type": "redis", "url": "http://r"}))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "`url` must start with redis://, rediss:// or unix://");
        assert!(Connection::from_value(json!({"type": "redis", "url": "redis://r/2"})).is_ok());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c =
            Connection::from_value(json!({"type": "redis", "password": "hunter2", "url": null}))
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let k = Connection::from_value(json!({"type": "kafka", "bootstrap_servers": "k",
            "client_config": {"sasl.password": "hunter2"}}))
        .unwrap();
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
