//! Inbound verification: per-webhook checks that all pass (AND) before any module is touched.
//!
//! Order: `ip_whitelist` (403), credentials in the head (`authorization`, `header_auth`,
//! `query_auth`, `basic_auth`, `jwt`: 401), then once the body is read (`max_body_bytes`: 413)
//! its signature (`hmac`: 401), then `rate_limit` (429: only requests that passed every
//! credential check spend the budget), then the body stage: strict JSON (400), `json_schema`
//! (400) and `credential_cleanup`. Errors never say which part of a credential was wrong, and a
//! schema refusal names the path and the rule, never the value. Provider handshakes
//! ([`handshake`]) are answered on the way: signed ones right after the signature.

pub mod auth;
pub mod cleanup;
mod ct;
pub mod handshake;
pub mod ip;
pub mod json;
pub mod jwt;
pub mod limit;
pub mod schema;
pub mod signature;

use std::{net::IpAddr, time::SystemTime};

use bytes::Bytes;
use serde_json::Value;

use crate::config::{secret::Secret, ConfigError};

/// What the checks see of a request (built by the HTTP layer, no HTTP types here).
pub struct Inbound<'a> {
    /// Header lookup by case-insensitive name.
    pub headers: &'a dyn Fn(&str) -> Option<&'a str>,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The client address (after trusted-proxy resolution); `None` when a forwarded hop could
    /// not be read, so the client is unknown (`ip_whitelist` then refuses).
    pub client_ip: Option<IpAddr>,
    pub now: SystemTime,
    /// The URL the sender called, as far as this server can tell (scheme from a trusted
    /// proxy's `X-Forwarded-Proto`, `Host`, path and query); Twilio signs it. Built only by the
    /// check that needs it.
    pub url: &'a dyn Fn() -> Option<String>,
}

impl Inbound<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers)(name)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("authentication failed")]
    Unauthorized(Why),
    #[error("authentication failed")]
    BasicUnauthorized(Why),
    #[error("client address not allowed")]
    Forbidden,
    /// A WebSub hub asked to verify a subscription this webhook did not make: the spec's 404.
    #[error("no such subscription here")]
    NotSubscribed,
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// `rule` is the schema keyword that failed (`const`, `type`, ...); the value is never
    /// echoed: it may be a credential the cleanup has not removed yet.
    #[error("payload violates the schema at {path}: rule `{rule}`")]
    SchemaViolation { path: String, rule: String },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body is not form encoded (application/x-www-form-urlencoded): {0}")]
    InvalidForm(String),
    /// The cleanup could not walk a body that passed validation: a fault of this server.
    #[error("credential cleanup failed on a validated body")]
    CleanupFailed,
}

/// Why a request was refused as unauthenticated: logged with the request, never told the sender
/// (one generic 401 for every cause, so that a sender learns nothing to try next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The credential (header, query parameter, token) is absent.
    MissingCredential,
    /// The credential is there and wrong (or ambiguous).
    WrongCredential,
    /// A header the signature scheme needs is absent.
    MissingHeader,
    /// The signature does not verify with any secret.
    BadSignature,
    /// The signed timestamp is outside the tolerance (a replay, or a clock far off).
    TimestampOutOfTolerance,
    /// The token is not valid for this webhook's key (bad signature, algorithm or claims).
    InvalidToken,
    /// The token has expired, is not valid yet, or was issued in the future.
    TokenTimes,
    /// A handshake's token or parameters are wrong.
    HandshakeTokenMismatch,
    /// Microsoft Graph's `clientState` is missing or wrong in a notification.
    ClientStateMismatch,
    /// A signature carried in the body (Mailgun's) is absent.
    MissingSignature,
    /// The webhook awaits the secret its provider's handshake gave (Asana): nothing is
    /// delivered unverified meanwhile.
    SecretNotConfigured,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::MissingCredential => "missing_credential",
            Why::WrongCredential => "wrong_credential",
            Why::MissingHeader => "missing_header",
            Why::BadSignature => "bad_signature",
            Why::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Why::InvalidToken => "invalid_token",
            Why::TokenTimes => "token_expired_or_not_yet_valid",
            Why::HandshakeTokenMismatch => "handshake_token_mismatch",
            Why::ClientStateMismatch => "client_state_mismatch",
            Why::MissingSignature => "missing_signature",
            Why::SecretNotConfigured => "secret_not_configured",
        }
    }
}

