//! The `http` module against real HTTP services on loopback (allowed with
//! `HTTP_ALLOWED_NETWORKS`): the request as received, signed so the `standardwebhooks` library
//! verifies it; each kind of answer (2xx, 4xx, 5xx, slow, closed socket, redirect, 429) mapped
//! to the sender's answer or to the spool; a fan-out to two services with their own queues; and
//! the SSRF guard, which refuses this host's addresses however they are written.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{
    files::write_json,
    get_json,
    ports::free_port,
    process::Router,
    sdk::{python_with, run_python},
    service::{closing_port, Service},
    wait_until,
};

const LOOPBACK: (&str, &str) = ("HTTP_ALLOWED_NETWORKS", "127.0.0.0/8");
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(connections: Value, webhooks: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "connections.json", &connections);
    write_json(dir.path(), "webhooks.json", &webhooks);
    dir
}

/// An `http` webhook on connection `svc`, spool off unless `extra` says otherwise.
fn webhook(path: &str, extra: Value) -> Value {
    let mut entry = json!({"module": "http", "connection": "svc", "spool": "off",
        "module-config": {"path": path}});
    if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            entry.insert(key.clone(), value.clone());
        }
    }
    entry
}

/// The router on `dir` with the admin port (for `/spool`) and a short handoff; returns it and
/// the admin base URL.
async fn start_spooled(dir: &tempfile::TempDir) -> (Router, String) {
    let admin_port = free_port().to_string();
    let router = Router::start(
        dir.path(),
        &[
            LOOPBACK,
            ("ADMIN_PORT", admin_port.as_str()),
            ("SPOOL_HANDOFF_MS", "500"),
        ],
    );
    router.wait_ready().await;
    (router, format!("http://127.0.0.1:{admin_port}"))
}

