//! Handshakes: a provider proving that a URL is willing to receive its events, answered before
//! any destination is touched and never handed to modules.
//!
//! Some are implied by a signature preset. Signed ones in the body: Slack `url_verification`,
//! Zoom `endpoint.url_validation`, Twitch `webhook_callback_verification`; Standard Webhooks'
//! `webhook-challenge` header. Unsigned ones: Trello's `HEAD`, Asana's `X-Hook-Secret`. The
//! others are chosen with `"handshake": {"provider": ...}`: Meta, X (`crc_token`), Microsoft
//! Graph (`validationToken`), Okta, Dropbox, WebSub, Strava and Asana (before its secret is
//! known).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Inbound, VerifyError, Why};
use crate::config::secret::Secret;

/// Longest challenge echoed back; a longer one is refused (an echo is not a free reflector).
const MAX_CHALLENGE: usize = 2048;
/// Longest X `crc_token` answered (X sends about 48 characters).
const MAX_CRC_TOKEN: usize = 256;

/// `handshake` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum HandshakeConfig {
    /// `GET ?hub.mode=subscribe&hub.challenge=..&hub.verify_token=..` -> the challenge.
    Meta { verify_token: Secret },
    /// `GET ?crc_token=..` -> `{"response_token": "sha256=" + base64(HMAC-SHA256)}`.
    X { consumer_secret: Secret },
    /// `POST ?validationToken=..` -> the decoded token; with `client_state`, every
    /// notification's `value[].clientState` must equal it.
    Msgraph {
        #[serde(default)]
        client_state: Option<Secret>,
    },
    // The variants without fields are written `{}` so that `deny_unknown_fields` reaches them
    // (serde lets a unit variant of a tagged enum ignore every other field).
    /// `GET` with `X-Okta-Verification-Challenge` -> `{"verification": ..}`.
    Okta {},
    /// `GET ?challenge=..` -> the challenge.
    Dropbox {},
    /// `GET ?hub.mode=subscribe|unsubscribe&hub.topic=..&hub.challenge=..` -> the challenge,
    /// for the subscribed topic only (another gets 404, as the W3C spec asks).
    Websub { topic: String },
    /// `GET ?hub.mode=subscribe&hub.challenge=..&hub.verify_token=..` ->
    /// `{"hub.challenge": ..}`.
    Strava { verify_token: Secret },
    /// `POST` with `X-Hook-Secret` -> the same header back; the secret is logged for the
    /// operator to put into `hmac` (sealed when `SEAL_KEYS_FILE` is set).
    Asana {},
}

/// A handshake this webhook answers.
#[derive(Debug, Clone)]
pub enum Handshake {
    Meta {
        verify_token: Secret,
    },
    X {
        consumer_secret: Secret,
    },
    Msgraph {
        client_state: Option<Secret>,
    },
    Okta,
    Dropbox,
    Websub {
        topic: String,
    },
    Strava {
        verify_token: Secret,
    },
    /// Chosen, or implied by the `asana` preset.
    Asana,
    /// Implied by the `trello` preset: `HEAD` answers 200.
    Trello,
    /// Implied by the `slack` preset.
    Slack,
    /// Implied by the `zoom` preset; the secret that signed the request answers.
    Zoom,
    /// Implied by the `twitch` preset.
    Twitch,
    /// Implied by the `standard_webhooks` preset: endpoint verification, a `webhook-challenge`
    /// header answered in `webhook-challenge-response` with a key derived from the secret that
    /// signed the request.
    StandardWebhooks,
}

/// What the handshake answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200, `text/plain`.
    Text(String),
    /// 200, `application/json`.
    Json(String),
    /// 204 with this response header.
    Header(&'static str, String),
    /// Asana's secret: 204 with it in `X-Hook-Secret`, and logged for the operator.
    HookSecret(Secret),
}

/// A handshake answered: the provider (for the log) and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub provider: &'static str,
    pub answer: Answer,
}

