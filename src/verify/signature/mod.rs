//! `hmac`: payload signatures, generic or in a provider's exact scheme (GitHub, Stripe, Shopify,
//! Slack, Standard Webhooks, Twitch, Zoom, Meta, Twilio, PagerDuty, Intercom, Trello, Asana,
//! Linear, Mailgun), each with a rotation window of secrets.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

mod body;
mod header;
mod twilio;

pub use header::{fresh, parse_standard_signatures, parse_stripe_header};
use header::{standard_signatures, stripe_hex};
use twilio::{signed_url, twilio_params, url_port_variants};

use super::{Inbound, VerifyError, Why};
use crate::config::{secret::Secret, ConfigError};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const DEFAULT_TOLERANCE_SECS: u64 = 300;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// A provider's published scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// `Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]` over `<ts>.<body>`.
    Stripe,
    /// `X-Shopify-Hmac-Sha256: <base64>` over the body.
    Shopify,
    /// `X-Slack-Signature: v0=<hex>` over `v0:<ts>:<body>`, `X-Slack-Request-Timestamp`.
    Slack,
    /// `webhook-signature: v1,<base64> ...` over `<id>.<ts>.<body>`, `whsec_` base64 secret.
    StandardWebhooks,
    /// `Twitch-Eventsub-Message-Signature: sha256=<hex>` over `<message id><timestamp><body>`.
    Twitch,
    /// `x-zm-signature: v0=<hex>` over `v0:<x-zm-request-timestamp>:<body>`.
    Zoom,
    /// Meta (Facebook, Instagram, WhatsApp): GitHub's scheme with the app secret.
    Meta,
    /// `X-Twilio-Signature: <base64>`: HMAC-SHA1 over the URL Twilio called and the sorted form
    /// parameters (or, for JSON, over the URL carrying `bodySHA256`).
    Twilio,
    /// PagerDuty v3: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]` (one per active secret),
    /// HMAC-SHA256 over the body.
    Pagerduty,
    /// Intercom: `X-Hub-Signature: sha1=<hex>`, HMAC-SHA1 over the body with the app's client
    /// secret.
    Intercom,
    /// Trello: `X-Trello-Webhook: <base64>`, HMAC-SHA1 over the body followed by the callback URL
    /// exactly as registered, keyed with the application's OAuth secret.
    Trello,
    /// Asana: `X-Hook-Signature: <hex>`, HMAC-SHA256 over the body, keyed with the secret Asana
    /// sent in its `X-Hook-Secret` handshake.
    Asana,
    /// Linear: `Linear-Signature: <hex>`, HMAC-SHA256 over the body, whose `webhookTimestamp`
    /// (milliseconds) must be within the tolerance (default 60 s).
    Linear,
    /// Mailgun: the body's `signature` (JSON) or its `timestamp`, `token` and `signature` form
    /// fields: hex HMAC-SHA256 over timestamp + token, the timestamp within the tolerance
    /// (default 900 s, as Mailgun's SDK).
    Mailgun,
}

const TOLERANCE_ONLY: &str = "`hmac.tolerance_seconds` only applies to stripe, slack, \
     standard_webhooks, twitch, zoom, linear and mailgun";

/// Twitch's replay window: "reject any message older than 10 minutes".
const TWITCH_TOLERANCE_SECS: u64 = 600;
/// Linear's SDK refuses a `webhookTimestamp` more than a minute off.
const LINEAR_TOLERANCE_SECS: u64 = 60;
/// Mailgun's SDK (`SecurityGuard.verify_webhook`) accepts 15 minutes.
const MAILGUN_TOLERANCE_SECS: u64 = 900;
/// The widest `tolerance_seconds` accepted (a day): wider is no replay window at all.
const MAX_TOLERANCE_SECS: u64 = 86_400;

/// `hmac.secret`: one secret, or several while rotating (any of them verifies).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a secret string or a list of secret strings")]
pub enum Secrets {
    One(Secret),
    Many(Vec<Secret>),
}

/// Most secrets one check accepts: every request is tried against each until one matches, so
/// the list is a rotation window, not a keyring.
pub const MAX_SECRETS: usize = 5;

impl Secrets {
    fn into_vec(self) -> Vec<Secret> {
        match self {
            Secrets::One(secret) => vec![secret],
            Secrets::Many(secrets) => secrets,
        }
    }
}

/// The keys a check accepts, as bytes; never shown.
#[derive(Clone)]
pub struct Keys(Vec<Vec<u8>>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} x ***)", self.0.len())
    }
}

impl Keys {
    /// Whether the MAC `expected(key)` of any key equals one of the `received` values.
    fn any_matches(&self, received: &[Vec<u8>], expected: impl Fn(&[u8]) -> Vec<u8>) -> bool {
        !received.is_empty()
            && self.0.iter().any(|key| {
                let expected = expected(key);
                received.iter().any(|r| matches(&expected, r))
            })
    }
}

/// `hmac` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    pub secret: Secrets,
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Accepted clock difference for timestamped schemes (default 300 s).
    #[serde(default)]
    pub tolerance_seconds: Option<u64>,
    /// `twilio`, `trello`: the URL registered with the provider, when the one this server sees
    /// differs (a proxy rewrote the path); the request's query is appended.
    #[serde(default)]
    pub url: Option<String>,
}

/// A validated signature check. Every variant holds the keys of its rotation window.
#[derive(Debug, Clone)]
pub enum SignatureCheck {
    Generic {
        keys: Keys,
        header: String,
        algorithm: Algorithm,
        encoding: Encoding,
    },
    Github {
        keys: Keys,
    },
    Shopify {
        keys: Keys,
    },
    Stripe {
        keys: Keys,
        tolerance: Duration,
    },
    Slack {
        keys: Keys,
        tolerance: Duration,
    },
    StandardWebhooks {
        keys: Keys,
        /// `whpk_` keys: Ed25519 (`v1a`) signatures.
        public_keys: Vec<ed25519_dalek::VerifyingKey>,
        tolerance: Duration,
    },
    Twitch {
        keys: Keys,
        tolerance: Duration,
    },
    Zoom {
        keys: Keys,
        tolerance: Duration,
    },
    Twilio {
        keys: Keys,
        url: Option<String>,
    },
    Pagerduty {
        keys: Keys,
    },
    Trello {
        keys: Keys,
        url: Option<String>,
    },
    Asana {
        keys: Keys,
    },
    Linear {
        keys: Keys,
        tolerance: Duration,
    },
    Mailgun {
        keys: Keys,
        tolerance: Duration,
    },
}

