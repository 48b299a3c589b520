//! Provider handshakes through the real HTTP stack: answered before any destination is touched
//! (the module sees nothing), `text/plain` with `nosniff` (JSON where the provider asks), and
//! refused when the provider's proof is wrong. Also the presets they come with (Zoom, Twitch,
//! Meta) on ordinary deliveries.

use actix_web::{
    http::{header, StatusCode},
    test,
};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{
    hmac_sha256,
    inproc::{call_text, one_webhook, post_bytes, Harness},
    unix_now,
};

/// Asserts a 200 handshake answer of `content_type` and returns its body.
async fn answered(h: &Harness, req: test::TestRequest, content_type: &str) -> String {
    let (status, headers, body) = call_text(h, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(content_type),
        "{headers:?}"
    );
    assert_eq!(
        headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
    body
}

fn get(query: &str) -> test::TestRequest {
    test::TestRequest::get().uri(&format!("/webhook/a/w?{query}"))
}

fn slack_signed(secret: &str, body: &str, t: i64) -> test::TestRequest {
    let sig = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[b"v0:", t.to_string().as_bytes(), b":", body.as_bytes()],
    ));
    post_bytes("/webhook/a/w", body.to_owned())
        .insert_header(("x-slack-request-timestamp", t.to_string()))
        .insert_header(("x-slack-signature", format!("v0={sig}")))
}

#[actix_web::test]
async fn slack_url_verification_is_answered_with_the_challenge_once_signed() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let (h, module) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "slack", "secret": secret}}));
    // Slack's documented example request.
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let challenge = answered(&h, slack_signed(secret, body, unix_now()), "text/plain").await;
    assert_eq!(
        challenge,
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // Unsigned (or signed with another secret): no echo.
    let (status, _, _) = call_text(&h, slack_signed("wrong", body, unix_now())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An event still goes to the module.
    let event = r#"{"type":"event_callback","event":{"type":"message"}}"#;
    let (status, _, _) = call_text(&h, slack_signed(secret, event, unix_now())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(module.taken().len(), 1, "only the event was delivered");
}

fn zoom_signed(secret: &str, body: &str, t: i64) -> test::TestRequest {
    let sig = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[b"v0:", t.to_string().as_bytes(), b":", body.as_bytes()],
    ));
    post_bytes("/webhook/a/w", body.to_owned())
        .insert_header(("x-zm-request-timestamp", t.to_string()))
        .insert_header(("x-zm-signature", format!("v0={sig}")))
}

