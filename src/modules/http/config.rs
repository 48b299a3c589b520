//! `module-config` of the `http` module.

use serde::Deserialize;

use crate::config::{secret::Secret, ConfigError};

/// `module: "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Appended to the connection's `base_url`: empty, or starting with `/` (see
    /// [`validate_path`]).
    #[serde(default)]
    pub path: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers passed on (credential headers are never passed).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Signs each request so the service can tell it came through Switchyard.
    #[serde(default)]
    pub sign: Option<Sign>,
}

/// `sign`: `{"scheme": "standard_webhooks", "secret": "whsec_..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    pub scheme: SignScheme,
    pub secret: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignScheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
    /// `<id>.<timestamp>.<body>` (standardwebhooks.com).
    StandardWebhooks,
}

/// Headers a service gets from Switchyard itself (framing, the connection, the signature):
/// never copied from the request.
const SET_BY_SWITCHYARD: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "traceparent",
    "tracestate",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn default_method() -> String {
    "POST".to_owned()
}

/// The longest `path` accepted.
pub const MAX_PATH: usize = 2048;

impl HttpConfig {
    /// Checks what serde cannot: the path, the method, the signing secret.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        validate_path(&self.path)?;
        self.method = self.method.to_ascii_uppercase();
        if !matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            return Err(ConfigError::Invalid(format!(
                "`method` is {:?}; expected POST, PUT or PATCH",
                self.method
            )));
        }
        for h in &mut self.forward_headers {
            *h = h.to_ascii_lowercase();
            if SET_BY_SWITCHYARD.contains(&h.as_str()) || h.starts_with("proxy-") {
                return Err(ConfigError::Invalid(format!(
                    "`forward_headers`: `{h}` is set by Switchyard or the connection, not passed on"
                )));
            }
        }
        if let Some(sign) = &self.sign {
            signing_key(sign)?;
        }
        Ok(self)
    }
}

/// The key a `sign` secret decodes to.
pub fn signing_key(sign: &Sign) -> Result<Vec<u8>, ConfigError> {
    match sign.scheme {
        SignScheme::StandardWebhooks => {
            crate::verify::signature::standard_webhooks_key(sign.secret.expose()).map_err(|_| {
                ConfigError::Invalid(
                    "`sign.secret` must be `whsec_` + base64 of at least 24 bytes".into(),
                )
            })
        }
    }
}

/// A path that can only ever name something under the connection's `base_url`: empty, or
/// starting with `/`; no `//`, no `.` or `..` segment (nor their percent-encoded forms, nor an
/// encoded `/` or `\`), no `@`, `\`, `#`, spaces or control characters; a query is allowed.
pub fn validate_path(path: &str) -> Result<(), ConfigError> {
    let refuse = |why: &str| Err(ConfigError::Invalid(format!("`path` {path:?} {why}")));
    if path.is_empty() {
        return Ok(());
    }
    if path.len() > MAX_PATH {
        return refuse(&format!("is longer than {MAX_PATH} bytes"));
    }
    if !path.starts_with('/') {
        return refuse("must start with `/`");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '@' | '\\' | '#'))
    {
        return refuse("must not hold `@`, `\\`, `#`, spaces or control characters");
    }
    let route = path.split('?').next().unwrap_or_default();
    if route.contains("//") {
        return refuse("must not hold `//`");
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%40", "%00"]
        .iter()
        .any(|encoded| lower.contains(encoded))
    {
        return refuse("must not hold an encoded `.`, `/`, `\\`, `@` or NUL");
    }
    if route
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return refuse("must not hold a `.` or `..` segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_cannot_leave_the_base_url() {
        for good in [
            "",
            "/",
            "/hooks/github",
            "/a/b.c/d?x=1&y=a/b",
            "/v1/events/",
            "/%41",
        ] {
            assert!(validate_path(good).is_ok(), "{good}");
        }
        for bad in [
            "hooks",
            "//evil.example/x",
            "/a//b",
            "/../admin",
            "/a/./b",
            "/a/..",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/a%2fb",
            "/a%5cb",
            "/@evil.example",
            "/a\\b",
            "/a#frag",
            "/a b",
            "/a\r\nHost: x",
            "/a\u{0}",
            "http://evil.example/",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_path(&format!("/{}", "a".repeat(MAX_PATH))).is_err());
    }

    #[test]
    fn the_method_is_one_that_carries_a_body() {
        let config = |method: &str| HttpConfig {
            path: String::new(),
            method: method.into(),
            forward_headers: vec![],
            sign: None,
        };
        assert_eq!(config("put").validate().unwrap().method, "PUT");
        assert!(config("GET").validate().is_err());
        assert!(config("DELETE").validate().is_err());
        for framing in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "proxy-authorization",
        ] {
            let mut c = config("POST");
            c.forward_headers = vec![framing.to_owned()];
            assert!(c.validate().is_err(), "{framing}");
        }
    }
}
