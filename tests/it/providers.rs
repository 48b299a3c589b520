//! Real providers' libraries against the real HTTP stack: requests signed by the providers' own
//! SDKs verify, and where a provider's library decides what a header means, Switchyard decides
//! the same (table tests against the library itself, installed from the package index).

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{
    hmac_sha256,
    inproc::{add, call_text, one_webhook, post_bytes},
    recording::RecordingModule,
    sdk::{python_with, run_python},
    unix_now,
};

const STRIPE_VERIFY: &str = r#"
import json, sys, stripe
cases = json.load(sys.stdin)
out = []
for c in cases:
    try:
        stripe.WebhookSignature.verify_header(c["payload"], c["header"], c["secret"], tolerance=300)
        out.append(True)
    except Exception:
        out.append(False)
print(json.dumps(out))
"#;

/// `Stripe-Signature` edge cases: Switchyard accepts exactly the headers `stripe-python`'s
/// `WebhookSignature.verify_header` accepts (the check `construct_event` makes).
#[actix_web::test]
async fn stripe_header_edge_cases_are_read_as_stripes_library_reads_them() {
    let secret = "whsec_edge_cases";
    let payload = r#"{"id":"evt_1","object":"event","type":"charge.succeeded"}"#;
    let t = unix_now();
    let sign = |ts: &str| {
        hex::encode(hmac_sha256(
            secret.as_bytes(),
            &[ts.as_bytes(), b".", payload.as_bytes()],
        ))
    };
    let sig = sign(&t.to_string());
    let old = t - 1000;
    let headers = vec![
        format!("t={t},v1={sig}"),
        format!("v1={sig},t={t}"),
        format!("t={t},v1={}", sig.to_uppercase()),
        format!("t={t}, v1={sig}"),
        format!(" t={t},v1={sig}"),
        format!("t={t},t={old},v1={sig}"),
        format!("t={old},t={t},v1={sig}"),
        format!("t={t},garbage,v1={sig}"),
        format!("t,t={t},v1={sig}"),
        format!("t={t},v1,v1={sig}"),
        format!("t={t},v0=abc,v1={},v1={sig},x=y", "0".repeat(64)),
        format!("t={t},v1={sig}=extra"),
        format!("t= {t} ,v1={sig}"),
        format!("t=+{t},v1={sig}"),
        format!("t=0{t},v1={sig}"),
        format!("t=,v1={sig}"),
        format!("t={t}"),
        format!("v1={sig}"),
        format!("t={t},v1={}", sign(&(t - 1).to_string())),
        format!("t={old},v1={}", sign(&old.to_string())),
        format!("t={t},V1={sig}"),
        format!("t={t},v1= {sig}"),
        String::new(),
    ];
    let cases: Vec<Value> = headers
        .iter()
        .map(|h| json!({"payload": payload, "header": h, "secret": secret}))
        .collect();
    let python = python_with(&["stripe"]);
    let expected: Vec<bool> = serde_json::from_str(&run_python(
        &python,
        STRIPE_VERIFY,
        &json!(cases).to_string(),
    ))
    .unwrap();
    assert!(expected.iter().any(|ok| *ok) && expected.iter().any(|ok| !*ok));

    let (h, _) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "stripe", "secret": secret}}));
    for (header, stripe_accepts) in headers.iter().zip(expected) {
        let request = post_bytes("/webhook/a/w", payload)
            .insert_header(("stripe-signature", header.as_str()));
        let (status, _, body) = call_text(&h, request).await;
        assert_eq!(
            status == StatusCode::OK,
            stripe_accepts,
            "{header:?}: stripe-python says {stripe_accepts}, Switchyard answered {status} {body}"
        );
    }
}

const SLACK_SIGN: &str = r#"
import json, sys, time
from slack_sdk.signature import SignatureVerifier
c = json.load(sys.stdin)
ts = str(int(time.time()))
v = SignatureVerifier(c["secret"])
print(json.dumps({"ts": ts, "sig": v.generate_signature(timestamp=ts, body=c["body"])}))
"#;