impl HandshakeConfig {
    pub fn compile(self) -> Result<Handshake, crate::config::ConfigError> {
        let empty = |field: &str| {
            crate::config::ConfigError::Invalid(format!(
                "`handshake.{field}` must not be empty (after {{$VAR}} substitution)"
            ))
        };
        let filled = |value: &str, field: &str| {
            if value.trim().is_empty() {
                Err(empty(field))
            } else {
                Ok(())
            }
        };
        Ok(match self {
            HandshakeConfig::Meta { verify_token } => {
                filled(verify_token.expose(), "verify_token")?;
                Handshake::Meta { verify_token }
            }
            HandshakeConfig::X { consumer_secret } => {
                filled(consumer_secret.expose(), "consumer_secret")?;
                Handshake::X { consumer_secret }
            }
            HandshakeConfig::Msgraph { client_state } => {
                if client_state
                    .as_ref()
                    .is_some_and(|s| s.expose().trim().is_empty())
                {
                    return Err(empty("client_state"));
                }
                Handshake::Msgraph { client_state }
            }
            HandshakeConfig::Okta {} => Handshake::Okta,
            HandshakeConfig::Dropbox {} => Handshake::Dropbox,
            HandshakeConfig::Websub { topic } => {
                filled(&topic, "topic")?;
                Handshake::Websub { topic }
            }
            HandshakeConfig::Strava { verify_token } => {
                filled(verify_token.expose(), "verify_token")?;
                Handshake::Strava { verify_token }
            }
            HandshakeConfig::Asana {} => Handshake::Asana,
        })
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

/// A challenge as sent, if it is short enough to echo.
fn echoable(challenge: String) -> Result<String, VerifyError> {
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE {
        return Err(VerifyError::Unauthorized(Why::HandshakeTokenMismatch));
    }
    Ok(challenge)
}

fn json(value: serde_json::Value) -> Answer {
    Answer::Json(value.to_string())
}

/// The `hub.challenge` of a subscription request whose `hub.verify_token` is right (Meta,
/// Strava).
fn hub_challenge(inbound: &Inbound<'_>, verify_token: &Secret) -> Result<String, VerifyError> {
    let param = |name| query_param(inbound.query, name);
    let token = param("hub.verify_token").unwrap_or_default();
    let right = super::ct::eq(token.as_bytes(), verify_token.expose().as_bytes());
    if param("hub.mode").as_deref() != Some("subscribe") || !right {
        return Err(VerifyError::Unauthorized(Why::HandshakeTokenMismatch));
    }
    echoable(param("hub.challenge").unwrap_or_default())
}

/// W3C WebSub (section 5.3): a hub verifies the intent to subscribe or unsubscribe by sending
/// a challenge, echoed only for the subscribed topic ("if the subscriber does not agree with
/// the action, the subscriber MUST respond with a 404"). A denial (section 5.2) is
/// acknowledged and logged.
fn websub_intent(inbound: &Inbound<'_>, topic: &str) -> Result<Answer, VerifyError> {
    let param = |name| query_param(inbound.query, name);
    if param("hub.topic").as_deref() != Some(topic) {
        return Err(VerifyError::NotSubscribed);
    }
    match param("hub.mode").as_deref() {
        Some("subscribe" | "unsubscribe") => {
            echoable(param("hub.challenge").unwrap_or_default()).map(Answer::Text)
        }
        Some("denied") => {
            let reason = param("hub.reason").unwrap_or_default();
            let reason: String = reason.chars().take(200).collect();
            tracing::warn!(topic, reason, "The WebSub hub denied the subscription.");
            Ok(Answer::Text(String::new()))
        }
        _ => Err(VerifyError::NotSubscribed),
    }
}

impl Handshake {
    /// Whether this handshake comes as a `GET` (the webhook then answers `GET`; otherwise 405).
    pub fn on_get(&self) -> bool {
        matches!(
            self,
            Handshake::Meta { .. }
                | Handshake::X { .. }
                | Handshake::Okta
                | Handshake::Dropbox
                | Handshake::Websub { .. }
                | Handshake::Strava { .. }
        )
    }

    /// Answers a `GET` handshake (call only when [`Handshake::on_get`]).
    pub fn answer_get(&self, inbound: &Inbound<'_>) -> Result<Answered, VerifyError> {
        let param = |name| query_param(inbound.query, name);
        let (provider, answer) = match self {
            Handshake::Meta { verify_token } => {
                ("meta", Answer::Text(hub_challenge(inbound, verify_token)?))
            }
            Handshake::Strava { verify_token } => {
                let challenge = hub_challenge(inbound, verify_token)?;
                (
                    "strava",
                    json(serde_json::json!({"hub.challenge": challenge})),
                )
            }
            Handshake::Websub { topic } => ("websub", websub_intent(inbound, topic)?),
            Handshake::X { consumer_secret } => {
                use base64::Engine as _;
                // The CRC is unauthenticated and keyed like X's own payload signatures: only a
                // short token of token characters is answered, so the answer can never be a
                // signature over an event body (JSON has braces and quotes).
                let token = param("crc_token").unwrap_or_default();
                let token_like = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
                if token.len() > MAX_CRC_TOKEN || !token.chars().all(token_like) {
                    return Err(VerifyError::Unauthorized(Why::HandshakeTokenMismatch));
                }
                let token = echoable(token)?;
                let mac = hmac_sha256(consumer_secret.expose().as_bytes(), token.as_bytes());
                let encoded = base64::engine::general_purpose::STANDARD.encode(mac);
                (
                    "x",
                    json(serde_json::json!({"response_token": format!("sha256={encoded}")})),
                )
            }
            Handshake::Okta => {
                let challenge = inbound
                    .header("x-okta-verification-challenge")
                    .map(str::to_owned)
                    .unwrap_or_default();
                let challenge = echoable(challenge)?;
                ("okta", json(serde_json::json!({"verification": challenge})))
            }
            Handshake::Dropbox => {
                let challenge = echoable(param("challenge").unwrap_or_default())?;
                ("dropbox", Answer::Text(challenge))
            }
            Handshake::Msgraph { .. }
            | Handshake::Slack
            | Handshake::Zoom
            | Handshake::Twitch
            | Handshake::StandardWebhooks
            | Handshake::Asana
            | Handshake::Trello => {
                return Err(VerifyError::Unauthorized(Why::HandshakeTokenMismatch))
            }
        };
        Ok(Answered { provider, answer })
    }

    /// A validation `POST` answered from its head, before the body: Microsoft Graph's
    /// `?validationToken=..`, Asana's `X-Hook-Secret`.
    pub fn answer_head(&self, inbound: &Inbound<'_>) -> Option<Result<Answered, VerifyError>> {
        match self {
            Handshake::Msgraph { .. } => {
                let token = query_param(inbound.query, "validationToken")?;
                Some(echoable(token).map(|token| Answered {
                    provider: "msgraph",
                    answer: Answer::Text(token),
                }))
            }
            Handshake::Asana => {
                let secret = inbound.header("x-hook-secret")?;
                // Asana's secrets are 32 hex digits; a secret is a header value, so it can hold
                // no line break, and a short one of visible ASCII is all that is echoed.
                let visible = secret.bytes().all(|b| b.is_ascii_graphic());
                if secret.len() > MAX_CRC_TOKEN || !visible {
                    return Some(Err(VerifyError::Unauthorized(Why::HandshakeTokenMismatch)));
                }
                Some(echoable(secret.to_owned()).map(|secret| Answered {
                    provider: "asana",
                    answer: Answer::HookSecret(Secret::new(&secret)),
                }))
            }
            _ => None,
        }
    }

    /// What the body must carry besides its signature: Microsoft Graph's `clientState` in every
    /// notification, when one is configured (missing or wrong is 401).
    pub fn check_body(&self, body: &[u8]) -> Result<(), VerifyError> {
        let Handshake::Msgraph {
            client_state: Some(expected),
        } = self
        else {
            return Ok(());
        };
        #[derive(Deserialize)]
        struct Notifications<'a> {
            #[serde(borrow)]
            value: Vec<Notification<'a>>,
        }
        #[derive(Deserialize)]
        struct Notification<'a> {
            #[serde(rename = "clientState", borrow, default)]
            client_state: Option<std::borrow::Cow<'a, str>>,
        }
        let notifications: Notifications<'_> = serde_json::from_slice(body)
            .map_err(|_| VerifyError::Unauthorized(Why::ClientStateMismatch))?;
        let every_one_right = !notifications.value.is_empty()
            && notifications.value.iter().all(|n| {
                n.client_state.as_deref().is_some_and(|state| {
                    super::ct::eq(state.as_bytes(), expected.expose().as_bytes())
                })
            });
        if every_one_right {
            Ok(())
        } else {
            Err(VerifyError::Unauthorized(Why::ClientStateMismatch))
        }
    }