impl VerifyError {
    /// The refusal's class for the log (`reason_class`): the cause, which the sender's answer
    /// never tells.
    pub fn class(&self) -> &'static str {
        match self {
            VerifyError::Unauthorized(why) | VerifyError::BasicUnauthorized(why) => why.as_str(),
            VerifyError::Forbidden => "address_not_allowed",
            VerifyError::NotSubscribed => "topic_mismatch",
            VerifyError::RateLimited { .. } => "rate_limited",
            VerifyError::SchemaViolation { .. } => "schema_violation",
            VerifyError::InvalidJson(_) => "invalid_json",
            VerifyError::InvalidForm(_) => "invalid_form",
            VerifyError::CleanupFailed => "cleanup_failed",
        }
    }
}

/// The verification fields of a webhook entry, as written.
#[derive(Debug, Default)]
pub struct RawChecks {
    pub authorization: Option<Secret>,
    pub header_auth: Option<auth::HeaderAuth>,
    pub query_auth: Option<auth::QueryAuth>,
    pub basic_auth: Option<auth::BasicAuth>,
    pub hmac: Option<signature::HmacConfig>,
    pub jwt: Option<jwt::JwtConfig>,
    pub ip_whitelist: Option<Vec<String>>,
    pub rate_limit: Option<limit::RateLimitConfig>,
    pub json_schema: Option<Value>,
    pub max_body_bytes: Option<u64>,
    pub credential_cleanup: Option<cleanup::CleanupConfig>,
    pub handshake: Option<handshake::HandshakeConfig>,
}

/// A head check (needs no body).
#[derive(Debug, Clone)]
enum HeadCheck {
    Authorization(Secret),
    Header(auth::HeaderAuth),
    Query(auth::QueryAuth),
    Basic(auth::BasicAuth),
    Jwt(Box<jwt::JwtCheck>),
}

/// Compiled checks of one webhook version.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    ip_whitelist: Option<ip::IpList>,
    head: Vec<HeadCheck>,
    rate_limit: Option<limit::RateLimit>,
    signature: Option<signature::SignatureCheck>,
    schema: Option<schema::Schema>,
    /// Overrides `MAX_BODY_BYTES` for this webhook.
    pub max_body_bytes: Option<u64>,
    /// The largest body the preset's provider sends, when it is known and no `max_body_bytes`
    /// is given (GitHub: 25 MB).
    preset_body_bytes: Option<u64>,
    cleanup: Option<cleanup::Cleanup>,
    /// Lower-case names of the headers these checks read credentials from: never handed on.
    credential_headers: Vec<String>,
    /// The provider handshake this webhook answers (chosen, or implied by its preset).
    handshake: Option<handshake::Handshake>,
    /// The provider whose sender gives up after this long, if known: `switchyard check` warns
    /// when the webhook may answer later.
    pub answer_limit: Option<(&'static str, std::time::Duration)>,
}

