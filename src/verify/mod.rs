//! Inbound verification: per-webhook checks that all pass (AND) before any module is touched.
//!
//! Order: `ip_whitelist` (403), credentials in the head (`authorization`, `header_auth`,
//! `query_auth`, `basic_auth`, `jwt`: 401), `rate_limit` (429), then once the body is read
//! (`max_body_bytes`: 413) its signature (`hmac`: 401), `json_schema` (400) and
//! `credential_cleanup`. Errors never say which part of a credential was wrong.

pub mod auth;
pub mod cleanup;
mod ct;
pub mod ip;
pub mod jwt;
pub mod limit;
pub mod schema;
pub mod signature;

use std::{net::IpAddr, time::SystemTime};

use serde_json::Value;

use crate::config::{secret::Secret, ConfigError};

/// What the checks see of a request (built by the HTTP layer, no HTTP types here).
pub struct Inbound<'a> {
    /// Header lookup by case-insensitive name.
    pub headers: &'a dyn Fn(&str) -> Option<&'a str>,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The client address (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    pub now: SystemTime,
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
    Unauthorized,
    #[error("authentication failed")]
    BasicUnauthorized,
    #[error("client address not allowed")]
    Forbidden,
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("payload violates the schema at {path}: {message}")]
    SchemaViolation { path: String, message: String },
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
    cleanup: Option<cleanup::Cleanup>,
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
        if let Some(h) = self.header_auth {
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
            signature: self.hmac.map(signature::HmacConfig::compile).transpose()?,
            schema: self
                .json_schema
                .as_ref()
                .map(schema::Schema::compile)
                .transpose()?,
            max_body_bytes: self.max_body_bytes,
            cleanup: self
                .credential_cleanup
                .and_then(cleanup::CleanupConfig::compile),
        })
    }
}

impl Checks {
    /// Checks that need only the request head, in order: address, credentials, rate.
    pub fn check_head(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        if let Some(list) = &self.ip_whitelist {
            if !list.contains(inbound.client_ip) {
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
        if let Some(limit) = &self.rate_limit {
            limit
                .check()
                .map_err(|retry_after_secs| VerifyError::RateLimited { retry_after_secs })?;
        }
        Ok(())
    }

    /// The body's signature.
    pub fn check_signature(&self, inbound: &Inbound<'_>, body: &[u8]) -> Result<(), VerifyError> {
        match &self.signature {
            Some(signature) => signature.check(inbound, body),
            None => Ok(()),
        }
    }

    /// Whether the payload must be parsed (schema or cleanup).
    pub fn needs_payload(&self) -> bool {
        self.schema.is_some() || self.cleanup.is_some()
    }

    /// Schema check, then cleanup; returns the cleaned payload when cleanup changed it.
    pub fn check_payload(&self, payload: &mut Value) -> Result<bool, VerifyError> {
        if let Some(schema) = &self.schema {
            if let Some((path, message)) = schema.first_violation(payload) {
                return Err(VerifyError::SchemaViolation { path, message });
            }
        }
        Ok(self.cleanup.as_ref().is_some_and(|c| c.apply(payload)))
    }
}
