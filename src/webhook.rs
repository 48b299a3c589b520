//! A webhook entry (`<prefix><namespace>/webhooks/<id>`): `RawWebhook` as written, `Webhook` once valid.
//!
//! It sits above `modules` (its destinations) and `verify` (its checks), which both sit above
//! `config` (secrets, errors, substitution, connections): every import points down.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{
    env_subst::FieldPath, parse_entry_direct, secret::Secret, ConfigError, Secrets,
};
use crate::{
    keys::ConnectionName,
    modules::{
        log::{EventFields, Field},
        ModuleConfig,
    },
    spool::{forward::RetryPolicy, SpoolMode},
    verify::{auth, cleanup, handshake, jwt, limit, signature, Checks, RawChecks},
};

/// How the request body is checked before it is handed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// The body must parse as JSON (400 otherwise).
    #[default]
    Json,
    /// Any bytes.
    Blob,
    /// `application/x-www-form-urlencoded` (Slack slash commands and interactivity, Twilio,
    /// GitHub's form content type): checked to be form encoding, handed on as it came.
    Form,
}

/// How the destinations of a chain run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// One after the other, in order; the first failure stops the chain (default).
    #[default]
    Sequential,
    /// All at once.
    Parallel,
}

/// A webhook entry exactly as written. Unknown fields are refused: a misspelt security field must
/// never silently turn a check off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    /// Module name (`log`, `kafka`, ...); or use `chain`.
    #[serde(default)]
    module: Option<String>,
    /// The module's own settings.
    #[serde(rename = "module-config", default)]
    module_config: Option<Value>,
    /// Name of a global connection the module uses.
    #[serde(default)]
    connection: Option<String>,
    /// Several destinations instead of `module`.
    #[serde(default)]
    chain: Option<Vec<RawDestination>>,
    /// How a chain runs.
    #[serde(rename = "chain-config", default)]
    chain_config: Option<ChainConfig>,
    /// `json` (default) or `blob`.
    #[serde(default)]
    data_type: DataType,
    /// How long to wait for every destination's acknowledgement (default 5000).
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    // Verification (see `verify`); all optional, all must pass.
    #[serde(default)]
    authorization: Option<Secret>,
    #[serde(default)]
    header_auth: Option<auth::HeaderAuth>,
    #[serde(default)]
    query_auth: Option<auth::QueryAuth>,
    #[serde(default)]
    basic_auth: Option<auth::BasicAuth>,
    #[serde(default)]
    hmac: Option<signature::HmacConfig>,
    #[serde(default)]
    jwt: Option<jwt::JwtConfig>,
    #[serde(default)]
    ip_whitelist: Option<Vec<String>>,
    #[serde(default)]
    rate_limit: Option<limit::RateLimitConfig>,
    #[serde(default)]
    json_schema: Option<Value>,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    #[serde(default)]
    credential_cleanup: Option<cleanup::CleanupConfig>,
    /// A provider handshake not implied by the `hmac` preset (`meta`, `x`, `msgraph`, ...).
    #[serde(default)]
    handshake: Option<handshake::HandshakeConfig>,
    /// `true` (the preset's delivery id) or `{"key": .., "ttl_seconds": ..}`.
    #[serde(default)]
    dedup: Option<crate::dedup::RawDedup>,
    /// When the spool takes a delivery: `on_failure` (default), `always`, `off`.
    #[serde(default)]
    spool: SpoolMode,
    /// How long and how often spooled deliveries are retried.
    #[serde(default)]
    retry: Option<RawRetry>,
    /// A fixed answer instead of the JSON one, for senders that want it.
    #[serde(default)]
    response: Option<RawResponse>,
    /// Only requests that match are delivered (see [`crate::condition`]).
    #[serde(default)]
    filter: Option<Value>,
}

/// `response`: what an accepted request is answered with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    #[serde(default = "RawResponse::default_status")]
    status: u16,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: String,
}

/// The longest fixed answer body.
const MAX_RESPONSE_BODY: usize = 4096;

impl RawResponse {
    fn default_status() -> u16 {
        200
    }