impl RawChecks {
    /// Validates and compiles (schemas, keys, limiters). Pure: no I/O.
    pub fn compile(self) -> Result<Checks, ConfigError> {
        let mut head = Vec::new();
        if let Some(expected) = self.authorization {
            if expected.expose().is_empty() {
                return Err(ConfigError::Invalid(
                    "`authorization` must not be empty".into(),
                ));
            }
            head.push(HeadCheck::Authorization(expected));
        }
        let mut credential_headers = Vec::new();
        if let Some(h) = self.header_auth {
            credential_headers.push(h.header_name.to_ascii_lowercase());
            if h.header_name.is_empty() || h.api_key.expose().is_empty() {
                return Err(ConfigError::Invalid(
                    "`header_auth` needs a `header_name` and a non-empty `api_key`".into(),
                ));
            }
            head.push(HeadCheck::Header(h));
        }
        if let Some(q) = self.query_auth {
            if q.parameter_name.is_empty() || q.api_key.expose().is_empty() {
                return Err(ConfigError::Invalid(
                    "`query_auth` needs a `parameter_name` and a non-empty `api_key`".into(),
                ));
            }
            head.push(HeadCheck::Query(q));
        }
        if let Some(b) = self.basic_auth {
            if b.username.expose().is_empty() || b.password.expose().is_empty() {
                return Err(ConfigError::Invalid(
                    "`basic_auth` needs a non-empty `username` and `password`".into(),
                ));
            }
            head.push(HeadCheck::Basic(b));
        }
        if let Some(j) = self.jwt {
            head.push(HeadCheck::Jwt(Box::new(j.compile()?)));
        }
        if self.max_body_bytes == Some(0) {
            return Err(ConfigError::Invalid(
                "`max_body_bytes` must be 1 or more".into(),
            ));
        }
        let answer_limit = answer_limit(
            self.hmac.as_ref().and_then(|h| h.provider),
            self.handshake.as_ref(),
        );
        let preset_body_bytes = match self.hmac.as_ref().and_then(|h| h.provider) {
            // "Payloads are capped at 25 MB", and GitHub never retries a refused delivery.
            Some(signature::Provider::Github) => Some(25 << 20),
            _ => None,
        };
        let signature = self.hmac.map(signature::HmacConfig::compile).transpose()?;
        if let Some(signature) = &signature {
            credential_headers.extend(signature.headers().iter().map(|h| h.to_ascii_lowercase()));
        }
        let implied = signature
            .as_ref()
            .and_then(signature::SignatureCheck::implied_handshake);
        let handshake =
            match (self.handshake, implied) {
                (Some(_), Some(_)) => return Err(ConfigError::Invalid(
                    "the `hmac` preset answers its provider's handshake itself; remove `handshake`"
                        .into(),
                )),
                (Some(chosen), None) => Some(chosen.compile()?),
                (None, implied) => implied,
            };
        Ok(Checks {
            ip_whitelist: self
                .ip_whitelist
                .as_deref()
                .map(ip::compile_whitelist)
                .transpose()?,
            head,
            rate_limit: self
                .rate_limit
                .as_ref()
                .map(limit::RateLimitConfig::compile)
                .transpose()?,
            signature,
            schema: self
                .json_schema
                .as_ref()
                .map(schema::Schema::compile)
                .transpose()?,
            max_body_bytes: self.max_body_bytes,
            preset_body_bytes,
            cleanup: self
                .credential_cleanup
                .and_then(cleanup::CleanupConfig::compile),
            credential_headers,
            handshake,
            answer_limit,
        })
    }
}

/// How long a provider waits for the answer before it counts the delivery as failed (and, for
/// some, retries or disables the endpoint).
fn answer_limit(
    preset: Option<signature::Provider>,
    handshake: Option<&handshake::HandshakeConfig>,
) -> Option<(&'static str, std::time::Duration)> {
    use signature::Provider;
    let secs = |name, s| Some((name, std::time::Duration::from_secs(s)));
    match (preset, handshake) {
        (Some(Provider::Slack), _) => secs("Slack", 3),
        (Some(Provider::Zoom), _) => secs("Zoom", 3),
        (_, Some(handshake::HandshakeConfig::Okta {})) => secs("Okta", 3),
        (Some(Provider::Shopify), _) => secs("Shopify", 5),
        (Some(Provider::Github), _) => secs("GitHub", 10),
        _ => None,
    }
}

impl Checks {
    /// The largest body accepted: the webhook's `max_body_bytes`, else its preset's size, else
    /// `default` (`MAX_BODY_BYTES`); never above `ceiling` (`MAX_BODY_BYTES_CEILING`).
    pub fn body_limit(&self, default: u64, ceiling: u64) -> u64 {
        self.max_body_bytes
            .or(self.preset_body_bytes)
            .unwrap_or(default)
            .min(ceiling)
    }

    /// Checks that need only the request head, in order: address, then credentials.
    pub fn check_head(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        if let Some(list) = &self.ip_whitelist {
            if !inbound.client_ip.is_some_and(|ip| list.contains(ip)) {
                return Err(VerifyError::Forbidden);
            }
        }
        for check in &self.head {
            match check {
                HeadCheck::Authorization(expected) => auth::check_authorization(expected, inbound)?,
                HeadCheck::Header(h) => h.check(inbound)?,
                HeadCheck::Query(q) => q.check(inbound)?,
                HeadCheck::Basic(b) => b.check(inbound)?,
                HeadCheck::Jwt(j) => j.check(inbound)?,
            }
        }
        Ok(())
    }

    /// The body's signature, and what else in the body proves the sender (Microsoft Graph's
    /// `clientState`). A webhook that answers Asana's handshake but has no `hmac` yet refuses
    /// every delivery: Asana retries them for a day, until the operator put the secret in.
    pub fn check_signature(&self, inbound: &Inbound<'_>, body: &[u8]) -> Result<(), VerifyError> {
        match &self.signature {
            Some(signature) => signature.check(inbound, body)?,
            None if matches!(self.handshake, Some(handshake::Handshake::Asana)) => {
                return Err(VerifyError::Unauthorized(Why::SecretNotConfigured))
            }
            None => {}
        }
        match &self.handshake {
            Some(handshake) => handshake.check_body(body),
            None => Ok(()),
        }
    }