/// A Slack Events API URL verification signed by `slack_sdk`, then an event: the first is
/// answered with its challenge, the second delivered.
#[actix_web::test]
async fn slack_sdk_signed_requests_verify_and_the_url_verification_is_answered() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let python = python_with(&["slack_sdk"]);
    let (h, module) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "slack", "secret": [secret, "the-next-secret"]}}));
    let signed = |body: &str| {
        let out: Value = serde_json::from_str(&run_python(
            &python,
            SLACK_SIGN,
            &json!({"secret": secret, "body": body}).to_string(),
        ))
        .unwrap();
        post_bytes("/webhook/a/w", body.to_owned())
            .insert_header((
                "x-slack-request-timestamp",
                out["ts"].as_str().unwrap().to_owned(),
            ))
            .insert_header(("x-slack-signature", out["sig"].as_str().unwrap().to_owned()))
    };
    let verification =
        r#"{"token":"x","challenge":"slack-challenge-42","type":"url_verification"}"#;
    let (status, _, body) = call_text(&h, signed(verification)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "slack-challenge-42")
    );
    let event = r#"{"type":"event_callback","event":{"type":"app_mention"}}"#;
    assert_eq!(call_text(&h, signed(event)).await.0, StatusCode::OK);
    assert_eq!(module.taken().len(), 1);
}

const STANDARD_SIGN: &str = r#"
import json, sys, datetime
from standardwebhooks.webhooks import Webhook
c = json.load(sys.stdin)
wh = Webhook(c["secret"])
now = datetime.datetime.now(tz=datetime.timezone.utc)
sig = wh.sign(c["id"], now, c["body"])
print(json.dumps({"ts": str(int(now.timestamp())), "sig": sig}))
"#;