    fn compile(self) -> Result<StaticResponse, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid(format!("`response`: {why}"));
        if !(200..=299).contains(&self.status) {
            return Err(invalid(
                "`status` must be a 2xx: the answer says the request was taken",
            ));
        }
        if matches!(self.status, 204 | 205) && !self.body.is_empty() {
            return Err(invalid("a 204 or 205 answer has no body"));
        }
        if self.body.len() > MAX_RESPONSE_BODY {
            return Err(invalid("`body` is longer than 4096 bytes"));
        }
        let content_type = self
            .content_type
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_owned());
        let token = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let well_formed = content_type.len() <= 128
            && content_type.bytes().all(|b| (b' '..=b'~').contains(&b))
            && essence
                .split_once('/')
                .is_some_and(|(kind, sub)| token(kind) && token(sub));
        if !well_formed {
            return Err(invalid(
                "`content_type` must be a media type such as `text/plain` (at most 128 \
                 printable characters)",
            ));
        }
        Ok(StaticResponse {
            status: self.status,
            content_type,
            body: self.body,
        })
    }
}

/// A fixed answer to every accepted request (delivered, stored or a duplicate): the same bytes
/// every time, never anything of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Where a preset's provider puts its event type, and its delivery id (the one `"dedup": true`
/// uses): what the `log` module logs.
fn event_fields(
    provider: signature::Provider,
    delivery_id: Option<crate::dedup::KeySource>,
) -> EventFields {
    use signature::Provider;
    let headers = |names: &[&str]| Field::Headers(names.iter().map(|n| (*n).into()).collect());
    let json = |path: &[&str]| Field::Json(path.iter().map(|k| (*k).into()).collect());
    let event_type = match provider {
        Provider::Github => Some(headers(&["x-github-event"])),
        Provider::Stripe | Provider::StandardWebhooks => Some(json(&["type"])),
        Provider::Shopify => Some(headers(&["x-shopify-topic", "shopify-topic"])),
        Provider::Slack => Some(json(&["event", "type"])),
        Provider::Twitch => Some(headers(&["twitch-eventsub-subscription-type"])),
        Provider::Zoom => Some(json(&["event"])),
        Provider::Meta => Some(json(&["object"])),
        Provider::Pagerduty => Some(json(&["event", "event_type"])),
        Provider::Intercom => Some(json(&["topic"])),
        Provider::Trello => Some(json(&["action", "type"])),
        Provider::Linear => Some(headers(&["linear-event"])),
        Provider::Mailgun => Some(json(&["event-data", "event"])),
        Provider::Twilio | Provider::Asana => None,
    };
    let delivery_id = delivery_id.map(|source| match source {
        crate::dedup::KeySource::Headers(names) => Field::Headers(names),
        // A preset's pointer names members without `/` or `~` in them.
        crate::dedup::KeySource::JsonPointer(pointer) => {
            Field::Json(pointer.split('/').skip(1).map(str::to_owned).collect())
        }
    });
    EventFields {
        event_type,
        delivery_id,
    }
}

/// `retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    /// Seconds a spooled delivery is retried before it becomes a dead letter (default 3 days).
    #[serde(default)]
    max_age_seconds: Option<u64>,
    /// Attempts before it becomes a dead letter (default: no limit).
    #[serde(default)]
    max_attempts: Option<u32>,
}

/// The longest retry horizon accepted (30 days).
const MAX_RETRY_AGE_SECS: u64 = 30 * 24 * 3600;

impl RawRetry {
    fn policy(self) -> Result<RetryPolicy, ConfigError> {
        let default = RetryPolicy::default();
        let max_age = match self.max_age_seconds {
            None => default.max_age,
            Some(secs @ 1..=MAX_RETRY_AGE_SECS) => Duration::from_secs(secs),
            Some(secs) => {
                return Err(ConfigError::Invalid(format!(
                    "`retry.max_age_seconds` is {secs}; it must be between 1 and \
                     {MAX_RETRY_AGE_SECS}"
                )))
            }
        };
        if self.max_attempts == Some(0) {
            return Err(ConfigError::Invalid(
                "`retry.max_attempts` must be at least 1".into(),
            ));
        }
        Ok(RetryPolicy {
            max_age,
            max_attempts: self.max_attempts,
        })
    }
}

/// One element of `chain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    module: String,
    #[serde(rename = "module-config", default)]
    module_config: Option<Value>,
    #[serde(default)]
    connection: Option<String>,
    /// Only requests that match go to this destination (see [`crate::condition`]).
    #[serde(default)]
    when: Option<Value>,
}

