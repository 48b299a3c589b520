//! `jwt`: a bearer token signed with a shared secret (HS256/384/512) or a key pair (RS256,
//! ES256, public key in PEM). `none` is never accepted.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{Inbound, VerifyError};
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
}

/// The time claims checked here (`exp` and `nbf` are checked by jsonwebtoken).
#[derive(serde::Deserialize)]
struct TimeClaims {
    #[serde(default)]
    iat: Option<serde_json::Value>,
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
        Ok(JwtCheck { key, validation })
    }
}

impl JwtCheck {
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
            .ok_or(VerifyError::Unauthorized)?;
        let claims = jsonwebtoken::decode::<TimeClaims>(token, &self.key, &self.validation)
            .map_err(|_| VerifyError::Unauthorized)?
            .claims;
        // `iat` in the future (beyond the leeway) means a wrong clock or a forged token.
        if let Some(iat) = claims.iat {
            let now = inbound
                .now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let issued = iat.as_f64().ok_or(VerifyError::Unauthorized)?;
            if issued > now.saturating_add(self.validation.leeway) as f64 {
                return Err(VerifyError::Unauthorized);
            }
        }
        Ok(())
    }
}