#[actix_web::test]
async fn zoom_preset_verifies_events_and_answers_url_validation() {
    let secret = "zoom-webhook-secret-token";
    let (h, module) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "zoom", "secret": secret}}));
    let validation = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let body = answered(
        &h,
        zoom_signed(secret, validation, unix_now()),
        "application/json",
    )
    .await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        answer["encryptedToken"],
        hex::encode(hmac_sha256(secret.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"]))
    );
    let event = r#"{"event":"meeting.started","payload":{}}"#;
    let (status, _, _) = call_text(&h, zoom_signed(secret, event, unix_now())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call_text(&h, zoom_signed(secret, event, unix_now() - 301)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed");
    let (status, _, _) = call_text(&h, zoom_signed("other", validation, unix_now())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(module.taken().len(), 1);
}

fn twitch_signed(
    secret: &str,
    kind: &str,
    body: &str,
    at: std::time::SystemTime,
) -> test::TestRequest {
    let id = "e76c6bd4-55c9-4987-8304-da1588d8988b";
    let ts = humantime::format_rfc3339_nanos(at).to_string();
    let sig = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[id.as_bytes(), ts.as_bytes(), body.as_bytes()],
    ));
    post_bytes("/webhook/a/w", body.to_owned())
        .insert_header(("twitch-eventsub-message-id", id))
        .insert_header(("twitch-eventsub-message-timestamp", ts))
        .insert_header(("twitch-eventsub-message-type", kind))
        .insert_header(("twitch-eventsub-message-signature", format!("sha256={sig}")))
}

#[actix_web::test]
async fn twitch_preset_verifies_notifications_and_answers_the_callback_challenge() {
    let secret = "twitch-secret-of-ten+";
    let (h, module) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "twitch", "secret": secret}}));
    let now = std::time::SystemTime::now();
    let verification = r#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"type":"channel.follow"}}"#;
    let challenge = answered(
        &h,
        twitch_signed(secret, "webhook_callback_verification", verification, now),
        "text/plain",
    )
    .await;
    assert_eq!(challenge, "pogchamp-kappa-360noscope-vohiyo");
    let event = r#"{"subscription":{"type":"channel.follow"},"event":{"user_id":"1"}}"#;
    let (status, _, _) = call_text(&h, twitch_signed(secret, "notification", event, now)).await;
    assert_eq!(status, StatusCode::OK);
    // Ten minutes is Twitch's window.
    let old = now - std::time::Duration::from_secs(660);
    let (status, _, _) = call_text(&h, twitch_signed(secret, "notification", event, old)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call_text(
        &h,
        twitch_signed("not-it", "webhook_callback_verification", verification, now),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn meta_verify_token_handshake_and_app_secret_signatures() {
    let (h, module) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "meta", "secret": "app-secret"},
        "handshake": {"provider": "meta", "verify_token": "my-verify-token"}}));
    let challenge = answered(
        &h,
        get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=my-verify-token"),
        "text/plain",
    )
    .await;
    assert_eq!(challenge, "1158201444");
    let (status, _, _) = call_text(
        &h,
        get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = r#"{"object":"page","entry":[]}"#;
    let sig = hex::encode(hmac_sha256(b"app-secret", &[body.as_bytes()]));
    let (status, _, _) = call_text(
        &h,
        post_bytes("/webhook/a/w", body)
            .insert_header(("x-hub-signature-256", format!("sha256={sig}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn x_crc_is_answered_with_the_keyed_response_token() {
    let (h, module) = one_webhook(
        json!({"module": "log", "handshake": {"provider": "x", "consumer_secret": "cs"}}),
    );
    let body = answered(&h, get("crc_token=abc%2B123"), "application/json").await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    let expected =
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(b"cs", &[b"abc+123"]));
    assert_eq!(answer["response_token"], format!("sha256={expected}"));
    let (status, _, _) = call_text(&h, get("other=1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(module.taken().is_empty());
}

#[actix_web::test]
async fn msgraph_validation_token_is_echoed_decoded_before_the_body() {
    let (h, module) = one_webhook(json!({"module": "log", "handshake": {"provider": "msgraph"}}));
    let token = answered(
        &h,
        post_bytes(
            "/webhook/a/w?validationToken=Validation%3A%20Testing%20client%20application",
            "",
        ),
        "text/plain",
    )
    .await;
    assert_eq!(token, "Validation: Testing client application");
    // Notifications are ordinary deliveries.
    let (status, _, _) = call_text(&h, post_bytes("/webhook/a/w", r#"{"value":[]}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn zoom_answers_url_validation_with_the_secret_that_signed_it_during_a_rotation() {
    let (old, new) = ("zoom-secret-before-rotation", "zoom-secret-after-rotation");
    let (h, _) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "zoom", "secret": [old, new]}}));
    let validation = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    // Zoom revalidates every 72 hours with the secret it signs with at the time: once it has
    // moved to the new one, an answer keyed with the old one would fail its check.
    for secret in [new, old] {
        let body = answered(
            &h,
            zoom_signed(secret, validation, unix_now()),
            "application/json",
        )
        .await;
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            answer["encryptedToken"],
            hex::encode(hmac_sha256(secret.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"])),
            "keyed with the secret that signed the request"
        );
    }
}

#[actix_web::test]
async fn msgraph_client_state_is_checked_in_every_notification() {
    let state = "secretClientValue-8f2b";
    let (h, module) = one_webhook(json!({"module": "log",
        "handshake": {"provider": "msgraph", "client_state": state}}));
    // The validation POST still comes without a body or a client state.
    let token = answered(
        &h,
        post_bytes("/webhook/a/w?validationToken=abc", ""),
        "text/plain",
    )
    .await;
    assert_eq!(token, "abc");
    let notification = |states: &[Option<&str>]| {
        let value: Vec<Value> = states
            .iter()
            .map(|state| {
                let mut item = json!({"subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
                    "changeType": "created", "resource": "Users/abc/Messages/def",
                    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95"});
                if let Some(state) = state {
                    item["clientState"] = json!(state);
                }
                item
            })
            .collect();
        post_bytes("/webhook/a/w", json!({"value": value}).to_string())
    };
    for (states, expected) in [
        (vec![Some(state)], StatusCode::OK),
        (vec![Some(state), Some(state)], StatusCode::OK),
        (vec![Some("wrong")], StatusCode::UNAUTHORIZED),
        (vec![None], StatusCode::UNAUTHORIZED),
        (vec![Some(state), Some("wrong")], StatusCode::UNAUTHORIZED),
        (vec![], StatusCode::UNAUTHORIZED),
    ] {
        let (status, _, body) = call_text(&h, notification(&states)).await;
        assert_eq!(status, expected, "{states:?}: {body}");
    }
    let (status, _, _) = call_text(&h, post_bytes("/webhook/a/w", "not json")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        module.taken().len(),
        2,
        "only the notifications that carry it"
    );
}

#[tokio::test]
async fn a_handshake_with_a_field_its_provider_does_not_have_makes_the_entry_invalid() {
    use crate::support::{app::file_settings, files::write_json, get_json, TestApp};
    // Accepted and silently ignored before: an operator would believe notifications were
    // checked. Every variant, and every other config object, is covered by the unit test
    // `provider::strict`.
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "connections.json", &json!({}));
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({
            "okta": {"module": "log", "handshake": {"provider": "okta", "verify_token": "t"}},
            "dropbox": {"module": "log", "handshake": {"provider": "dropbox", "secret": "s"}},
            "graph": {"module": "log", "handshake": {"provider": "msgraph", "clientState": "s"}},
            "good": {"module": "log", "handshake": {"provider": "msgraph", "client_state": "s"}},
        }),
    );
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    let status = get_json(&app.base(), "/status").await;
    let skipped = status["skipped"].to_string();
    for (id, field) in [
        ("okta", "verify_token"),
        ("dropbox", "secret"),
        ("graph", "clientState"),
    ] {
        assert!(
            skipped.contains(&format!("#{id}"))
                && skipped.contains(&format!("unknown field `{field}`")),
            "{id}: {skipped}"
        );
        assert_eq!(
            app.status_of(id).await,
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "{id}"
        );
    }
    assert!(!skipped.contains("#good"), "{skipped}");
}

#[actix_web::test]
async fn okta_verification_applies_the_webhooks_own_head_checks() {
    let (h, module) = one_webhook(json!({"module": "log", "authorization": "Bearer okta-hook",
        "handshake": {"provider": "okta"}}));
    let challenge = || {
        test::TestRequest::get()
            .uri("/webhook/a/w")
            .insert_header(("x-okta-verification-challenge", "2WdCDmJAp-nbp6VpZ9Tx"))
    };
    let body = answered(
        &h,
        challenge().insert_header(("authorization", "Bearer okta-hook")),
        "application/json",
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"verification": "2WdCDmJAp-nbp6VpZ9Tx"})
    );
    let (status, _, _) = call_text(&h, challenge()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "without the webhook's credentials"
    );
    assert!(module.taken().is_empty());
}

#[actix_web::test]
async fn dropbox_challenge_is_echoed_and_get_without_a_handshake_stays_405() {
    let (h, module) = one_webhook(json!({"module": "log", "handshake": {"provider": "dropbox"}}));
    assert_eq!(
        answered(&h, get("challenge=xyz-123"), "text/plain").await,
        "xyz-123"
    );
    let (status, _, _) = call_text(&h, get(&format!("challenge={}", "a".repeat(3000)))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "too long to echo");
    assert!(module.taken().is_empty());

    let (h, _) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "slack", "secret": "s"}}));
    let (status, headers, _) = call_text(&h, get("challenge=1")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers.get(header::ALLOW).unwrap(), "POST");
}