/// Standard Webhooks: "secrets SHOULD be between 24 bytes (192 bits) and 64 bytes".
const MIN_STANDARD_WEBHOOKS_KEY: usize = 24;

/// Decodes a `whsec_` secret the way the reference libraries do: standard or URL-safe
/// alphabet, padded or not.
fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose::GeneralPurposeConfig, DecodePaddingMode};
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    [base64::alphabet::STANDARD, base64::alphabet::URL_SAFE]
        .iter()
        .find_map(|alphabet| {
            base64::engine::GeneralPurpose::new(alphabet, lenient)
                .decode(encoded)
                .ok()
        })
}

impl HmacConfig {
    /// Where the preset's provider puts its delivery id (`"dedup": true` uses it).
    pub fn delivery_id(&self) -> Option<crate::dedup::KeySource> {
        use crate::dedup::KeySource::{Headers, JsonPointer};
        let headers = |names: &[&str]| Headers(names.iter().map(|n| (*n).to_owned()).collect());
        Some(match self.provider? {
            Provider::Github => headers(&["x-github-delivery"]),
            Provider::Stripe => JsonPointer("/id".into()),
            Provider::Shopify => headers(&["x-shopify-event-id"]),
            Provider::Slack => JsonPointer("/event_id".into()),
            Provider::StandardWebhooks => headers(&["webhook-id", "svix-id"]),
            Provider::Twitch => headers(&["twitch-eventsub-message-id"]),
            // The same on each of Twilio's retries of one callback.
            Provider::Twilio => headers(&["i-twilio-idempotency-token"]),
            // The same on PagerDuty's retries.
            Provider::Pagerduty => headers(&["x-webhook-id"]),
            Provider::Intercom => JsonPointer("/id".into()),
            // The action's id: the same on Trello's retries of one action.
            Provider::Trello => JsonPointer("/action/id".into()),
            Provider::Linear => headers(&["linear-delivery"]),
            // Mailgun's event id ("unique within a day", longer than any dedup window).
            Provider::Mailgun => JsonPointer("/event-data/id".into()),
            Provider::Zoom | Provider::Meta | Provider::Asana => return None,
        })
    }

    pub fn compile(self) -> Result<SignatureCheck, ConfigError> {
        let secrets = self.secret.into_vec();
        if secrets.is_empty() || secrets.len() > MAX_SECRETS {
            return Err(ConfigError::Invalid(format!(
                "`hmac.secret` takes one secret or a list of 1 to {MAX_SECRETS} (a rotation window)"
            )));
        }
        if secrets.iter().any(|s| s.expose().trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "`hmac.secret` must not be empty (after {$VAR} substitution)".into(),
            ));
        }
        let raw = || {
            Keys(
                secrets
                    .iter()
                    .map(|s| s.expose().as_bytes().to_vec())
                    .collect(),
            )
        };
        let default_tolerance = match self.provider {
            Some(Provider::Twitch) => TWITCH_TOLERANCE_SECS,
            Some(Provider::Linear) => LINEAR_TOLERANCE_SECS,
            Some(Provider::Mailgun) => MAILGUN_TOLERANCE_SECS,
            _ => DEFAULT_TOLERANCE_SECS,
        };
        if let Some(secs) = self.tolerance_seconds {
            if !(1..=MAX_TOLERANCE_SECS).contains(&secs) {
                return Err(ConfigError::Invalid(format!(
                    "`hmac.tolerance_seconds` is {secs}; it must be between 1 and \
                     {MAX_TOLERANCE_SECS}"
                )));
            }
        }
        let tolerance = Duration::from_secs(self.tolerance_seconds.unwrap_or(default_tolerance));
        if self.url.is_some() && !matches!(self.provider, Some(Provider::Twilio | Provider::Trello))
        {
            return Err(ConfigError::Invalid(
                "`hmac.url` only applies to twilio and trello".into(),
            ));
        }
        let Some(provider) = self.provider else {
            if self.tolerance_seconds.is_some() {
                return Err(ConfigError::Invalid(TOLERANCE_ONLY.into()));
            }
            return Ok(SignatureCheck::Generic {
                keys: raw(),
                header: self.header.unwrap_or_else(|| "X-HMAC-Signature".into()),
                algorithm: self.algorithm.unwrap_or_default(),
                encoding: self.encoding.unwrap_or_default(),
            });
        };
        if self.header.is_some() || self.algorithm.is_some() || self.encoding.is_some() {
            return Err(ConfigError::Invalid(
                "`hmac.provider` fixes header, algorithm and encoding; remove them".into(),
            ));
        }
        let timestamped = matches!(
            provider,
            Provider::Stripe
                | Provider::Slack
                | Provider::StandardWebhooks
                | Provider::Twitch
                | Provider::Zoom
                | Provider::Linear
                | Provider::Mailgun
        );
        if self.tolerance_seconds.is_some() && !timestamped {
            return Err(ConfigError::Invalid(TOLERANCE_ONLY.into()));
        }
        Ok(match provider {
            Provider::Github | Provider::Meta => SignatureCheck::Github { keys: raw() },
            Provider::Twitch => SignatureCheck::Twitch {
                keys: raw(),
                tolerance,
            },
            Provider::Zoom => SignatureCheck::Zoom {
                keys: raw(),
                tolerance,
            },
            Provider::Twilio => SignatureCheck::Twilio {
                keys: raw(),
                url: self.url,
            },
            Provider::Shopify => SignatureCheck::Shopify { keys: raw() },
            Provider::Pagerduty => SignatureCheck::Pagerduty { keys: raw() },
            Provider::Trello => SignatureCheck::Trello {
                keys: raw(),
                url: self.url,
            },
            Provider::Asana => SignatureCheck::Asana { keys: raw() },
            Provider::Linear => SignatureCheck::Linear {
                keys: raw(),
                tolerance,
            },
            Provider::Mailgun => SignatureCheck::Mailgun {
                keys: raw(),
                tolerance,
            },
            Provider::Intercom => SignatureCheck::Generic {
                keys: raw(),
                header: "x-hub-signature".into(),
                algorithm: Algorithm::Sha1,
                encoding: Encoding::Hex,
            },
            Provider::Stripe => SignatureCheck::Stripe {
                keys: raw(),
                tolerance,
            },
            Provider::Slack => SignatureCheck::Slack {
                keys: raw(),
                tolerance,
            },
            Provider::StandardWebhooks => {
                let (mut keys, mut public_keys) = (Vec::new(), Vec::new());
                for secret in &secrets {
                    match secret.expose().trim().strip_prefix("whpk_") {
                        Some(public) => public_keys.push(decode_whpk(public)?),
                        None => keys.push(decode_standard_secret(secret.expose())?),
                    }
                }
                SignatureCheck::StandardWebhooks {
                    keys: Keys(keys),
                    public_keys,
                    tolerance,
                }
            }
        })
    }
}

