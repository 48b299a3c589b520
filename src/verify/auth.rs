//! Credential checks that need only the request head: `authorization`, `header_auth`,
//! `query_auth`, `basic_auth`.

use base64::Engine as _;
use serde::Deserialize;

use super::{ct, Inbound, VerifyError, Why};
use crate::config::secret::Secret;

/// `header_auth`: a header that must carry an API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderAuth {
    pub header_name: String,
    pub api_key: Secret,
    /// Compare the key case-sensitively (default true).
    #[serde(default = "yes")]
    pub case_sensitive: bool,
}

/// `query_auth`: a query parameter that must carry an API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryAuth {
    pub parameter_name: String,
    pub api_key: Secret,
}

/// `basic_auth`: HTTP Basic credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: Secret,
    pub password: Secret,
}

fn yes() -> bool {
    true
}

/// `authorization`: the exact `Authorization` header value.
pub fn check_authorization(expected: &Secret, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
    let Some(given) = inbound.header("authorization") else {
        return Err(VerifyError::Unauthorized(Why::MissingCredential));
    };
    if ct::eq(given.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Unauthorized(Why::WrongCredential))
    }
}

impl HeaderAuth {
    pub fn check(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let Some(given) = inbound.header(&self.header_name) else {
            return Err(VerifyError::Unauthorized(Why::MissingCredential));
        };
        let ok = if self.case_sensitive {
            ct::eq(given.as_bytes(), self.api_key.expose().as_bytes())
        } else {
            ct::eq(
                given.to_lowercase().as_bytes(),
                self.api_key.expose().to_lowercase().as_bytes(),
            )
        };
        if ok {
            Ok(())
        } else {
            Err(VerifyError::Unauthorized(Why::WrongCredential))
        }
    }
}

impl QueryAuth {
    pub fn check(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let query = inbound.query.unwrap_or_default();
        let mut found = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name == self.parameter_name.as_str() {
                if found.is_some() {
                    // Two values for the key: ambiguous, refuse.
                    return Err(VerifyError::Unauthorized(Why::WrongCredential));
                }
                found = Some(value);
            }
        }
        let Some(given) = found else {
            return Err(VerifyError::Unauthorized(Why::MissingCredential));
        };
        if ct::eq(given.as_bytes(), self.api_key.expose().as_bytes()) {
            Ok(())
        } else {
            Err(VerifyError::Unauthorized(Why::WrongCredential))
        }
    }
}

impl BasicAuth {
    pub fn check(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let refuse = Err(VerifyError::BasicUnauthorized(Why::WrongCredential));
        let Some(header) = inbound.header("authorization") else {
            return Err(VerifyError::BasicUnauthorized(Why::MissingCredential));
        };
        let Some((scheme, encoded)) = header.trim().split_once(' ') else {
            return refuse;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return refuse;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return refuse;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return refuse;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both compared, always: the answer must not tell which one was wrong.
        let user_ok = ct::eq(user, self.username.expose().as_bytes());
        let password_ok = ct::eq(password, self.password.expose().as_bytes());
        if user_ok & password_ok {
            Ok(())
        } else {
            refuse
        }
    }
}
