//! `jwt`: a bearer token signed with a shared secret (HS256/384/512) or a key pair (RS256,
//! ES256, public key in PEM). `none` is never accepted.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{Inbound, VerifyError, Why};
use crate::config::{secret::Secret, ConfigError};

/// `jwt` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The HMAC secret, or for RS256/ES256 the PEM public key.
    #[serde(alias = "public_key")]
    pub secret: Secret,
    /// `HS256` (default), `HS384`, `HS512`, `RS256` or `ES256`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    /// Refuse expired tokens and tokens without `exp` (default true).
    #[serde(default = "yes")]
    pub verify_exp: bool,
    /// Clock difference allowed on `exp`, `nbf` and `iat`, in seconds (default 60).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_leeway() -> u64 {
    60
}

/// Largest accepted `leeway_seconds`: beyond an hour, `exp` means little.
const MAX_LEEWAY_SECS: u64 = 3600;

fn default_algorithm() -> String {
    "HS256".into()
}

fn yes() -> bool {
    true
}

/// A compiled verifier.
#[derive(Clone)]
pub struct JwtCheck {
    key: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and static claims (`iss`, `aud`) verified, by SHA-256 digest,
    /// with their time claims: a sender reuses its token for many requests, and an RS256 or
    /// ES256 signature costs 20 times an unverified request. Only the time claims are checked
    /// again. Bounded: emptied when full.
    verified: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], Times>>>,
}

/// Most tokens remembered per check.
const VERIFIED_TOKENS: usize = 4096;

/// The time claims (checked by jsonwebtoken on first sight, then here on every request).
#[derive(serde::Deserialize)]
struct TimeClaims {
    #[serde(default)]
    iat: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

/// A verified token's time claims (Unix seconds).
#[derive(Debug, Clone, Copy)]
struct Times {
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
}

impl std::fmt::Debug for JwtCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtCheck")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    pub fn compile(self) -> Result<JwtCheck, ConfigError> {
        let algorithm = match self.algorithm.to_ascii_uppercase().as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "`jwt.algorithm` {other:?} is not supported; expected HS256, HS384, HS512, \
                     RS256 or ES256 (never none)"
                )))
            }
        };
        let secret = self.secret.expose().as_bytes();
        let key = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(secret),
            Algorithm::ES256 => DecodingKey::from_ec_pem(secret),
            _ if secret.is_empty() => {
                return Err(ConfigError::Invalid(
                    "`jwt.secret` must not be empty".into(),
                ))
            }
            _ => Ok(DecodingKey::from_secret(secret)),
        }
        .map_err(|e| ConfigError::Invalid(format!("`jwt.secret` is not a usable key: {e}")))?;
        if self.leeway_seconds > MAX_LEEWAY_SECS {
            return Err(ConfigError::Invalid(format!(
                "`jwt.leeway_seconds` is {}; at most {MAX_LEEWAY_SECS}",
                self.leeway_seconds
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = self.verify_exp;
        // A token is not valid before `nbf` (RFC 7519 4.1.5), whenever `nbf` is present.
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        validation.required_spec_claims.clear();
        if self.verify_exp {
            validation.required_spec_claims.insert("exp".into());
        }
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(JwtCheck {
            key,
            validation,
            verified: std::sync::Arc::default(),
        })
    }
}

impl JwtCheck {
    /// `exp`, `nbf` and `iat` against `now`, with the leeway (as `jsonwebtoken` checks them).
    fn check_times(&self, times: Times, now: f64) -> Result<(), VerifyError> {
        let leeway = self.validation.leeway as f64;
        let expired =
            self.validation.validate_exp && times.exp.is_some_and(|exp| exp < now - leeway);
        let early = times.nbf.is_some_and(|nbf| nbf > now + leeway);
        let future = times.iat.is_some_and(|iat| iat > now + leeway);
        if expired || early || future {
            return Err(VerifyError::Unauthorized(Why::TokenTimes));
        }
        Ok(())
    }

    /// Verifies `Authorization: Bearer <token>`.
    pub fn check(&self, inbound: &Inbound<'_>) -> Result<(), VerifyError> {
        let token = inbound
            .header("authorization")
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .ok_or(VerifyError::Unauthorized(Why::MissingCredential))?;
        let digest: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(token.as_bytes()).into()
        };
        let now = inbound
            .now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64().floor());
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(&digest).copied());
        let times = match remembered {
            Some(times) => times,
            None => {
                let claims = jsonwebtoken::decode::<TimeClaims>(token, &self.key, &self.validation)
                    .map_err(|_| VerifyError::Unauthorized(Why::InvalidToken))?
                    .claims;
                let number = |v: Option<serde_json::Value>| match v {
                    None => Ok(None),
                    Some(v) => v
                        .as_f64()
                        .map(Some)
                        .ok_or(VerifyError::Unauthorized(Why::InvalidToken)),
                };
                let times = Times {
                    exp: number(claims.exp)?,
                    nbf: number(claims.nbf)?,
                    iat: number(claims.iat)?,
                };
                if let Ok(mut verified) = self.verified.lock() {
                    if verified.len() >= VERIFIED_TOKENS {
                        verified.clear();
                    }
                    verified.insert(digest, times);
                }
                times
            }
        };
        self.check_times(times, now)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap()
    }

    fn check_at(check: &JwtCheck, token: &str, at: std::time::SystemTime) -> bool {
        let header = format!("Bearer {token}");
        let headers = |name: &str| (name == "authorization").then_some(header.as_str());
        check
            .check(&Inbound {
                headers: &headers,
                query: None,
                client_ip: None,
                now: at,
                url: &|| None,
            })
            .is_ok()
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_forged_one_is_never_remembered() {
        let check = serde_json::from_value::<JwtConfig>(
            serde_json::json!({"secret": "k", "leeway_seconds": 0}),
        )
        .unwrap()
        .compile()
        .unwrap();
        let now = std::time::SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let valid = token(serde_json::json!({"exp": secs + 60}));
        assert!(check_at(&check, &valid, now));
        assert!(check_at(&check, &valid, now), "remembered");
        assert!(
            !check_at(&check, &valid, now + Duration::from_secs(120)),
            "expired although remembered"
        );
        // A token signed with another key is refused, every time.
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": secs + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"not-k"),
        )
        .unwrap();
        assert!(!check_at(&check, &forged, now));
        assert!(!check_at(&check, &forged, now));
        let early = token(serde_json::json!({"exp": secs + 600, "nbf": secs + 300}));
        assert!(!check_at(&check, &early, now));
        assert!(
            !check_at(&check, &early, now),
            "a refused token is not remembered"
        );
    }
}