    /// Spends one unit of the webhook's `rate_limit`. Call only once every credential and
    /// signature check passed, so that nobody without credentials can spend the budget.
    pub fn charge_rate_limit(&self) -> Result<(), VerifyError> {
        match &self.rate_limit {
            Some(limit) => limit
                .check()
                .map_err(|retry_after_secs| VerifyError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Whether the payload must be parsed (schema or cleanup).
    pub fn needs_payload(&self) -> bool {
        self.schema.is_some() || self.cleanup.is_some()
    }

    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// The body stage for `data_type: form`: form encoding, then the cleanup of form fields.
    pub fn check_form_body(&self, body: Bytes) -> Result<Bytes, VerifyError> {
        cleanup::validate_form(&body).map_err(VerifyError::InvalidForm)?;
        match &self.cleanup {
            Some(cleanup) => Ok(cleanup.apply_form(&body).map_or(body, Bytes::from)),
            None => Ok(body),
        }
    }

    /// The body stage for `data_type: json`: strict JSON (valid UTF-8, no lone surrogates),
    /// the schema, then the cleanup. Returns the bytes to hand on: the body itself, or with
    /// cleanup only the credential values changed (key order, numbers and spacing are kept).
    /// Checks a JSON body (strictly, then its schema), cleans it, and hands the body as it
    /// will be delivered to `decide`, with the parts `reads` names when the strict check could
    /// keep them (without schema and cleanup, the body it read is the one delivered).
    pub fn check_json_body<T>(
        &self,
        body: Bytes,
        reads: &crate::condition::Pointers,
        decide: impl FnOnce(&[u8], Option<crate::condition::Json<'_>>) -> T,
    ) -> Result<(Bytes, T), VerifyError> {
        if self.schema.is_none() && self.cleanup.is_none() {
            let kept = json::read(&body, reads).map_err(VerifyError::InvalidJson)?;
            let decided = decide(&body, kept);
            return Ok((body, decided));
        }
        let body = self.check_and_clean_json(body)?;
        let decided = decide(&body, None);
        Ok((body, decided))
    }

    fn check_and_clean_json(&self, body: Bytes) -> Result<Bytes, VerifyError> {
        json::validate(&body).map_err(VerifyError::InvalidJson)?;
        if let Some(schema) = &self.schema {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| VerifyError::InvalidJson(e.to_string()))?;
            if let Some((path, rule)) = schema.first_violation(&value) {
                return Err(VerifyError::SchemaViolation { path, rule });
            }
        }
        match &self.cleanup {
            Some(cleanup) => match cleanup.apply(&body) {
                Ok(Some(cleaned)) => Ok(Bytes::from(cleaned)),
                Ok(None) => Ok(body),
                Err(cleanup::NotJson) => Err(VerifyError::CleanupFailed),
            },
            None => Ok(body),
        }
    }

    /// The handshake this webhook answers on `GET`, if any (without one, `GET` is 405).
    pub fn get_handshake(&self) -> Option<&handshake::Handshake> {
        self.handshake.as_ref().filter(|h| h.on_get())
    }

    /// A validation `POST` answered from its head, before the body (Microsoft Graph's query,
    /// Asana's `X-Hook-Secret`).
    pub fn head_handshake(
        &self,
        inbound: &Inbound<'_>,
    ) -> Option<Result<handshake::Answered, VerifyError>> {
        self.handshake.as_ref()?.answer_head(inbound)
    }

    /// Whether this webhook answers `HEAD` with 200 (Trello checks its callback URL so).
    pub fn answers_head(&self) -> bool {
        matches!(self.handshake, Some(handshake::Handshake::Trello))
    }

    /// A signed handshake in the body (Slack, Zoom, Twitch); call after the signature passed.
    pub fn body_handshake(
        &self,
        inbound: &Inbound<'_>,
        body: &[u8],
    ) -> Option<Result<handshake::Answered, VerifyError>> {
        let signer = || self.signature.as_ref()?.signer(inbound, body);
        self.handshake.as_ref()?.answer_body(inbound, body, &signer)
    }

    /// Whether a request header (lower-case name) carries one of this webhook's credentials.
    pub fn reads_credential_from(&self, header: &str) -> bool {
        self.credential_headers.iter().any(|h| h == header)
    }
}