/// A Standard Webhooks signing key from its `whsec_` secret (the `http` module signs with it).
pub fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, ConfigError> {
    decode_standard_secret(secret)
}

/// A `whsec_` secret: base64 of at least 24 bytes.
fn decode_standard_secret(secret: &str) -> Result<Vec<u8>, ConfigError> {
    let key = decode_whsec(secret).ok_or_else(|| {
        ConfigError::Invalid(
            "`hmac.secret` for standard_webhooks must be `whsec_` + base64 (or `whpk_` + base64 \
             of an Ed25519 public key)"
                .into(),
        )
    })?;
    if key.len() < MIN_STANDARD_WEBHOOKS_KEY {
        return Err(ConfigError::Invalid(format!(
            "`hmac.secret` for standard_webhooks decodes to fewer than \
             {MIN_STANDARD_WEBHOOKS_KEY} bytes (the spec's minimum)"
        )));
    }
    Ok(key)
}

/// A `whpk_` public key: base64 of the 32 bytes of an Ed25519 public key.
fn decode_whpk(encoded: &str) -> Result<ed25519_dalek::VerifyingKey, ConfigError> {
    let invalid = || {
        ConfigError::Invalid(
            "`hmac.secret` `whpk_` must be base64 of a 32-byte Ed25519 public key".into(),
        )
    };
    let bytes: [u8; 32] = decode_whsec(encoded)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(invalid)?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| invalid())
}

fn mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    macro_rules! run {
        ($hash:ty) => {{
            // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
            match Hmac::<$hash>::new_from_slice(key) {
                Ok(mut m) => {
                    for p in parts {
                        m.update(p);
                    }
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }};
    }
    match algorithm {
        Algorithm::Sha1 => run!(Sha1),
        Algorithm::Sha256 => run!(Sha256),
        Algorithm::Sha512 => run!(Sha512),
    }
}

/// Constant-time check of a computed MAC against a received one.
fn matches(expected: &[u8], received: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && expected.len() == received.len() && bool::from(expected.ct_eq(received))
}

fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => hex::decode(text.trim()).ok(),
        Encoding::Base64 => BASE64.decode(text.trim()).ok(),
    }
}

/// `<prefix><hex>` checked against the HMAC-SHA256 of `parts` under any of `keys`.
fn hex_signature(keys: &Keys, value: &str, prefix: &str, parts: &[&[u8]]) -> bool {
    let Some(hex) = value.strip_prefix(prefix) else {
        return false;
    };
    let received: Vec<_> = decode(Encoding::Hex, hex).into_iter().collect();
    keys.any_matches(&received, |key| mac(Algorithm::Sha256, key, parts))
}

/// One MAC in `header` (as `encoding`) over `parts`, keyed with any of `keys`.
fn one_mac(
    inbound: &Inbound<'_>,
    (header, encoding): (&str, Encoding),
    keys: &Keys,
    (algorithm, parts): (Algorithm, &[&[u8]]),
) -> bool {
    let Some(value) = inbound.header(header) else {
        return false;
    };
    let received: Vec<_> = decode(encoding, value).into_iter().collect();
    keys.any_matches(&received, |key| mac(algorithm, key, parts))
}

/// Slack's and Zoom's scheme: `<signature header>: v0=<hex>` over `v0:<timestamp>:<body>`,
/// the timestamp (Unix seconds, in its own header) within `tolerance`.
fn v0_signature(
    inbound: &Inbound<'_>,
    (timestamp_header, signature_header): (&str, &str),
    keys: &Keys,
    tolerance: Duration,
    body: &[u8],
) -> bool {
    let (Some(ts), Some(value)) = (
        inbound.header(timestamp_header),
        inbound.header(signature_header),
    ) else {
        return false;
    };
    let Ok(timestamp) = ts.trim().parse::<i64>() else {
        return false;
    };
    if !fresh(timestamp, inbound.now, tolerance) {
        return false;
    }
    hex_signature(
        keys,
        value,
        "v0=",
        &[b"v0:", ts.trim().as_bytes(), b":", body],
    )
}

impl SignatureCheck {
    /// The handshake a preset implies (Slack, Zoom and Twitch verify a URL in the body).
    pub fn implied_handshake(&self) -> Option<super::handshake::Handshake> {
        use super::handshake::Handshake;
        match self {
            SignatureCheck::Slack { .. } => Some(Handshake::Slack),
            SignatureCheck::Zoom { .. } => Some(Handshake::Zoom),
            SignatureCheck::StandardWebhooks { .. } => Some(Handshake::StandardWebhooks),
            SignatureCheck::Twitch { .. } => Some(Handshake::Twitch),
            SignatureCheck::Trello { .. } => Some(Handshake::Trello),
            SignatureCheck::Asana { .. } => Some(Handshake::Asana),
            _ => None,
        }
    }