/// `chain-config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainConfig {
    #[serde(default)]
    execution: Execution,
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// A validated webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// At least one destination.
    pub destinations: Vec<ModuleConfig>,
    pub execution: Execution,
    pub data_type: DataType,
    /// Upper bound on waiting for the destinations' acknowledgements.
    pub timeout: Duration,
    /// Verification, limits and cleanup, compiled.
    pub checks: Checks,
    /// When deliveries go through the spool.
    pub spool: SpoolMode,
    /// Retries of spooled deliveries.
    pub retry: RetryPolicy,
    /// Repeats of a delivery id within a window are answered as duplicates.
    pub dedup: Option<crate::dedup::Dedup>,
    /// A fixed answer instead of the JSON one.
    pub response: Option<StaticResponse>,
    /// Requests that do not match are answered `filtered` and not delivered.
    pub filter: Option<crate::condition::Condition>,
    /// Each destination's `when`, in the chain's order (`None`: every request).
    pub when: Vec<Option<crate::condition::Condition>>,
    /// The parts of a JSON body that `filter`, `when` and mapped targets read.
    pub reads: crate::condition::Pointers,
}

fn destination(
    module: &str,
    config: Option<Value>,
    connection: Option<&str>,
) -> Result<ModuleConfig, ConfigError> {
    let connection = connection
        .map(ConnectionName::parse)
        .transpose()
        .map_err(|e| ConfigError::Invalid(format!("`connection`: {e}")))?;
    ModuleConfig::parse(module, config, connection)
}

/// The fields of a webhook entry where `{$VAR}` is substituted: its credentials.
pub const SUBSTITUTED: &[FieldPath] = &[
    &["authorization"],
    &["header_auth", "api_key"],
    &["query_auth", "api_key"],
    &["basic_auth", "username"],
    &["basic_auth", "password"],
    &["hmac", "secret"],
    &["hmac", "secret", "*"],
    &["jwt", "secret"],
    &["jwt", "public_key"],
    &["handshake", "verify_token"],
    &["handshake", "consumer_secret"],
    &["handshake", "client_state"],
    &["module-config", "sign", "secret"],
    &["chain", "*", "module-config", "sign", "secret"],
];

impl Webhook {
    /// Parses a webhook entry's raw bytes (JSON, with `{$VAR}` substitution in credentials).
    pub fn from_bytes(bytes: &[u8], secrets: &Secrets<'_>) -> Result<Self, ConfigError> {
        parse_entry_direct(
            bytes,
            secrets,
            SUBSTITUTED,
            Self::from_raw,
            Self::from_value,
        )
    }