#[actix_web::test]
async fn a_preset_with_its_own_handshake_refuses_a_second_one() {
    let entry = json!({"module": "log", "hmac": {"provider": "slack", "secret": "s"},
        "handshake": {"provider": "dropbox"}});
    let err = switchyard::webhook::Webhook::from_value(entry).unwrap_err();
    assert!(err.to_string().contains("remove `handshake`"), "{err}");
    let empty = json!({"module": "log", "handshake": {"provider": "meta", "verify_token": ""}});
    assert!(switchyard::webhook::Webhook::from_value(empty).is_err());
    let unknown = json!({"module": "log", "handshake": {"provider": "myspace"}});
    assert!(switchyard::webhook::Webhook::from_value(unknown).is_err());
}

/// Asana's handshake hands the signing secret over once: a `POST` with `X-Hook-Secret` that must
/// be echoed. Switchyard never writes config, so the secret is logged (sealed for the entry's
/// `hmac.secret` when `SEAL_KEYS_FILE` is set) and deliveries are refused until the operator
/// put it in; then the `asana` preset verifies `X-Hook-Signature` (hex HMAC-SHA256 of the body,
/// as Asana's own example server checks it; Asana ships no library that signs).
#[tokio::test]
async fn asana_handshake_logs_the_secret_sealed_and_the_preset_then_verifies_with_it() {
    use crate::support::{files::write_json, process::Router, wait_until};
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        keys.path(),
        "k1=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    let (dir, router) = Router::serving(
        json!({"asana": {"module": "log", "handshake": {"provider": "asana"}}}),
        &[
            ("SEAL_KEYS_FILE", keys.path().to_str().unwrap()),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let secret = "8f3c1d2b9a7e4f60b1c2d3e4f5a6b7c8";
    let handshake = client
        .post(router.url("/webhook/asana"))
        .header("x-hook-secret", secret)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(handshake.headers()["x-hook-secret"], secret);
    let event =
        r#"{"events":[{"action":"changed","resource":{"gid":"1","resource_type":"task"}}]}"#;
    let signed = |body: &'static str| {
        client
            .post(router.url("/webhook/asana"))
            .header(
                "x-hook-signature",
                hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()])),
            )
            .body(body)
    };
    // No secret in the entry yet: nothing is delivered unverified (Asana retries for a day).
    let refused = signed(event).send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    router.wait_log("secret_not_configured").await;
    router
        .wait_log("Asana handed over its signing secret")
        .await;
    let logs = router.logs();
    assert!(!logs.contains(secret), "the secret is in the log in clear");
    let line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Asana handed over"))
        })
        .unwrap();
    let sealed = line["secret"].as_str().unwrap().to_owned();
    assert!(sealed.starts_with("sealed:v1:k1:"), "{sealed}");
    // The operator pastes the logged value into the entry as it is.
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"asana": {"module": "log", "hmac": {"provider": "asana", "secret": sealed}}}),
    );
    wait_until(
        std::time::Duration::from_secs(10),
        "the entry with the sealed secret applied",
        || async { signed(event).send().await.unwrap().status() == reqwest::StatusCode::OK },
    )
    .await;
    // Heartbeats are signed too; a wrong signature is refused; a new handshake (the webhook
    // created again in Asana) is still answered.
    assert_eq!(
        signed(r#"{"events":[]}"#).send().await.unwrap().status(),
        reqwest::StatusCode::OK
    );
    let forged = client
        .post(router.url("/webhook/asana"))
        .header("x-hook-signature", "00".repeat(32))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::UNAUTHORIZED);
    let again = client
        .post(router.url("/webhook/asana"))
        .header("x-hook-secret", "another")
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["x-hook-secret"], "another");
}