    /// A signed handshake (Slack, Zoom, Twitch in the body; Standard Webhooks in a header); call
    /// after the signature passed. `signer` gives the key that signed the request, for the
    /// answers keyed with it. `None`: the request is an ordinary delivery.
    pub fn answer_body(
        &self,
        inbound: &Inbound<'_>,
        body: &[u8],
        signer: &dyn Fn() -> Option<Vec<u8>>,
    ) -> Option<Result<Answered, VerifyError>> {
        if let Handshake::StandardWebhooks = self {
            let challenge = inbound.header("webhook-challenge")?.to_owned();
            return Some(echoable(challenge).and_then(|challenge| {
                let key = signer().ok_or(VerifyError::Unauthorized(Why::BadSignature))?;
                Ok(Answered {
                    provider: "standard_webhooks",
                    answer: Answer::Header(
                        "webhook-challenge-response",
                        endpoint_verification(&key, &challenge),
                    ),
                })
            }));
        }
        // Cheap test first: ordinary deliveries are not parsed twice. The searchers are built
        // once: building one costs about as much as searching a small body.
        use memchr::memmem::Finder;
        use std::sync::LazyLock;
        static SLACK: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("url_verification"));
        static ZOOM: LazyLock<Finder<'static>> =
            LazyLock::new(|| Finder::new("endpoint.url_validation"));
        static TWITCH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("challenge"));
        let (provider, marker): (&'static str, &Finder<'static>) = match self {
            Handshake::Slack => ("slack", &SLACK),
            Handshake::Zoom => ("zoom", &ZOOM),
            Handshake::Twitch => {
                let kind = inbound.header("twitch-eventsub-message-type")?;
                if kind.trim() != "webhook_callback_verification" {
                    return None;
                }
                ("twitch", &TWITCH)
            }
            _ => return None,
        };
        marker.find(body)?;
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
        let answer = match self {
            Handshake::Slack => {
                if value["type"] != "url_verification" {
                    return None;
                }
                echoable(text(&value["challenge"])).map(Answer::Text)
            }
            Handshake::Zoom => {
                if value["event"] != "endpoint.url_validation" {
                    return None;
                }
                // Zoom checks the answer with the secret it signs with now: during a rotation
                // that is the one that verified this request, not necessarily the first.
                let key = signer()?;
                echoable(text(&value["payload"]["plainToken"])).map(|plain| {
                    let encrypted = hex::encode(hmac_sha256(&key, plain.as_bytes()));
                    json(serde_json::json!({"plainToken": plain, "encryptedToken": encrypted}))
                })
            }
            _ => echoable(text(&value["challenge"])).map(Answer::Text),
        };
        Some(answer.map(|answer| Answered { provider, answer }))
    }
}