    /// Validates an already-substituted JSON object.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let raw: RawWebhook =
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawWebhook) -> Result<Self, ConfigError> {
        let (destinations, execution, when) = match (raw.module, raw.chain) {
            (Some(module), None) => {
                if raw.chain_config.is_some() {
                    return Err(ConfigError::Invalid(
                        "`chain-config` only goes with `chain`".into(),
                    ));
                }
                let only = destination(&module, raw.module_config, raw.connection.as_deref())?;
                (vec![only], Execution::Sequential, vec![None])
            }
            (None, Some(chain)) => {
                if raw.module_config.is_some() || raw.connection.is_some() {
                    return Err(ConfigError::Invalid(
                        "with `chain`, put `module-config` and `connection` inside each element"
                            .into(),
                    ));
                }
                if chain.is_empty() {
                    return Err(ConfigError::Invalid("`chain` must not be empty".into()));
                }
                let (destinations, when) = chain
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let when = d
                            .when
                            .map(|rule| {
                                crate::condition::Condition::parse(
                                    &rule,
                                    &format!("chain[{i}].when"),
                                )
                            })
                            .transpose()?;
                        destination(&d.module, d.module_config, d.connection.as_deref())
                            .map_err(|e| ConfigError::Invalid(format!("chain[{i}]: {e}")))
                            .map(|d| (d, when))
                    })
                    .collect::<Result<(Vec<_>, Vec<_>), _>>()?;
                let execution = raw.chain_config.unwrap_or_default().execution;
                (destinations, execution, when)
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either `module` or `chain`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "missing field `module` (or `chain`)".into(),
                ))
            }
        };
        if !(1..=120_000).contains(&raw.timeout_ms) {
            return Err(ConfigError::Invalid(format!(
                "`timeout_ms` is {}; it must be between 1 and 120000",
                raw.timeout_ms
            )));
        }
        let preset_id = raw
            .hmac
            .as_ref()
            .and_then(signature::HmacConfig::delivery_id);
        let event_fields = raw
            .hmac
            .as_ref()
            .and_then(|h| h.provider)
            .map(|provider| event_fields(provider, preset_id.clone()));
        let destinations: Vec<_> = destinations
            .into_iter()
            .map(|d| d.with_event_fields(event_fields.clone()))
            .collect();
        let dedup = raw
            .dedup
            .map(|d| d.compile(preset_id))
            .transpose()?
            .flatten();
        if matches!(&dedup, Some(d) if matches!(d.key, crate::dedup::KeySource::JsonPointer(_)))
            && raw.data_type != DataType::Json
        {
            return Err(ConfigError::Invalid(
                "a `dedup` key read from the body (`json_pointer`) needs `data_type: json`".into(),
            ));
        }
        // Slack's verification `token` (top level in the Events API, inside the `payload=` JSON
        // of interactivity) is a credential: the preset masks it unless the entry says how to
        // clean the body itself. A `blob` body is handed on untouched.
        let slack = raw.hmac.as_ref().and_then(|h| h.provider) == Some(signature::Provider::Slack);
        let credential_cleanup = raw.credential_cleanup.or_else(|| {
            (slack && raw.data_type != DataType::Blob).then(|| cleanup::CleanupConfig {
                enabled: true,
                mode: cleanup::Mode::Mask,
                fields: Some(vec!["token".into()]),
            })
        });
        let checks = RawChecks {
            authorization: raw.authorization,
            header_auth: raw.header_auth,
            query_auth: raw.query_auth,
            basic_auth: raw.basic_auth,
            hmac: raw.hmac,
            jwt: raw.jwt,
            ip_whitelist: raw.ip_whitelist,
            rate_limit: raw.rate_limit,
            json_schema: raw.json_schema,
            max_body_bytes: raw.max_body_bytes,
            credential_cleanup,
            handshake: raw.handshake,
        }
        .compile()?;
        if checks.has_schema() && raw.data_type != DataType::Json {
            return Err(ConfigError::Invalid(
                "`json_schema` needs `data_type: json`".into(),
            ));
        }
        if checks.needs_payload() && raw.data_type == DataType::Blob {
            return Err(ConfigError::Invalid(
                "`credential_cleanup` needs `data_type: json` or `form`".into(),
            ));
        }
        let filter = raw
            .filter
            .map(|rule| crate::condition::Condition::parse(&rule, "filter"))
            .transpose()?;
        let mut reads = crate::condition::Pointers::default();
        filter
            .iter()
            .chain(when.iter().flatten())
            .for_each(|c| c.pointers(&mut reads));
        for mapping in destinations.iter().filter_map(ModuleConfig::mapping) {
            mapping.pointers(&mut reads);
        }
        Ok(Self {
            destinations,
            execution,
            data_type: raw.data_type,
            timeout: Duration::from_millis(raw.timeout_ms),
            checks,
            spool: raw.spool,
            retry: raw
                .retry
                .map_or_else(|| Ok(RetryPolicy::default()), RawRetry::policy)?,
            dedup,
            response: raw.response.map(RawResponse::compile).transpose()?,
            filter,
            when,
            reads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(v: Value) -> Result<Webhook, ConfigError> {
        Webhook::from_bytes(
            v.to_string().as_bytes(),
            &crate::config::Secrets::env_only(&no_env),
        )
    }

    #[test]
    fn the_direct_read_and_the_general_path_agree() {
        let bytes =
            |b: &str| Webhook::from_bytes(b.as_bytes(), &crate::config::Secrets::env_only(&no_env));
        // Same entry, read directly and (with a `\u` escape) through the JSON tree.
        let direct = bytes(r#"{"module":"log","data_type":"blob","timeout_ms":70}"#).unwrap();
        let general = bytes(r#"{"module":"log","data_type":"\u0062lob","timeout_ms":70}"#).unwrap();
        assert_eq!(direct.data_type, DataType::Blob);
        assert_eq!(direct.data_type, general.data_type);
        assert_eq!(direct.timeout, general.timeout);
        // A duplicate field fails the direct read; the general path decides (the last wins), as
        // before the direct read existed.
        let duplicate = bytes(r#"{"module":"log","data_type":"json","data_type":"blob"}"#).unwrap();
        assert_eq!(duplicate.data_type, DataType::Blob);
        // Refusals read the same either way.
        let unknown = bytes(r#"{"module":"log","extra":1}"#)
            .unwrap_err()
            .to_string();
        let escaped = bytes(r#"{"module":"log","\u0065xtra":1}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(unknown, escaped);
        // An escaped reference is still a reference outside the credential fields.
        assert!(bytes(r#"{"module":"log","data_type":"\u007b$X}"}"#).is_err());
    }

    #[test]
    fn minimal_log_webhook_gets_defaults() {
        let w = parse(json!({"module": "log"})).unwrap();
        assert_eq!(w.data_type, DataType::Json);
        assert_eq!(w.timeout, Duration::from_secs(5));
        assert_eq!(
            w.destinations,
            vec![ModuleConfig::parse("log", None, None).unwrap()]
        );
    }

    #[test]
    fn full_entry_is_read() {
        let w = parse(
            json!({"module": "log", "module-config": {"pretty_print": true},
            "connection": "main-log", "data_type": "blob", "timeout_ms": 250}),
        )
        .unwrap();
        assert_eq!(w.data_type, DataType::Blob);
        assert_eq!(w.timeout, Duration::from_millis(250));
        assert_eq!(
            w.destinations,
            vec![ModuleConfig::parse("log", Some(json!({"pretty_print": true})), None).unwrap()]
        );
    }

    #[test]
    fn spool_mode_and_retry_are_read_with_defaults_and_bounds() {
        let w = parse(json!({"module": "log"})).unwrap();
        assert_eq!(w.spool, SpoolMode::OnFailure);
        assert_eq!(w.retry, RetryPolicy::default());
        let w = parse(json!({"module": "log", "spool": "always",
            "retry": {"max_age_seconds": 60, "max_attempts": 3}}))
        .unwrap();
        assert_eq!(w.spool, SpoolMode::Always);
        assert_eq!(
            w.retry,
            RetryPolicy {
                max_age: Duration::from_secs(60),
                max_attempts: Some(3)
            }
        );
        for (bad, reason) in [
            (
                json!({"module": "log", "spool": "sometimes"}),
                "unknown variant",
            ),
            (
                json!({"module": "log", "retry": {"max_age_seconds": 0}}),
                "between 1 and",
            ),
            (
                json!({"module": "log", "retry": {"max_attempts": 0}}),
                "at least 1",
            ),
            (
                json!({"module": "log", "retry": {"attempts": 2}}),
                "unknown field",
            ),
        ] {
            let err = parse(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn chain_lists_destinations_with_their_connections() {
        let w = parse(json!({"chain": [
                {"module": "kafka", "connection": "k", "module-config": {"topic": "t"}},
                {"module": "redis_stream", "connection": "r", "module-config": {"stream": "s"}},
                {"module": "log"}
            ], "chain-config": {"execution": "parallel"}}))
        .unwrap();
        assert_eq!(w.execution, Execution::Parallel);
        let names: Vec<_> = w.destinations.iter().map(ModuleConfig::name).collect();
        assert_eq!(names, ["kafka", "redis_stream", "log"]);
        let w = parse(json!({"chain": [{"module": "log"}]})).unwrap();
        assert_eq!(w.execution, Execution::Sequential);
    }

    #[test]
    fn chain_errors_name_the_element() {
        let err = parse(json!({"chain": [{"module": "log"}, {"module": "kafka"}]}))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chain[1]:"), "{err}");
        for (bad, reason) in [
            (json!({"chain": []}), "`chain` must not be empty"),
            (
                json!({"module": "log", "chain": [{"module": "log"}]}),
                "not both",
            ),
            (
                json!({"chain": [{"module": "log"}], "connection": "c"}),
                "inside each element",
            ),
            (
                json!({"module": "log", "chain-config": {"execution": "parallel"}}),
                "only goes with `chain`",
            ),
            (
                json!({"chain": [{"module": "log", "extra": 1}]}),
                "unknown field `extra`",
            ),
            (
                json!({"chain": [{"module": "log"}], "chain-config": {"execution": "random"}}),
                "unknown variant `random`",
            ),
        ] {
            let err = parse(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_top_level_field_is_refused_and_named() {
        let err = parse(json!({"module": "log", "hmca": {}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hmca"), "{err}");
    }

    #[test]
    fn missing_module_is_refused() {
        let err = parse(json!({"data_type": "json"})).unwrap_err().to_string();
        assert!(err.contains("module"), "{err}");
    }

    #[test]
    fn bad_json_and_non_objects_are_refused() {
        assert!(matches!(
            Webhook::from_bytes(b"{not json", &crate::config::Secrets::env_only(&no_env)),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            Webhook::from_bytes(b"[1]", &crate::config::Secrets::env_only(&no_env)),
            Err(ConfigError::NotAnObject)
        ));
    }

    #[test]
    fn bad_data_type_and_connection_name_are_refused() {
        for (bad, reason) in [
            (
                json!({"module": "log", "data_type": "xml"}),
                "unknown variant `xml`",
            ),
            (
                json!({"module": "log", "connection": "a b"}),
                "`connection`:",
            ),
            (
                json!({"module": "log", "timeout_ms": 0}),
                "`timeout_ms` is 0",
            ),
        ] {
            let err = parse(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn environment_references_are_substituted_in_credentials_only() {
        let env = |name: &str| (name == "SECRET").then(|| "s3cr3t-value".to_owned());
        let w = Webhook::from_bytes(
            br#"{"module": "log", "hmac": {"provider": "github", "secret": "{$SECRET}"}}"#,
            &crate::config::Secrets::env_only(&env),
        );
        assert!(w.is_ok());
        let err = Webhook::from_bytes(
            br#"{"module": "log", "data_type": "{$SECRET}"}"#,
            &crate::config::Secrets::env_only(&env),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::NotSubstitutable(_)), "{err}");
        assert!(err.to_string().contains("/data_type"), "{err}");
        let err = Webhook::from_bytes(
            br#"{"module": "log", "json_schema": {"const": "{$SECRET}"}}"#,
            &crate::config::Secrets::env_only(&env),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = Webhook::from_bytes(
            br#"{"module": "log", "authorization": "{$MOD}"}"#,
            &crate::config::Secrets::env_only(&no_env),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingVar(_)));
    }

    #[test]
    fn an_hmac_secret_empty_after_substitution_is_refused() {
        let env = |name: &str| (name == "EMPTY").then(String::new);
        let err = Webhook::from_bytes(
            br#"{"module": "log", "hmac": {"provider": "github", "secret": "{$EMPTY}"}}"#,
            &crate::config::Secrets::env_only(&env),
        )
        .unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
    }

    #[test]
    fn a_rotation_list_of_secrets_takes_variables_in_each_entry() {
        let env = |name: &str| match name {
            "OLD" => Some("old-secret".to_owned()),
            "NEW" => Some("new-secret".to_owned()),
            _ => None,
        };
        let listed =
            br#"{"module":"log","hmac":{"provider":"github","secret":["{$OLD}","{$NEW}"]}}"#;
        assert!(Webhook::from_bytes(listed, &crate::config::Secrets::env_only(&env)).is_ok());
        let unset =
            br#"{"module":"log","hmac":{"provider":"github","secret":["{$OLD}","{$GONE}"]}}"#;
        let err = Webhook::from_bytes(unset, &crate::config::Secrets::env_only(&env))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GONE"), "{err}");
        for (list, why) in [
            (r#"[]"#, "1 to 5"),
            (r#"["a","b","c","d","e","f"]"#, "1 to 5"),
            (r#"["a",""]"#, "must not be empty"),
            (r#"[1]"#, "a secret string or a list"),
        ] {
            let entry = format!(r#"{{"module":"log","hmac":{{"secret":{list}}}}}"#);
            let err =
                Webhook::from_bytes(entry.as_bytes(), &crate::config::Secrets::env_only(&env))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(why), "{list}: {err}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! The config parser takes anything etcd can hold and never panics.

    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_owned())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::String),
            prop_oneof![Just("{$SET}"), Just("{$UNSET}"), Just("{$X:d}")]
                .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("module".to_owned()),
                Just("module-config".to_owned()),
                Just("connection".to_owned()),
                Just("chain".to_owned()),
                Just("hmac".to_owned()),
                Just("jwt".to_owned()),
                Just("json_schema".to_owned()),
                Just("rate_limit".to_owned()),
                Just("ip_whitelist".to_owned()),
                Just("credential_cleanup".to_owned()),
                Just("secret".to_owned()),
                Just("provider".to_owned()),
                "[a-z_]{1,10}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Webhook::from_bytes(&bytes, &crate::config::Secrets::env_only(&env));
            let _ = crate::config::Connection::from_bytes(&bytes, &crate::config::Secrets::env_only(&env));
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            let bytes = value.to_string();
            let _ = Webhook::from_bytes(bytes.as_bytes(), &crate::config::Secrets::env_only(&env));
            let _ = crate::config::Connection::from_bytes(bytes.as_bytes(), &crate::config::Secrets::env_only(&env));
        }
    }
}