/// Standard Webhooks signed by the `standardwebhooks` library, with the standard headers and
/// with Svix's branded ones (`svix-id`, `svix-timestamp`, `svix-signature`), which Svix's own
/// libraries send and accept.
#[actix_web::test]
async fn standard_webhooks_signed_by_the_library_verify_under_either_header_brand() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let python = python_with(&["standardwebhooks"]);
    let (h, module) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "standard_webhooks", "secret": secret}}));
    let body = r#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let out: Value = serde_json::from_str(&run_python(
        &python,
        STANDARD_SIGN,
        &json!({"secret": secret, "id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "body": body})
            .to_string(),
    ))
    .unwrap();
    let (ts, sig) = (out["ts"].as_str().unwrap(), out["sig"].as_str().unwrap());
    for brand in ["webhook", "svix"] {
        let request = post_bytes("/webhook/a/w", body)
            .insert_header((format!("{brand}-id"), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"))
            .insert_header((format!("{brand}-timestamp"), ts.to_owned()))
            .insert_header((format!("{brand}-signature"), sig.to_owned()));
        assert_eq!(call_text(&h, request).await.0, StatusCode::OK, "{brand}-*");
    }
    assert_eq!(module.taken().len(), 2);
    // Mixed brands are not one request.
    let mixed = post_bytes("/webhook/a/w", body)
        .insert_header(("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"))
        .insert_header(("svix-timestamp", ts.to_owned()))
        .insert_header(("webhook-signature", sig.to_owned()));
    assert_eq!(call_text(&h, mixed).await.0, StatusCode::UNAUTHORIZED);
}

const STANDARD_CHALLENGE: &str = r#"
import json, sys, datetime
from standardwebhooks.webhooks import Webhook
c = json.load(sys.stdin)
wh = Webhook(c["secret"])
if "answer" in c:
    try:
        wh.verify_endpoint_verification_response(c["challenge"], c["answer"])
        print(json.dumps({"verified": True}))
    except Exception as e:
        print(json.dumps({"verified": False, "why": str(e)}))
else:
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    print(json.dumps({"ts": str(int(now.timestamp())), "sig": wh.sign(c["id"], now, "")}))
"#;

/// Standard Webhooks endpoint verification (standardwebhooks 1.3.0): a signed request with a
/// `webhook-challenge` header is answered 204 with `webhook-challenge-response`, keyed with the
/// secret that signed it (here the second of a rotation list), which the library verifies; it
/// is never delivered, and an unsigned challenge gets 401.
#[actix_web::test]
async fn standard_webhooks_endpoint_verification_is_answered_as_the_library_checks_it() {
    let (old, new) = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    );
    let python = python_with(&["standardwebhooks==1.3.0"]);
    let run = |input: Value| -> Value {
        serde_json::from_str(&run_python(&python, STANDARD_CHALLENGE, &input.to_string())).unwrap()
    };
    let (h, module) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "standard_webhooks", "secret": [old, new]}}));
    let challenge = "5E6REeVL-22_blMk3eLQZsVg264gd-zO";
    let signed = run(json!({"secret": new, "id": "msg_challenge_1"}));
    let request = post_bytes("/webhook/a/w", "")
        .insert_header(("webhook-id", "msg_challenge_1"))
        .insert_header((
            "webhook-timestamp",
            signed["ts"].as_str().unwrap().to_owned(),
        ))
        .insert_header((
            "webhook-signature",
            signed["sig"].as_str().unwrap().to_owned(),
        ))
        .insert_header(("webhook-challenge", challenge));
    let (status, headers, body) = call_text(&h, request).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let answer = headers
        .get("webhook-challenge-response")
        .expect("the challenge is answered")
        .to_str()
        .unwrap()
        .to_owned();
    let checked = run(json!({"secret": new, "challenge": challenge, "answer": answer}));
    assert_eq!(checked["verified"], true, "{checked}");
    let with_old = run(json!({"secret": old, "challenge": challenge, "answer": answer}));
    assert_eq!(
        with_old["verified"], false,
        "keyed with the secret that signed it"
    );
    // Unsigned: refused like any request.
    let unsigned = post_bytes("/webhook/a/w", "").insert_header(("webhook-challenge", challenge));
    assert_eq!(call_text(&h, unsigned).await.0, StatusCode::UNAUTHORIZED);
    assert!(module.taken().is_empty(), "a challenge is never delivered");
}

/// A Slack slash command: a form body signed by `slack_sdk` over its raw bytes, handed on as it
/// came but for Slack's legacy verification `token`, masked by `credential_cleanup`.
#[actix_web::test]
async fn a_slack_slash_command_form_is_verified_raw_and_its_legacy_token_masked() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let python = python_with(&["slack_sdk"]);
    let (h, module) = one_webhook(json!({"module": "log", "data_type": "form",
        "hmac": {"provider": "slack", "secret": secret}, "credential_cleanup": {}}));
    // Slack's documented example body.
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let out: Value = serde_json::from_str(&run_python(
        &python,
        SLACK_SIGN,
        &json!({"secret": secret, "body": body}).to_string(),
    ))
    .unwrap();
    let request = post_bytes("/webhook/a/w", body)
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .insert_header((
            "x-slack-request-timestamp",
            out["ts"].as_str().unwrap().to_owned(),
        ))
        .insert_header(("x-slack-signature", out["sig"].as_str().unwrap().to_owned()));
    assert_eq!(call_text(&h, request).await.0, StatusCode::OK);
    let delivered = module.taken();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&delivered[0].body),
        body.replace("token=xyzz0WbapA4vBCDEFasx0q6G", "token=***")
    );
    // Not form encoding: 400, nothing delivered.
    let raw = "team=caf\u{e9}";
    let out: Value = serde_json::from_str(&run_python(
        &python,
        SLACK_SIGN,
        &json!({"secret": secret, "body": raw}).to_string(),
    ))
    .unwrap();
    let request = post_bytes("/webhook/a/w", raw)
        .insert_header((
            "x-slack-request-timestamp",
            out["ts"].as_str().unwrap().to_owned(),
        ))
        .insert_header(("x-slack-signature", out["sig"].as_str().unwrap().to_owned()));
    let (status, _, answer) = call_text(&h, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("invalid_form"), "{answer}");
    assert_eq!(module.taken().len(), 1);
}