const WEBSUB_AND_STRAVA: &str = r#"
import json, sys, types, requests
from flask_websub.hub import tasks
from flask_websub.utils import calculate_hmac
from stravalib import Client
c = json.load(sys.stdin)
hub = types.SimpleNamespace(config={"REQUEST_TIMEOUT": 3})
out = {
    "subscribe": tasks.intent_verified(hub, c["feed"], "subscribe", c["topic"], 864000),
    "unsubscribe": tasks.intent_verified(hub, c["feed"], "unsubscribe", c["topic"], None),
    "other_topic": tasks.intent_verified(hub, c["feed"], "subscribe", c["topic"] + "x", 864000),
}
body = b"<feed><entry>1</entry></feed>"
sig = "sha256=" + calculate_hmac("sha256", c["hub_secret"], body)
out["content"] = requests.post(c["feed"], data=body, headers={"X-Hub-Signature": sig,
    "Content-Type": "application/atom+xml"}).status_code
params = {"hub.mode": "subscribe", "hub.challenge": "15f7d1a91c1f40",
          "hub.verify_token": c["verify_token"]}
r = requests.get(c["strava"], params=params, timeout=2)
expected = Client().handle_subscription_callback(params, verify_token=c["verify_token"])
out["strava"] = {"status": r.status_code, "type": r.headers.get("content-type"),
                 "matches": r.json() == expected}