    /// The request headers this check reads its signature from (compile time only).
    pub fn headers(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            SignatureCheck::Generic { header, .. } => return vec![header.clone()],
            SignatureCheck::Github { .. } => &["x-hub-signature-256", "x-hub-signature"],
            SignatureCheck::Shopify { .. } => &["x-shopify-hmac-sha256"],
            SignatureCheck::Stripe { .. } => &["stripe-signature"],
            SignatureCheck::Slack { .. } => &["x-slack-signature"],
            SignatureCheck::StandardWebhooks { .. } => &["webhook-signature", "svix-signature"],
            SignatureCheck::Twitch { .. } => &["twitch-eventsub-message-signature"],
            SignatureCheck::Zoom { .. } => &["x-zm-signature"],
            SignatureCheck::Twilio { .. } => &["x-twilio-signature"],
            SignatureCheck::Pagerduty { .. } => &["x-pagerduty-signature"],
            SignatureCheck::Trello { .. } => &["x-trello-webhook"],
            SignatureCheck::Asana { .. } => &["x-hook-signature", "x-hook-secret"],
            SignatureCheck::Linear { .. } => &["linear-signature"],
            // In the body.
            SignatureCheck::Mailgun { .. } => &[],
        };
        fixed.iter().map(|h| (*h).to_owned()).collect()
    }

    /// The key of the rotation window that signed this request (a handshake whose answer is
    /// keyed answers with the secret the provider uses now). Verifies again with each key
    /// alone: for handshakes only, never for ordinary deliveries.
    pub fn signer(&self, inbound: &Inbound<'_>, body: &[u8]) -> Option<Vec<u8>> {
        let mut alone = self.clone();
        let keys = std::mem::take(&mut alone.keys_mut().0);
        keys.into_iter().find(|key| {
            *alone.keys_mut() = Keys(vec![key.clone()]);
            alone.verify(inbound, body)
        })
    }

    fn keys_mut(&mut self) -> &mut Keys {
        match self {
            SignatureCheck::Generic { keys, .. }
            | SignatureCheck::Github { keys }
            | SignatureCheck::Shopify { keys }
            | SignatureCheck::Stripe { keys, .. }
            | SignatureCheck::Slack { keys, .. }
            | SignatureCheck::StandardWebhooks { keys, .. }
            | SignatureCheck::Twitch { keys, .. }
            | SignatureCheck::Zoom { keys, .. }
            | SignatureCheck::Twilio { keys, .. }
            | SignatureCheck::Pagerduty { keys }
            | SignatureCheck::Trello { keys, .. }
            | SignatureCheck::Asana { keys }
            | SignatureCheck::Linear { keys, .. }
            | SignatureCheck::Mailgun { keys, .. } => keys,
        }
    }

    /// Verifies the signature over `body`. Every failure is the same `Unauthorized` to the
    /// sender; its cause is kept for the log.
    pub fn check(&self, inbound: &Inbound<'_>, body: &[u8]) -> Result<(), VerifyError> {
        if self.verify(inbound, body) {
            Ok(())
        } else {
            Err(VerifyError::Unauthorized(self.why_refused(inbound, body)))
        }
    }

    /// Why a request that did not verify was refused: a header the scheme needs is absent, its
    /// timestamp is out of tolerance (or unreadable), or else the signature is wrong. Worked out
    /// only after a refusal, so that verifying stays one pass.
    fn why_refused(&self, inbound: &Inbound<'_>, body: &[u8]) -> Why {
        let standard_brand = if inbound.header("webhook-id").is_some() {
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        } else {
            ["svix-id", "svix-timestamp", "svix-signature"]
        };
        let generic = match self {
            SignatureCheck::Generic { header, .. } => [header.as_str()],
            _ => [""],
        };
        let needed: &[&str] = match self {
            SignatureCheck::Generic { .. } => &generic,
            SignatureCheck::Github { .. } => &["x-hub-signature-256"],
            SignatureCheck::Shopify { .. } => &["x-shopify-hmac-sha256"],
            SignatureCheck::Stripe { .. } => &["stripe-signature"],
            SignatureCheck::Slack { .. } => &["x-slack-request-timestamp", "x-slack-signature"],
            SignatureCheck::Zoom { .. } => &["x-zm-request-timestamp", "x-zm-signature"],
            SignatureCheck::Twitch { .. } => &[
                "twitch-eventsub-message-id",
                "twitch-eventsub-message-timestamp",
                "twitch-eventsub-message-signature",
            ],
            SignatureCheck::Twilio { .. } => &["x-twilio-signature"],
            SignatureCheck::Pagerduty { .. } => &["x-pagerduty-signature"],
            SignatureCheck::Trello { .. } => &["x-trello-webhook"],
            SignatureCheck::Asana { .. } => &["x-hook-signature"],
            SignatureCheck::Linear { .. } => &["linear-signature"],
            SignatureCheck::Mailgun { .. } => &[],
            SignatureCheck::StandardWebhooks { .. } => &standard_brand,
        };
        if needed.iter().any(|name| inbound.header(name).is_none()) {
            return Why::MissingHeader;
        }
        let seconds = |name: &str| inbound.header(name)?.trim().parse::<i64>().ok();
        let (timestamp, tolerance) = match self {
            SignatureCheck::Stripe { tolerance, .. } => (
                inbound
                    .header("stripe-signature")
                    .and_then(parse_stripe_header)
                    .map(|(t, _)| t),
                tolerance,
            ),
            SignatureCheck::Slack { tolerance, .. } => {
                (seconds("x-slack-request-timestamp"), tolerance)
            }
            SignatureCheck::Zoom { tolerance, .. } => {
                (seconds("x-zm-request-timestamp"), tolerance)
            }
            SignatureCheck::StandardWebhooks { tolerance, .. } => {
                (seconds(standard_brand[1]), tolerance)
            }
            SignatureCheck::Twitch { tolerance, .. } => (
                inbound
                    .header("twitch-eventsub-message-timestamp")
                    .and_then(|ts| humantime::parse_rfc3339_weak(ts.trim()).ok())
                    .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_secs()).ok()),
                tolerance,
            ),
            SignatureCheck::Linear { tolerance, .. } => {
                return match body::linear_timestamp(body) {
                    Some(ms) if body::fresh_ms(ms, inbound.now, *tolerance) => Why::BadSignature,
                    _ => Why::TimestampOutOfTolerance,
                }
            }
            SignatureCheck::Mailgun { tolerance, .. } => match body::mailgun_signature(body) {
                None => return Why::MissingSignature,
                Some(signed) => (signed.timestamp.trim().parse::<i64>().ok(), tolerance),
            },
            _ => return Why::BadSignature,
        };
        match timestamp {
            Some(timestamp) if fresh(timestamp, inbound.now, *tolerance) => Why::BadSignature,
            _ => Why::TimestampOutOfTolerance,
        }
    }

    fn verify(&self, inbound: &Inbound<'_>, body: &[u8]) -> bool {
        match self {
            SignatureCheck::Generic {
                keys,
                header,
                algorithm,
                encoding,
            } => {
                let Some(value) = inbound.header(header) else {
                    return false;
                };
                // Accept both `<digest>` and `sha256=<digest>`.
                let value = match value.split_once('=') {
                    Some((prefix, rest))
                        if matches!(
                            prefix.to_ascii_lowercase().as_str(),
                            "sha1" | "sha256" | "sha512"
                        ) =>
                    {
                        rest
                    }
                    _ => value,
                };
                let received: Vec<_> = decode(*encoding, value).into_iter().collect();
                keys.any_matches(&received, |key| mac(*algorithm, key, &[body]))
            }
            SignatureCheck::Github { keys } => inbound
                .header("x-hub-signature-256")
                .is_some_and(|value| hex_signature(keys, value, "sha256=", &[body])),
            SignatureCheck::Shopify { keys } => one_mac(
                inbound,
                ("x-shopify-hmac-sha256", Encoding::Base64),
                keys,
                (Algorithm::Sha256, &[body]),
            ),
            SignatureCheck::Stripe { keys, tolerance } => {
                let Some((timestamp, signatures)) = inbound
                    .header("stripe-signature")
                    .and_then(parse_stripe_header)
                else {
                    return false;
                };
                if !fresh(timestamp, inbound.now, *tolerance) {
                    return false;
                }
                let ts = timestamp.to_string();
                let received: Vec<_> = signatures
                    .iter()
                    .filter_map(|sig| stripe_hex(sig))
                    .collect();
                keys.any_matches(&received, |key| {
                    mac(Algorithm::Sha256, key, &[ts.as_bytes(), b".", body])
                })
            }
            SignatureCheck::Slack { keys, tolerance } => v0_signature(
                inbound,
                ("x-slack-request-timestamp", "x-slack-signature"),
                keys,
                *tolerance,
                body,
            ),
            SignatureCheck::Zoom { keys, tolerance } => v0_signature(
                inbound,
                ("x-zm-request-timestamp", "x-zm-signature"),
                keys,
                *tolerance,
                body,
            ),
            SignatureCheck::Twitch { keys, tolerance } => {
                let (Some(id), Some(ts), Some(value)) = (
                    inbound.header("twitch-eventsub-message-id"),
                    inbound.header("twitch-eventsub-message-timestamp"),
                    inbound.header("twitch-eventsub-message-signature"),
                ) else {
                    return false;
                };
                let Ok(at) = humantime::parse_rfc3339_weak(ts.trim()) else {
                    return false;
                };
                let secs = at
                    .duration_since(UNIX_EPOCH)
                    .map_or(i64::MIN, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                if !fresh(secs, inbound.now, *tolerance) {
                    return false;
                }
                hex_signature(
                    keys,
                    value,
                    "sha256=",
                    &[id.as_bytes(), ts.as_bytes(), body],
                )
            }
            SignatureCheck::Pagerduty { keys } => {
                let Some(value) = inbound.header("x-pagerduty-signature") else {
                    return false;
                };
                let received: Vec<_> = value
                    .split(',')
                    .filter_map(|part| part.trim().strip_prefix("v1="))
                    .filter_map(|hex| decode(Encoding::Hex, hex))
                    .collect();
                keys.any_matches(&received, |key| mac(Algorithm::Sha256, key, &[body]))
            }
            SignatureCheck::Trello { keys, url } => {
                let Some(callback) = signed_url(url.as_deref(), (inbound.url)().as_deref()) else {
                    return false;
                };
                one_mac(
                    inbound,
                    ("x-trello-webhook", Encoding::Base64),
                    keys,
                    (Algorithm::Sha1, &[body, callback.as_bytes()]),
                )
            }
            SignatureCheck::Asana { keys } => one_mac(
                inbound,
                ("x-hook-signature", Encoding::Hex),
                keys,
                (Algorithm::Sha256, &[body]),
            ),
            // The signature first, as Linear's SDK: an unsigned body is never parsed.
            SignatureCheck::Linear { keys, tolerance } => {
                one_mac(
                    inbound,
                    ("linear-signature", Encoding::Hex),
                    keys,
                    (Algorithm::Sha256, &[body]),
                ) && body::linear_timestamp(body)
                    .is_some_and(|ms| body::fresh_ms(ms, inbound.now, *tolerance))
            }
            SignatureCheck::Mailgun { keys, tolerance } => {
                let Some(signed) = body::mailgun_signature(body) else {
                    return false;
                };
                let Ok(timestamp) = signed.timestamp.trim().parse::<i64>() else {
                    return false;
                };
                if !fresh(timestamp, inbound.now, *tolerance) {
                    return false;
                }
                let received: Vec<_> = decode(Encoding::Hex, &signed.signature)
                    .into_iter()
                    .collect();
                keys.any_matches(&received, |key| {
                    mac(
                        Algorithm::Sha256,
                        key,
                        &[signed.timestamp.as_bytes(), signed.token.as_bytes()],
                    )
                })
            }
            SignatureCheck::Twilio { keys, url } => {
                let Some(value) = inbound.header("x-twilio-signature") else {
                    return false;
                };
                let Some(called) = signed_url(url.as_deref(), (inbound.url)().as_deref()) else {
                    return false;
                };
                let received: Vec<_> = decode(Encoding::Base64, value).into_iter().collect();
                let Some(params) = twilio_params(&called, body) else {
                    return false;
                };
                url_port_variants(&called).iter().any(|candidate| {
                    keys.any_matches(&received, |key| {
                        mac(
                            Algorithm::Sha1,
                            key,
                            &[candidate.as_bytes(), params.as_bytes()],
                        )
                    })
                })
            }
            SignatureCheck::StandardWebhooks {
                keys,
                public_keys,
                tolerance,
            } => {
                // Svix's libraries send (and accept) the same scheme under `svix-*` names; one
                // request uses one brand.
                let brand = if inbound.header("webhook-id").is_some() {
                    ["webhook-id", "webhook-timestamp", "webhook-signature"]
                } else {
                    ["svix-id", "svix-timestamp", "svix-signature"]
                };
                let (Some(id), Some(ts), Some(value)) = (
                    inbound.header(brand[0]),
                    inbound.header(brand[1]),
                    inbound.header(brand[2]),
                ) else {
                    return false;
                };
                let Ok(timestamp) = ts.trim().parse::<i64>() else {
                    return false;
                };
                if !fresh(timestamp, inbound.now, *tolerance) {
                    return false;
                }
                let signed = [id.as_bytes(), b".", ts.trim().as_bytes(), b".", body];
                let received: Vec<_> = standard_signatures(value, "v1")
                    .iter()
                    .filter_map(|sig| decode(Encoding::Base64, sig))
                    .collect();
                if keys.any_matches(&received, |key| mac(Algorithm::Sha256, key, &signed)) {
                    return true;
                }
                if public_keys.is_empty() {
                    return false;
                }
                let message = signed.concat();
                standard_signatures(value, "v1a")
                    .iter()
                    .filter_map(|sig| decode(Encoding::Base64, sig))
                    .filter_map(|sig| ed25519_dalek::Signature::from_slice(&sig).ok())
                    .any(|sig| {
                        public_keys
                            .iter()
                            .any(|key| key.verify_strict(&message, &sig).is_ok())
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn inbound<'a>(headers: &'a dyn Fn(&str) -> Option<&'a str>, now: SystemTime) -> Inbound<'a> {
        Inbound {
            headers,
            query: None,
            client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            now,
            url: &|| None,
        }
    }

    fn check(config: serde_json::Value) -> SignatureCheck {
        serde_json::from_value::<HmacConfig>(config)
            .unwrap()
            .compile()
            .unwrap()
    }

    #[test]
    fn github_published_example() {
        // docs.github.com, "Validating webhook deliveries".
        let c = check(
            serde_json::json!({"provider": "github", "secret": "It's a Secret to Everybody"}),
        );
        let headers = |name: &str| {
            (name == "x-hub-signature-256").then_some(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            )
        };
        assert!(c
            .check(&inbound(&headers, SystemTime::now()), b"Hello, World!")
            .is_ok());
        assert!(c
            .check(&inbound(&headers, SystemTime::now()), b"Hello, World")
            .is_err());
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn slack_published_example() {
        // api.slack.com "Verifying requests from Slack" (as in slackapi/python-slack-sdk tests).
        let c = check(
            serde_json::json!({"provider": "slack", "secret": "8f742231b10e8888abcd99yyyzzz85a5"}),
        );
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let headers = |name: &str| match name {
            "x-slack-request-timestamp" => Some("1531420618"),
            "x-slack-signature" => {
                Some("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")
            }
            _ => None,
        };
        assert!(c
            .check(&inbound(&headers, at(1_531_420_618 + 60)), body)
            .is_ok());
        assert!(
            c.check(&inbound(&headers, at(1_531_420_618 + 301)), body)
                .is_err(),
            "replay"
        );
    }

    #[test]
    fn standard_webhooks_published_example() {
        // standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts.
        let c = check(serde_json::json!({"provider": "standard_webhooks",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}));
        let headers = |name: &str| match name {
            "webhook-id" => Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            "webhook-timestamp" => Some("1614265330"),
            "webhook-signature" => Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            _ => None,
        };
        let body = br#"{"test": 2432232314}"#;
        assert!(c.check(&inbound(&headers, at(1_614_265_330)), body).is_ok());
        assert!(c
            .check(&inbound(&headers, at(1_614_265_330)), b"{}")
            .is_err());
    }

    #[test]
    fn shopify_published_example() {
        // Shopify/shopify-api-js, lib/webhooks/__tests__/validate.test.ts.
        let c = check(serde_json::json!({"provider": "shopify", "secret": "test_secret_key"}));
        let headers = |name: &str| {
            (name == "x-shopify-hmac-sha256")
                .then_some("B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=")
        };
        assert!(c
            .check(&inbound(&headers, SystemTime::now()), br#"{"foo": "bar"}"#)
            .is_ok());
        assert!(c
            .check(&inbound(&headers, SystemTime::now()), br#"{"foo":"bar"}"#)
            .is_err());
    }

    #[test]
    fn stripe_published_example() {
        // stripe/stripe-dotnet, EventUtilityTest + event_test_signature.json.
        let c = check(serde_json::json!({"provider": "stripe", "secret": "webhook_secret"}));
        let body = "{\n  \"id\": \"evt_123\",\n  \"object\": \"event\",\n  \"account\": \"acct_123\",\n  \"api_version\": \"2017-05-25\",\n  \"created\": 1533204620,\n  \"data\": {\n    \"object\": {\n      \"id\": \"cus_123\",\n      \"object\": \"customer\",\n      \"created\": 123456789,\n      \"email\": \"test@stripe.com\",\n      \"livemode\": false,\n      \"metadata\": {}\n    }\n  },\n  \"livemode\": false,\n  \"pending_webhooks\": 1,\n  \"request\": {\n    \"id\": \"req_123\",\n    \"idempotency_key\": \"idempotency-key-123\"\n  },\n  \"type\": \"customer.created\"\n}\n";
        let headers = |name: &str| {
            (name == "stripe-signature").then_some("t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef")
        };
        assert!(c
            .check(&inbound(&headers, at(1_533_204_620)), body.as_bytes())
            .is_ok());
        assert!(c
            .check(&inbound(&headers, at(1_533_204_620 + 301)), body.as_bytes())
            .is_err());
    }

    /// The vectors below were made with the providers' documented constructions and checked
    /// with their verifiers (Trello's documented Node function, Asana's example server,
    /// `@linear/sdk` 98.0.0 `LinearWebhookClient.verify`, `mailgun` 1.10.0
    /// `SecurityGuard.verify_webhook`).
    #[test]
    fn trello_signs_the_body_and_the_callback_url() {
        let c = check(serde_json::json!({"provider": "trello", "secret": "secret",
            "url": "https://example.com/webhooks"}));
        let headers =
            |name: &str| (name == "x-trello-webhook").then_some("FwPAcuGe9EP/+SbXFWjnEVTa0zw=");
        let called = || Some("http://internal:8080/webhook/acme/trello".to_owned());
        let request = Inbound {
            url: &called,
            ..inbound(&headers, SystemTime::now())
        };
        assert!(c.check(&request, br#"{"hello":"world"}"#).is_ok());
        assert!(c.check(&request, br#"{"hello":"World"}"#).is_err());
        // Without `url`, the URL this server was called at is the one signed.
        let c = check(serde_json::json!({"provider": "trello", "secret": "secret"}));
        let called = || Some("https://example.com/webhooks".to_owned());
        let request = Inbound {
            url: &called,
            ..inbound(&headers, SystemTime::now())
        };
        assert!(c.check(&request, br#"{"hello":"world"}"#).is_ok());
    }

    #[test]
    fn asana_and_linear_sign_the_body_in_hex() {
        const SIG: &str = "2677ad3e7c090b2fa2c0fb13020d66d5420879b8316eb356a2d60fb9073bc778";
        let c = check(serde_json::json!({"provider": "asana", "secret": "secret"}));
        let headers = |name: &str| (name == "x-hook-signature").then_some(SIG);
        let now = SystemTime::now();
        assert!(c
            .check(&inbound(&headers, now), br#"{"hello":"world"}"#)
            .is_ok());
        assert!(c
            .check(&inbound(&headers, now), br#"{"hello":"wOrld"}"#)
            .is_err());

        let c = check(serde_json::json!({"provider": "linear", "secret": "secret"}));
        let at_ms = 1_700_000_000_000u64;
        let body = format!(r#"{{"type":"Issue","webhookTimestamp":{at_ms}}}"#);
        let sig = hex::encode(mac(Algorithm::Sha256, b"secret", &[body.as_bytes()]));
        let headers = |name: &str| (name == "linear-signature").then_some(sig.as_str());
        let when = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        for (now, ok, why) in [
            (at_ms + 59_000, true, None),
            (at_ms - 59_000, true, None),
            (at_ms + 61_000, false, Some(Why::TimestampOutOfTolerance)),
            (at_ms - 61_000, false, Some(Why::TimestampOutOfTolerance)),
        ] {
            let result = c.check(&inbound(&headers, when(now)), body.as_bytes());
            assert_eq!(result.is_ok(), ok, "at {now}");
            if let Some(why) = why {
                assert_eq!(result, Err(VerifyError::Unauthorized(why)));
            }
        }
        let tampered = body.replace("Issue", "Issuf");
        assert_eq!(
            c.check(&inbound(&headers, when(at_ms)), tampered.as_bytes()),
            Err(VerifyError::Unauthorized(Why::BadSignature))
        );
        let none = |_: &str| None;
        assert_eq!(
            c.check(&inbound(&none, when(at_ms)), body.as_bytes()),
            Err(VerifyError::Unauthorized(Why::MissingHeader))
        );
    }

    #[test]
    fn mailgun_signs_timestamp_and_token_in_the_body() {
        const SIG: &str = "034f80794eb775260bdd55684adc5dd7e94045a10ad8ba1e5c65df9d037d0790";
        let c = check(serde_json::json!({"provider": "mailgun", "secret": "key"}));
        let none = |_: &str| None;
        let json = format!(
            r#"{{"signature":{{"timestamp":"1700000000","token":"tok","signature":"{SIG}"}},"event-data":{{"event":"delivered"}}}}"#
        );
        let form = format!("event=delivered&timestamp=1700000000&token=tok&signature={SIG}");
        for body in [&json, &form] {
            assert!(c
                .check(&inbound(&none, at(1_700_000_000 + 899)), body.as_bytes())
                .is_ok());
            assert_eq!(
                c.check(&inbound(&none, at(1_700_000_000 + 901)), body.as_bytes()),
                Err(VerifyError::Unauthorized(Why::TimestampOutOfTolerance))
            );
            let wrong = body.replace("\"tok\"", "\"tak\"").replace("=tok&", "=tak&");
            assert_eq!(
                c.check(&inbound(&none, at(1_700_000_000)), wrong.as_bytes()),
                Err(VerifyError::Unauthorized(Why::BadSignature))
            );
        }
        assert_eq!(
            c.check(&inbound(&none, at(1_700_000_000)), br#"{"event-data":{}}"#),
            Err(VerifyError::Unauthorized(Why::MissingSignature))
        );
    }

    #[test]
    fn stripe_header_parsing() {
        assert_eq!(
            parse_stripe_header("t=12,v1=ab,v0=cd,v1=ef"),
            Some((12, vec!["ab", "ef"]))
        );
        assert_eq!(parse_stripe_header("v1=ab"), None);
        assert_eq!(parse_stripe_header("t=x,v1=ab"), None);
        assert_eq!(parse_stripe_header("t=1,junk"), Some((1, vec![])));
        assert_eq!(parse_stripe_header("t,t=1"), None);
        assert_eq!(parse_stripe_header("t=1,v1"), None);
        assert_eq!(parse_stripe_header("t=1,t=2,v1=a=b"), Some((1, vec!["a"])));
        assert_eq!(parse_stripe_header(" t=1"), None);
        assert_eq!(parse_stripe_header("t= +1_000 "), Some((1000, vec![])));
        assert_eq!(parse_stripe_header("t=1__0"), None);
        assert_eq!(parse_stripe_header("t=1"), Some((1, vec![])));
    }

    #[test]
    fn standard_signature_parsing() {
        assert_eq!(
            parse_standard_signatures("v1,abc= v1a,zzz v2,q v1,def"),
            vec!["abc=", "def"]
        );
        assert!(parse_standard_signatures("").is_empty());
    }

    #[test]
    fn twilio_urls_are_tried_with_and_without_the_default_port() {
        assert_eq!(
            url_port_variants("https://a.example/x?y=1"),
            ["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_port_variants("https://a.example:443/x"),
            ["https://a.example/x", "https://a.example:443/x"]
        );
        assert_eq!(url_port_variants("http://a:8080/x"), ["http://a:8080/x"]);
        assert_eq!(
            url_port_variants("http://[2001:db8::1]/x"),
            ["http://[2001:db8::1]/x", "http://[2001:db8::1]:80/x"]
        );
        assert_eq!(
            signed_url(Some("https://api.example/t"), Some("http://h/w?a=1")).as_deref(),
            Some("https://api.example/t?a=1")
        );
    }

    #[test]
    fn provider_configs_refuse_generic_fields() {
        for (bad, reason) in [
            (
                serde_json::json!({"provider": "github", "secret": "s", "encoding": "hex"}),
                "fixes header, algorithm and encoding",
            ),
            (
                serde_json::json!({"provider": "github", "secret": "s", "tolerance_seconds": 5}),
                "only applies to stripe, slack, standard_webhooks, twitch, zoom, linear and mailgun",
            ),
            (serde_json::json!({"secret": ""}), "must not be empty"),
            (
                serde_json::json!({"secret": "s", "url": "https://example.com/t"}),
                "only applies to twilio and trello",
            ),
            (
                serde_json::json!({"provider": "github", "secret": "s", "url": "https://x/t"}),
                "only applies to twilio and trello",
            ),
        ] {
            let err = serde_json::from_value::<HmacConfig>(bad.clone())
                .unwrap()
                .compile()
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn weak_standard_webhooks_secrets_are_refused() {
        for (weak, reason) in [
            ("whsec_", "decodes to fewer than 24 bytes"),
            ("whsec_c2VjcmV0", "decodes to fewer than 24 bytes"),
            ("", "must not be empty"),
            ("   ", "must not be empty"),
        ] {
            let c = serde_json::from_value::<HmacConfig>(
                serde_json::json!({"provider": "standard_webhooks", "secret": weak}),
            )
            .unwrap();
            let err = c.compile().unwrap_err().to_string();
            assert!(err.contains(reason), "{weak:?}: {err}");
        }
    }

    #[test]
    fn whsec_secrets_decode_padded_unpadded_and_url_safe() {
        let key: Vec<u8> = (0u8..32)
            .map(|b| b.wrapping_mul(37).wrapping_add(250))
            .collect();
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let secret = format!("whsec_{}", engine.encode(&key));
            assert_eq!(decode_whsec(&secret).as_deref(), Some(&key[..]), "{secret}");
        }
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let now = SystemTime::now();
        let tolerance = Duration::from_secs(300);
        assert!(!fresh(i64::MIN, now, tolerance));
        assert!(!fresh(i64::MAX, now, tolerance));
        assert!(!fresh(i64::MIN, UNIX_EPOCH, tolerance));
    }

    proptest! {
        #[test]
        fn freshness_never_panics(timestamp in any::<i64>(), now_secs in any::<u64>()) {
            let now = UNIX_EPOCH.checked_add(Duration::from_secs(now_secs)).unwrap_or(UNIX_EPOCH);
            let _ = fresh(timestamp, now, Duration::from_secs(300));
        }

        #[test]
        fn timestamped_schemes_survive_any_timestamp_header(timestamp in any::<i64>()) {
            let ts = timestamp.to_string();
            let stripe = format!("t={ts},v1=00");
            let headers = |name: &str| match name {
                "stripe-signature" => Some(stripe.as_str()),
                "x-slack-request-timestamp" | "webhook-timestamp" => Some(ts.as_str()),
                "x-slack-signature" => Some("v0=00"),
                "webhook-id" => Some("msg_1"),
                "webhook-signature" => Some("v1,AA=="),
                _ => None,
            };
            for provider in ["stripe", "slack", "standard_webhooks"] {
                let c = check(serde_json::json!({"provider": provider,
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}));
                let body: &[u8] = b"{}";
                prop_assert!(c.check(&inbound(&headers, SystemTime::now()), body).is_err());
            }
        }

        #[test]
        fn header_parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_stripe_header(&s);
            let _ = parse_standard_signatures(&s);
        }

        #[test]
        fn every_scheme_refuses_arbitrary_headers_without_panicking(
            value in "\\PC{0,200}", body in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            let now = SystemTime::now();
            let headers = |_: &str| Some(value.as_str());
            for provider in ["github", "stripe", "shopify", "slack", "standard_webhooks",
                             "twitch", "zoom", "twilio", "pagerduty", "intercom", "trello",
                             "asana", "linear", "mailgun"] {
                let c = check(serde_json::json!({"provider": provider,
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}));
                prop_assert!(c.check(&inbound(&headers, now), &body).is_err());
            }
            let c = check(serde_json::json!({"secret": "s", "encoding": "base64"}));
            prop_assert!(c.check(&inbound(&headers, now), &body).is_err());
        }
    }
}