const ED25519_SIGN: &str = r#"
import json, sys, base64, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
c = json.load(sys.stdin)
k = Ed25519PrivateKey.generate()
raw = serialization.Encoding.Raw
pub = k.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
ts = str(int(time.time()))
sig = base64.b64encode(k.sign(f'{c["id"]}.{ts}.{c["body"]}'.encode())).decode()
print(json.dumps({"public": "whpk_" + base64.b64encode(pub).decode(), "ts": ts, "sig": "v1a," + sig}))
"#;

/// Standard Webhooks' asymmetric signatures: `v1a,<base64 Ed25519>` checked with a `whpk_`
/// public key (signed here by the `cryptography` package's Ed25519), alone or in a rotation list
/// beside a `whsec_` secret.
#[actix_web::test]
async fn standard_webhooks_v1a_ed25519_signatures_verify_with_a_whpk_key() {
    let python = python_with(&["cryptography"]);
    let body = r#"{"type":"invoice.paid"}"#;
    let out: Value = serde_json::from_str(&run_python(
        &python,
        ED25519_SIGN,
        &json!({"id": "msg_1", "body": body}).to_string(),
    ))
    .unwrap();
    let public = out["public"].as_str().unwrap();
    let request = |body: &str, sig: &str| {
        post_bytes("/webhook/a/w", body.to_owned())
            .insert_header(("webhook-id", "msg_1"))
            .insert_header(("webhook-timestamp", out["ts"].as_str().unwrap().to_owned()))
            .insert_header(("webhook-signature", sig.to_owned()))
    };
    let sig = out["sig"].as_str().unwrap();
    for secrets in [
        json!(public),
        json!(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", public]),
    ] {
        let (h, module) = one_webhook(json!({"module": "log",
            "hmac": {"provider": "standard_webhooks", "secret": secrets}}));
        assert_eq!(call_text(&h, request(body, sig)).await.0, StatusCode::OK);
        let with_v1 = format!("v1,AAAA {sig}");
        assert_eq!(
            call_text(&h, request(body, &with_v1)).await.0,
            StatusCode::OK
        );
        let tampered = r#"{"type":"invoice.void"}"#;
        assert_eq!(
            call_text(&h, request(tampered, sig)).await.0,
            StatusCode::UNAUTHORIZED
        );
        // The same bytes as a `v1` (HMAC) signature are not an Ed25519 one.
        let relabelled = sig.replacen("v1a,", "v1,", 1);
        assert_eq!(
            call_text(&h, request(body, &relabelled)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(module.taken().len(), 2);
    }
    let bad =
        json!({"module": "log", "hmac": {"provider": "standard_webhooks", "secret": "whpk_AAAA"}});
    assert!(switchyard::webhook::Webhook::from_value(bad).is_err());
}

const TWILIO_SIGN: &str = r#"
import json, sys
from twilio.request_validator import RequestValidator
c = json.load(sys.stdin)
v = RequestValidator(c["token"])
url = c["url"]
if c.get("json"):
    url = url + ("&" if "?" in url else "?") + "bodySHA256=" + v.compute_hash(c["body"])
    print(json.dumps({"url": url, "sig": v.compute_signature(url, {})}))
else:
    print(json.dumps({"url": url, "sig": v.compute_signature(url, c["params"])}))
"#;

/// Twilio signs the URL it called plus the sorted form parameters (or, for JSON, the URL with a
/// `bodySHA256` of the body), with HMAC-SHA1; signatures here come from the `twilio` library's
/// own `RequestValidator`. The URL is rebuilt from `Host` and a trusted proxy's
/// `X-Forwarded-Proto`, or set with `"url"` when a proxy rewrites the path.
#[actix_web::test]
async fn twilio_signatures_from_the_twilio_library_verify_over_the_called_url() {
    let token = "12345";
    let python = python_with(&["twilio"]);
    let sign = |input: Value| -> Value {
        serde_json::from_str(&run_python(&python, TWILIO_SIGN, &input.to_string())).unwrap()
    };
    let h = crate::support::inproc::harness_trusting("10.0.0.0/8");
    let module = RecordingModule::new();
    add(
        &h.cache,
        "a",
        "w",
        json!({"module": "log", "data_type": "form", "max_body_bytes": 4096,
            "hmac": {"provider": "twilio", "secret": token}}),
        &module,
    );
    let params = json!({"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030",
        "Digits": "1234", "From": "+12349013030", "To": "+18005551212"});
    let body = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    let signed = sign(json!({"token": token,
        "url": "https://mycompany.example/webhook/a/w?foo=1", "params": params}));
    let request = |sig: &str, proto: &str, peer: &str| {
        post_bytes("/webhook/a/w?foo=1", body)
            .insert_header(("host", "mycompany.example"))
            .insert_header(("x-forwarded-proto", proto.to_owned()))
            .insert_header(("x-twilio-signature", sig.to_owned()))
            .peer_addr(peer.parse().unwrap())
    };
    let sig = signed["sig"].as_str().unwrap();
    assert_eq!(
        call_text(&h, request(sig, "https", "10.0.0.1:5000"))
            .await
            .0,
        StatusCode::OK
    );
    // The scheme comes only from a trusted proxy: from anyone else the URL is http://, and
    // Twilio did not sign that.
    assert_eq!(
        call_text(&h, request(sig, "https", "192.0.2.7:5000"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_text(&h, request("AAAA", "https", "10.0.0.1:5000"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(module.taken().len(), 1);

    // `"dedup": true` uses the idempotency token Twilio sends, the same on each of its retries.
    let h = crate::support::inproc::harness_trusting("10.0.0.0/8");
    let module = RecordingModule::new();
    add(
        &h.cache,
        "a",
        "w",
        json!({"module": "log", "data_type": "form", "max_body_bytes": 4096, "dedup": true,
            "hmac": {"provider": "twilio", "secret": token}}),
        &module,
    );
    let with_token = |token: &str| {
        request(sig, "https", "10.0.0.1:5000")
            .insert_header(("i-twilio-idempotency-token", token.to_owned()))
    };
    let mut words = Vec::new();
    for token in ["8a4f2a1c-retry", "8a4f2a1c-retry", "another-callback"] {
        let (status, _, body) = call_text(&h, with_token(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        words.push(serde_json::from_str::<Value>(&body).unwrap()["status"].clone());
    }
    assert_eq!(words, ["accepted", "duplicate", "accepted"]);
    assert_eq!(module.taken().len(), 2);

    // A proxy rewrote the path: the URL configured in Twilio is given.
    let (h, module) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "twilio", "secret": token, "url": "https://api.example/twilio"}}));
    // JSON: Twilio signs the URL with the body's hash in `bodySHA256`.
    let json_body = r#"{"event":"message.added"}"#;
    let signed = sign(json!({"token": token, "url": "https://api.example/twilio",
        "json": true, "body": json_body}));
    let query = signed["url"]
        .as_str()
        .unwrap()
        .split_once('?')
        .unwrap()
        .1
        .to_owned();
    let json_request = |body: &str| {
        post_bytes(&format!("/webhook/a/w?{query}"), body.to_owned())
            .insert_header(("host", "internal:8080"))
            .insert_header((
                "x-twilio-signature",
                signed["sig"].as_str().unwrap().to_owned(),
            ))
    };
    assert_eq!(
        call_text(&h, json_request(json_body)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call_text(&h, json_request(r#"{"event":"message.removed"}"#))
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "the body no longer matches bodySHA256"
    );
    assert_eq!(module.taken().len(), 1);
}

/// PagerDuty v3 (no official library outside Go: the documented construction, and its test
/// vector from the Python verifier in PagerDuty's docs): `X-PagerDuty-Signature` holds one
/// `v1=<hex>` per active secret, any of which verifies; `"dedup": true` uses `X-Webhook-Id`.
/// Intercom: `X-Hub-Signature: sha1=<hex>` with the client secret (no SDK helper exists).
#[actix_web::test]
async fn pagerduty_and_intercom_presets_verify_their_documented_signatures() {
    let body = r#"{"hello":"world"}"#;
    let pagerduty = "v1=b2bc0dc11dc2f6660962277f11227dd62fc1a2b09349b19a81f0bfeb3e7877ff,v1=b49d36bd54b7e53324cb5cf6460a5e73bd4053eded3017b63a4f8e0dd8be3463";
    for secret in ["s1", "s2"] {
        let (h, module) = one_webhook(json!({"module": "log", "dedup": true,
            "hmac": {"provider": "pagerduty", "secret": secret}}));
        let request = |signature: &str, id: &str| {
            post_bytes("/webhook/a/w", body)
                .insert_header(("x-pagerduty-signature", signature.to_owned()))
                .insert_header(("x-webhook-id", id.to_owned()))
        };
        let mut words = Vec::new();
        for id in ["wh-1", "wh-1", "wh-2"] {
            let (status, _, answer) = call_text(&h, request(pagerduty, id)).await;
            assert_eq!(status, StatusCode::OK, "{secret}: {answer}");
            words.push(serde_json::from_str::<Value>(&answer).unwrap()["status"].clone());
        }
        assert_eq!(words, ["accepted", "duplicate", "accepted"], "{secret}");
        let wrong = "v1=0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(
            call_text(&h, request(wrong, "wh-3")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(module.taken().len(), 2);
    }
    let (h, module) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "intercom", "secret": "secret"}}));
    let signed = |signature: &str| {
        post_bytes("/webhook/a/w", body).insert_header(("x-hub-signature", signature.to_owned()))
    };
    assert_eq!(
        call_text(&h, signed("sha1=c9bd3c44a91cfe176f71afcc1e08240555f0ce8b"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call_text(&h, signed("sha1=c9bd3c44a91cfe176f71afcc1e08240555f0ce8c"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(module.taken().len(), 1);
}

/// Trello signs the body followed by the callback URL exactly as registered (with its query),
/// base64 HMAC-SHA1 with the app's OAuth secret. Trello has no library that signs: the request
/// below was built by Trello's documented construction and checked with Trello's documented
/// Node verifier (non-ASCII body included). Trello checks the URL with a `HEAD` first.
#[actix_web::test]
async fn trello_requests_verify_over_the_registered_callback_url() {
    use actix_web::test::TestRequest;
    let secret = "trello-oauth1-app-secret";
    let body = r#"{"action":{"id":"51f9424bcd6e040f3c002412","type":"updateCard","data":{"card":{"name":"Café – plan"}}},"model":{"id":"4d5ea62fd76aa1136000000c"}}"#;
    let signature = "dHXvJ55LGC4K2p0fIVWADsJ4fSQ=";
    let (h, module) = one_webhook(json!({"module": "log", "dedup": true,
        "hmac": {"provider": "trello", "secret": secret,
                 "url": "https://hooks.example.com/trello/cb?board=1"}}));
    let head = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/webhook/a/w");
    let (status, _, text) = call_text(&h, head).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, ""));
    let signed = |sig: &str, body: &str| {
        post_bytes("/webhook/a/w?board=1", body.to_owned())
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-trello-webhook", sig.to_owned()))
    };
    let mut words = Vec::new();
    for _ in 0..2 {
        let (status, _, text) = call_text(&h, signed(signature, body)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        words.push(serde_json::from_str::<Value>(&text).unwrap()["status"].clone());
    }
    // `"dedup": true` keys on the action's id: Trello's retry of one action is not delivered
    // twice.
    assert_eq!(words, ["accepted", "duplicate"]);
    assert_eq!(module.taken().len(), 1);
    let altered = body.replace("plan", "plans");
    assert_eq!(
        call_text(&h, signed(signature, &altered)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Registered without the query: the same signature is not Trello's.
    let (h, _) = one_webhook(json!({"module": "log",
        "hmac": {"provider": "trello", "secret": secret,
                 "url": "https://hooks.example.com/trello/cb"}}));
    let request = post_bytes("/webhook/a/w", body.to_owned())
        .insert_header(("x-trello-webhook", signature.to_owned()));
    assert_eq!(call_text(&h, request).await.0, StatusCode::UNAUTHORIZED);
    // A webhook without the preset does not answer HEAD.
    let (h, _) = one_webhook(json!({"module": "log"}));
    let head = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/webhook/a/w");
    assert_eq!(call_text(&h, head).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

const LINEAR_VERIFY: &str = r#"
import { LinearWebhookClient } from "@linear/sdk/webhooks";
import fs from "node:fs";
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const client = new LinearWebhookClient(cases.secret);
console.log(JSON.stringify(cases.requests.map((r) => {
  try { return client.verify(Buffer.from(r.body), r.signature) === true; } catch { return false; }
})));
"#;

/// Linear signs the body (hex HMAC-SHA256 in `Linear-Signature`) and puts a millisecond
/// `webhookTimestamp` in it that must be within a minute. `@linear/sdk` 98.0.0 only verifies:
/// the requests are built by hand, the SDK's `LinearWebhookClient.verify` says which are
/// Linear's, and Switchyard must accept exactly those.
#[actix_web::test]
async fn linear_requests_are_accepted_exactly_when_linears_sdk_accepts_them() {
    let secret = "lin_wh_test_secret";
    let node = crate::support::sdk::node_with(&["@linear/sdk@98.0.0"]);
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let body = |ts: Option<i64>| {
        let mut event = json!({"action": "create", "type": "Issue", "organizationId": "org_1",
            "webhookId": "wh_1", "data": {"id": "issue_1", "title": "Hello"}});
        if let Some(ts) = ts {
            event["webhookTimestamp"] = json!(ts);
        }
        event.to_string()
    };
    let sign = |body: &str| hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()]));
    let mut requests = Vec::new();
    for (ts, signature_of) in [
        (Some(now_ms), None),
        (Some(now_ms - 45_000), None),
        (Some(now_ms - 75_000), None),
        (Some(now_ms + 75_000), None),
        (None, None),
        (Some(now_ms), Some("another body")),
    ] {
        let body = body(ts);
        let signature = sign(signature_of.unwrap_or(&body));
        requests.push(json!({"body": body, "signature": signature}));
    }
    let verdicts: Vec<bool> = serde_json::from_str(&crate::support::sdk::run_node(
        &node,
        LINEAR_VERIFY,
        &json!({"secret": secret, "requests": requests}).to_string(),
    ))
    .unwrap();
    assert_eq!(verdicts, [true, true, false, false, false, false]);
    let (h, module) = one_webhook(
        json!({"module": "log", "dedup": true, "hmac": {"provider": "linear", "secret": secret}}),
    );
    for (i, (request, linear_accepts)) in requests.iter().zip(&verdicts).enumerate() {
        let post = post_bytes("/webhook/a/w", request["body"].as_str().unwrap().to_owned())
            .insert_header(("linear-signature", request["signature"].as_str().unwrap()))
            .insert_header(("linear-event", "Issue"))
            .insert_header(("linear-delivery", format!("delivery-{i}")));
        let (status, _, text) = call_text(&h, post).await;
        let expected = if *linear_accepts {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, expected, "request {i}: {text}");
    }
    assert_eq!(module.taken().len(), 2);
    // `"dedup": true` keys on `Linear-Delivery`.
    let again = post_bytes(
        "/webhook/a/w",
        requests[0]["body"].as_str().unwrap().to_owned(),
    )
    .insert_header((
        "linear-signature",
        requests[0]["signature"].as_str().unwrap(),
    ))
    .insert_header(("linear-delivery", "delivery-0"));
    let (_, _, text) = call_text(&h, again).await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["status"],
        "duplicate"
    );
}

const MAILGUN_VERIFY: &str = r#"
import json, sys
from mailgun.security import SecurityGuard
c = json.load(sys.stdin)
print(json.dumps([SecurityGuard.verify_webhook(c["key"], r["token"], r["timestamp"], r["signature"])
                  for r in c["requests"]]))
"#;

/// Mailgun signs timestamp + token (hex HMAC-SHA256 with the webhook signing key) and sends the
/// signature in the body: a `signature` object in JSON, or form fields for legacy webhooks.
/// The official `mailgun` 1.10.0 SDK only verifies (`SecurityGuard.verify_webhook`, 15 minutes
/// either way): Switchyard must accept exactly what it accepts, in both encodings.
#[actix_web::test]
async fn mailgun_requests_are_accepted_exactly_when_mailguns_sdk_accepts_them() {
    let key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    let python = python_with(&["mailgun==1.10.0"]);
    let now = unix_now();
    let mut requests = Vec::new();
    for (i, (timestamp, sign_with)) in [
        (now, key),
        (now - 850, key),
        (now - 950, key),
        (now + 950, key),
        (now, "another-key"),
    ]
    .into_iter()
    .enumerate()
    {
        let timestamp = timestamp.to_string();
        let token = format!("{i}e0b5d6c1a9f84d7b8f2c3a1e0d9c8b7a6f5e4d3c2b1a0f9e8d7");
        let signature = hex::encode(hmac_sha256(
            sign_with.as_bytes(),
            &[timestamp.as_bytes(), token.as_bytes()],
        ));
        requests.push(json!({"timestamp": timestamp, "token": token, "signature": signature}));
    }
    let verdicts: Vec<bool> = serde_json::from_str(&run_python(
        &python,
        MAILGUN_VERIFY,
        &json!({"key": key, "requests": requests}).to_string(),
    ))
    .unwrap();
    assert_eq!(verdicts, [true, true, false, false, false]);
    let (json_hook, json_module) =
        one_webhook(json!({"module": "log", "hmac": {"provider": "mailgun", "secret": key}}));
    let (form_hook, form_module) = one_webhook(json!({"module": "log", "data_type": "form",
        "hmac": {"provider": "mailgun", "secret": key}}));
    for (i, (signed, mailgun_accepts)) in requests.iter().zip(&verdicts).enumerate() {
        let expected = if *mailgun_accepts {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        let event = json!({"signature": signed, "event-data": {"event": "delivered",
            "id": format!("CPgfbmQMTCKtHW6uIWtuV{i}"), "recipient": "alice@example.com"}});
        let (status, _, text) =
            call_text(&json_hook, post_bytes("/webhook/a/w", event.to_string())).await;
        assert_eq!(status, expected, "JSON request {i}: {text}");
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("event", "delivered")
            .append_pair("recipient", "alice@example.com")
            .append_pair("timestamp", signed["timestamp"].as_str().unwrap())
            .append_pair("token", signed["token"].as_str().unwrap())
            .append_pair("signature", signed["signature"].as_str().unwrap())
            .finish();
        let request = post_bytes("/webhook/a/w", form)
            .insert_header(("content-type", "application/x-www-form-urlencoded"));
        let (status, _, text) = call_text(&form_hook, request).await;
        assert_eq!(status, expected, "form request {i}: {text}");
    }
    assert_eq!(json_module.taken().len(), 2);
    assert_eq!(form_module.taken().len(), 2);
    // No signature at all.
    let unsigned = json!({"event-data": {"event": "delivered"}}).to_string();
    assert_eq!(
        call_text(&json_hook, post_bytes("/webhook/a/w", unsigned))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}