bad = dict(params, **{"hub.verify_token": "wrong"})
out["strava_wrong_token"] = requests.get(c["strava"], params=bad, timeout=2).status_code
print(json.dumps(out))
"#;

/// WebSub (W3C): the hub's verification of intent is a `GET` whose `hub.challenge` is echoed
/// for the subscribed topic only (another topic: 404), driven here by `flask-websub` 0.4.1's
/// own hub code; content then comes signed in `X-Hub-Signature` (its `calculate_hmac`).
/// Strava: the same `GET` with a `hub.verify_token`, answered `{"hub.challenge": ..}` as
/// `stravalib` 2.6.0's `handle_subscription_callback` computes it.
#[tokio::test]
async fn websub_and_strava_subscriptions_are_verified_as_their_libraries_expect() {
    use crate::support::{
        process::Router,
        sdk::{python_with, run_python},
    };
    let topic = "https://example.com/feed";
    let (_dir, router) = Router::serving(
        json!({
            "feed": {"module": "log", "data_type": "blob",
                     "handshake": {"provider": "websub", "topic": topic},
                     "hmac": {"header": "X-Hub-Signature", "algorithm": "sha256",
                              "secret": "hub-secret"}},
            "strava": {"module": "log", "handshake": {"provider": "strava",
                                                        "verify_token": "STRAVA-VERIFY"}},
        }),
        &[],
    )
    .await;
    let python = python_with(&["flask-websub==0.4.1", "stravalib==2.6.0"]);
    let input = json!({"feed": router.url("/webhook/feed"), "topic": topic,
        "hub_secret": "hub-secret", "strava": router.url("/webhook/strava"),
        "verify_token": "STRAVA-VERIFY"});
    let out: Value =
        serde_json::from_str(&run_python(&python, WEBSUB_AND_STRAVA, &input.to_string())).unwrap();
    assert_eq!(
        out,
        json!({"subscribe": true, "unsubscribe": true, "other_topic": false, "content": 200,
               "strava": {"status": 200, "type": "application/json", "matches": true},
               "strava_wrong_token": 401})
    );
    // A denial is acknowledged and logged with its reason.
    let denied = reqwest::get(router.url(&format!(
        "/webhook/feed?hub.mode=denied&hub.topic={}&hub.reason=unauthorized%20topic",
        topic.replace(':', "%3A").replace('/', "%2F")
    )))
    .await
    .unwrap();
    assert_eq!(denied.status(), reqwest::StatusCode::OK);
    router.wait_log("denied the subscription").await;
    assert!(router.logs().contains("unauthorized topic"));
    // Another topic is the spec's 404.
    let other = reqwest::get(router.url(
        "/webhook/feed?hub.mode=subscribe&hub.topic=https%3A%2F%2Fevil.example%2F&hub.challenge=x",
    ))
    .await
    .unwrap();
    assert_eq!(other.status(), reqwest::StatusCode::NOT_FOUND);
}

/// Secrets never reach the log in clear: without `SEAL_KEYS_FILE` (the harness has no keys)
/// Asana's handshake is refused rather than its secret logged, and echoes nothing.
#[actix_web::test]
async fn asana_handshake_without_seal_keys_is_refused_and_echoes_nothing() {
    let (h, module) = one_webhook(json!({"module": "log", "handshake": {"provider": "asana"}}));
    let request = post_bytes("/webhook/a/w", "{}").insert_header(("x-hook-secret", "abc123"));
    let (status, headers, _) = call_text(&h, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("x-hook-secret").is_none());
    // A secret with a control character or over 256 bytes is never echoed either.
    let long = "a".repeat(257);
    let request = post_bytes("/webhook/a/w", "{}").insert_header(("x-hook-secret", long));
    assert_eq!(call_text(&h, request).await.0, StatusCode::UNAUTHORIZED);
    assert!(module.taken().is_empty());
}