/// Standard Webhooks endpoint verification: `v1,` + base64 of HMAC-SHA256 over the challenge,
/// keyed with HMAC-SHA256(secret key, `wev-v1`), so that an answer is never a delivery
/// signature.
fn endpoint_verification(key: &[u8], challenge: &str) -> String {
    use base64::Engine as _;
    let derived = hmac_sha256(key, b"wev-v1");
    let answer = hmac_sha256(&derived, challenge.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(answer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound<'a>(
        headers: &'a dyn Fn(&str) -> Option<&'a str>,
        query: Option<&'a str>,
    ) -> Inbound<'a> {
        Inbound {
            headers,
            query,
            client_ip: None,
            now: std::time::SystemTime::now(),
            url: &|| None,
        }
    }

    #[test]
    fn meta_needs_the_mode_and_the_token() {
        let h = Handshake::Meta {
            verify_token: Secret::new("tok"),
        };
        let none = |_: &str| None;
        let ok = h.answer_get(&inbound(
            &none,
            Some("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=tok"),
        ));
        assert_eq!(ok.unwrap().answer, Answer::Text("1158201444".into()));
        for query in [
            "hub.mode=subscribe&hub.challenge=1&hub.verify_token=bad",
            "hub.mode=other&hub.challenge=1&hub.verify_token=tok",
            "hub.mode=subscribe&hub.verify_token=tok",
        ] {
            assert!(
                h.answer_get(&inbound(&none, Some(query))).is_err(),
                "{query}"
            );
        }
    }

    #[test]
    fn the_x_crc_is_no_signing_oracle_for_event_bodies() {
        let h = Handshake::X {
            consumer_secret: Secret::new("cs"),
        };
        let none = |_: &str| None;
        assert!(h
            .answer_get(&inbound(&none, Some("crc_token=abcDEF123%2B%2F%3D")))
            .is_ok());
        for query in [
            "crc_token=%7B%22event%22%3A1%7D",
            "crc_token=a%20b",
            &format!("crc_token={}", "a".repeat(MAX_CRC_TOKEN + 1)),
        ] {
            assert!(
                h.answer_get(&inbound(&none, Some(query))).is_err(),
                "{query}"
            );
        }
    }

    #[test]
    fn challenges_too_long_to_echo_are_refused() {
        let none = |_: &str| None;
        let long = format!("challenge={}", "a".repeat(MAX_CHALLENGE + 1));
        assert!(Handshake::Dropbox
            .answer_get(&inbound(&none, Some(&long)))
            .is_err());
    }

    #[test]
    fn ordinary_deliveries_are_not_handshakes() {
        let none = |_: &str| None;
        let body = br#"{"type":"event_callback","event":{"text":"url_verification"}}"#;
        assert!(Handshake::Slack
            .answer_body(&inbound(&none, None), body, &|| None)
            .is_none());
        assert!(Handshake::StandardWebhooks
            .answer_body(&inbound(&none, None), body, &|| Some(vec![1]))
            .is_none());
    }

    #[test]
    fn endpoint_verification_matches_the_standardwebhooks_library() {
        // `Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").endpoint_verification_response
        // ("abc123")` in standardwebhooks 1.3.0 (Python and npm give the same).
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            endpoint_verification(&key, "abc123"),
            "v1,lKqUSrOo6PnegcLSZjd34tiZhz1Xpt2KdE/Pb2CwNLU="
        );
    }
}