async fn post(router: &Router, webhook: &str, body: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(router.url(&format!("/webhook/{webhook}")))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", "sha256=not-for-the-service")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
c = json.load(sys.stdin)
try:
    Webhook(c["secret"]).verify(c["body"], c["headers"])
    print("verified")
except Exception as e:
    print("refused: %s" % e)
"#;

#[tokio::test]
async fn a_webhook_reaches_the_service_as_received_with_its_metadata_and_a_verifiable_signature() {
    let service = Service::start();
    let dir = config(
        json!({"svc": {"type": "http", "base_url": format!("{}/api", service.url()),
                       "headers": {"x-api-key": "k-123"}}}),
        json!({"gh": {"module": "http", "connection": "svc", "spool": "off",
            "module-config": {"path": "/ok/hooks/gh?source=github",
                              "forward_headers": ["x-github-event", "X-Hub-Signature-256"],
                              "sign": {"scheme": "standard_webhooks", "secret": SECRET}}}}),
    );
    let router = Router::start(dir.path(), &[LOOPBACK]);
    router.wait_ready().await;
    let body = "{\"ref\": \"main\",\n \"n\": 1}";
    let (status, answer) = post(&router, "gh", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let request_id = answer["request_id"].as_str().unwrap();

    let received = service.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let got = &received[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/api/ok/hooks/gh?source=github");
    assert_eq!(got.body, body.as_bytes(), "the body exactly as received");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("switchyard-request-id"), Some(request_id));
    assert_eq!(got.header("switchyard-namespace"), Some("default"));
    assert_eq!(got.header("switchyard-webhook"), Some("gh"));
    assert!(got.header("switchyard-received-at").is_some());
    assert_eq!(got.header("x-github-event"), Some("push"));
    assert_eq!(
        got.header("x-api-key"),
        Some("k-123"),
        "the connection's header"
    );
    assert_eq!(
        got.header("x-hub-signature-256"),
        None,
        "a credential header is never passed on, even when listed"
    );
    assert_eq!(got.header("webhook-id"), Some(request_id));

    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|name| ((*name).to_owned(), json!(got.header(name).unwrap())))
            .collect();
    let python = python_with(&["standardwebhooks"]);
    let verdict = run_python(
        &python,
        VERIFY,
        &json!({"secret": SECRET, "body": body, "headers": headers}).to_string(),
    );
    assert_eq!(verdict.trim(), "verified");
    let tampered = run_python(
        &python,
        VERIFY,
        &json!({"secret": SECRET, "body": "{\"ref\": \"evil\"}", "headers": headers}).to_string(),
    );
    assert!(tampered.starts_with("refused"), "{tampered}");
}

#[tokio::test]
async fn each_answer_maps_to_the_senders_answer_and_nothing_of_it_is_passed_back() {
    let service = Service::start();
    let closing = closing_port().await;
    let dir = config(
        json!({
            "svc": {"type": "http", "base_url": service.url(), "timeout_ms": 500},
            "closing": {"type": "http", "base_url": format!("http://127.0.0.1:{closing}")},
            "nobody": {"type": "http", "base_url": format!("http://127.0.0.1:{}", free_port())}
        }),
        json!({
            "ok": webhook("/ok", json!({})),
            "reject": webhook("/reject", json!({})),
            "fail": webhook("/fail", json!({})),
            "slow": webhook("/slow", json!({})),
            "redirect": webhook("/redirect", json!({})),
            "missing": webhook("/nothing-here", json!({})),
            "closing": webhook("/ok", json!({"connection": "closing"})),
            "nobody": webhook("/ok", json!({"connection": "nobody"})),
        }),
    );
    let router = Router::start(dir.path(), &[LOOPBACK]);
    router.wait_ready().await;

    for (webhook, status, code) in [
        ("ok", StatusCode::OK, None),
        (
            "reject",
            StatusCode::BAD_GATEWAY,
            Some("destination_rejected"),
        ),
        (
            "missing",
            StatusCode::BAD_GATEWAY,
            Some("destination_rejected"),
        ),
        (
            "redirect",
            StatusCode::BAD_GATEWAY,
            Some("destination_rejected"),
        ),
        (
            "fail",
            StatusCode::SERVICE_UNAVAILABLE,
            Some("destination_unavailable"),
        ),
        (
            "slow",
            StatusCode::SERVICE_UNAVAILABLE,
            Some("destination_unavailable"),
        ),
        (
            "closing",
            StatusCode::SERVICE_UNAVAILABLE,
            Some("destination_unavailable"),
        ),
        (
            "nobody",
            StatusCode::SERVICE_UNAVAILABLE,
            Some("destination_unavailable"),
        ),
    ] {
        let started = std::time::Instant::now();
        let (got, answer) = post(&router, webhook, r#"{"a":1}"#).await;
        assert_eq!(got, status, "{webhook}: {answer}");
        assert_eq!(answer["error"].as_str(), code, "{webhook}: {answer}");
        let text = answer.to_string();
        for leaked in ["order 42", "boom", "redirected", "thanks"] {
            assert!(
                !text.contains(leaked),
                "{webhook} leaked the answer: {text}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{webhook} took {:?} (the connection's timeout is 500 ms)",
            started.elapsed()
        );
    }
    assert!(
        service.received_on("/ok/redirected").is_empty(),
        "a redirect is never followed"
    );
    let logs = router.logs();
    assert!(
        logs.contains("answered 400 Bad Request: order 42 is unknown"),
        "the operator sees the service's answer in the log"
    );
}

#[tokio::test]
async fn with_the_spool_outages_are_retried_429_waits_and_refusals_are_dead_letters() {
    let service = Service::start();
    let dir = config(
        json!({"svc": {"type": "http", "base_url": service.url()}}),
        json!({
            "flaky": webhook("/flaky", json!({"spool": "on_failure"})),
            "throttle": webhook("/throttle", json!({"spool": "on_failure"})),
            "reject": webhook("/reject", json!({"spool": "on_failure"})),
        }),
    );
    let (router, admin) = start_spooled(&dir).await;

    let (status, _) = post(&router, "flaky", r#"{"n":"flaky"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a 503 is stored and retried");
    let (status, _) = post(&router, "throttle", r#"{"n":"throttle"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = post(&router, "reject", r#"{"n":"reject"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    wait_until(Duration::from_secs(20), "the 429 retried", || async {
        service.received_on("/throttle").len() == 2
    })
    .await;
    let throttled = service.received_on("/throttle");
    let gap = throttled[1].at - throttled[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 is honoured, the retry came after {gap:?}"
    );

    wait_until(
        Duration::from_secs(20),
        "the refusal in the dead letters",
        || async { get_json(&admin, "/spool").await["dead_letters"] == 1 },
    )
    .await;
    let letters = get_json(&admin, "/spool/dead-letters").await;
    let letter = &letters[0];
    assert_eq!(letter["attempts"], 1, "never retried: {letter}");
    assert!(
        letter["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("400") && e.contains("order 42 is unknown")),
        "{letter}"
    );
    assert_eq!(service.received_on("/reject").len(), 1);

    // Still down, then up: delivered once, in the same body.
    assert!(
        service.received_on("/flaky").len() >= 2,
        "retried while down"
    );
    service.set_up();
    wait_until(
        Duration::from_secs(30),
        "the flaky service delivered",
        || async { get_json(&admin, "/spool").await["backlog"] == 0 },
    )
    .await;
    let flaky = service.received_on("/flaky");
    assert_eq!(flaky.last().unwrap().body, br#"{"n":"flaky"}"#);
}

#[tokio::test]
async fn a_chain_fans_out_to_two_services_each_with_its_own_queue() {
    let up = Service::start();
    let down = Service::start();
    let dir = config(
        json!({"up": {"type": "http", "base_url": up.url()},
               "down": {"type": "http", "base_url": down.url()}}),
        json!({"fan": {"chain": [
            {"module": "http", "connection": "up", "module-config": {"path": "/ok/a"}},
            {"module": "http", "connection": "down", "module-config": {"path": "/flaky"}}
        ], "chain-config": {"execution": "parallel"}}}),
    );
    let (router, admin) = start_spooled(&dir).await;
    let (status, _) = post(&router, "fan", r#"{"fan":1}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let spool = get_json(&admin, "/spool").await;
    let queues: Vec<&str> = spool["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["depth"] == 1)
        .filter_map(|q| q["destination"].as_str())
        .collect();
    assert_eq!(queues, ["default/fan:http@down//flaky"], "{spool}");
    down.set_up();
    wait_until(
        Duration::from_secs(30),
        "the second service delivered",
        || async { get_json(&admin, "/spool").await["backlog"] == 0 },
    )
    .await;
    assert_eq!(
        up.received_on("/ok/a").len(),
        1,
        "the first service got it once"
    );
    assert_eq!(
        down.received_on("/flaky").last().unwrap().body,
        br#"{"fan":1}"#
    );
}

#[tokio::test]
async fn this_hosts_addresses_are_refused_however_they_are_written() {
    let service = Service::start();
    let port = service.port;
    let dir = config(
        json!({
            "v4": {"type": "http", "base_url": format!("http://127.0.0.1:{port}")},
            "name": {"type": "http", "base_url": format!("http://localhost:{port}")},
            "mapped": {"type": "http", "base_url": format!("http://[::ffff:127.0.0.1]:{port}")},
            "decimal": {"type": "http", "base_url": format!("http://2130706433:{port}")},
            "metadata": {"type": "http", "base_url": "http://169.254.169.254"},
            "zero": {"type": "http", "base_url": format!("http://0.0.0.0:{port}")},
        }),
        json!({
            "v4": webhook("/ok", json!({"connection": "v4"})),
            "name": webhook("/ok", json!({"connection": "name"})),
            "mapped": webhook("/ok", json!({"connection": "mapped"})),
            "decimal": webhook("/ok", json!({"connection": "decimal"})),
            "metadata": webhook("/latest/meta-data/", json!({"connection": "metadata"})),
            "zero": webhook("/ok", json!({"connection": "zero"})),
        }),
    );
    // The default networks first, then a list that leaves loopback out.
    for env in [vec![], vec![("HTTP_ALLOWED_NETWORKS", "10.0.0.0/8")]] {
        let router = Router::start(dir.path(), &env);
        router.wait_ready().await;
        for webhook in ["v4", "name", "mapped", "decimal", "metadata", "zero"] {
            let started = std::time::Instant::now();
            let (status, answer) = post(&router, webhook, "{}").await;
            assert_eq!(
                status,
                StatusCode::BAD_GATEWAY,
                "{webhook} {env:?}: {answer}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{webhook}: no wait"
            );
        }
        assert!(service.received().is_empty(), "nothing reached the service");
        assert!(
            router.logs().contains("HTTP_ALLOWED_NETWORKS refuses"),
            "the log says why"
        );
    }
}

#[tokio::test]
async fn a_path_that_could_leave_the_base_url_makes_the_entry_invalid() {
    let service = Service::start();
    let dir = config(
        json!({"svc": {"type": "http", "base_url": service.url(), "target_prefix": "/ok/"}}),
        json!({
            "escape": webhook("//evil.example/x", json!({})),
            "dots": webhook("/ok/%2e%2e/admin", json!({})),
            "outside": webhook("/admin", json!({})),
            "inside": webhook("/ok/fine", json!({})),
        }),
    );
    let router = Router::start(dir.path(), &[LOOPBACK]);
    router.wait_ready().await;
    let status = get_json(&router.base(), "/status").await;
    let skipped = status["skipped"].to_string();
    for key in ["escape", "dots", "outside"] {
        assert!(skipped.contains(key), "{key} is skipped: {skipped}");
    }
    for webhook in ["escape", "dots", "outside"] {
        let (status, _) = post(&router, webhook, "{}").await;
        assert_ne!(status, StatusCode::OK, "{webhook}");
    }
    let (status, _) = post(&router, "inside", "{}").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(service.received().len(), 1);
    assert_eq!(service.received()[0].path, "/ok/fine");
}
