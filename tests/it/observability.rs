//! `/metrics` and `/status` against a real etcd: what an on-call engineer looks at.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::{app::etcd_settings, wait_until, Etcd, TestApp},
    unique,
};

async fn get_text(app: &TestApp, path: &str) -> String {
    app.client
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `log` module's line for the first webhook `router` received, once it is written.
async fn payload_line(router: &crate::support::process::Router) -> String {
    router.wait_log("Webhook received.").await;
    router
        .logs()
        .lines()
        .find(|l| l.contains("Webhook received."))
        .map(str::to_owned)
        .unwrap_or_default()
}

async fn status(app: &TestApp) -> Value {
    crate::support::get_json(&app.base(), "/status").await
}

#[tokio::test]
async fn status_answers_did_my_change_take_effect_without_leaking_secrets() {
    let etcd = Etcd::start().await;
    let p = format!("/{}/", unique!("cwm"));
    etcd.put(&format!("{p}acme/webhooks/ok"), r#"{"module":"log"}"#)
        .await;
    etcd.put(
        &format!("{p}acme/webhooks/broken"),
        &json!({"module": "log", "hmac": {"secret": "TOPSECRET", "provider": "gitlab"}})
            .to_string(),
    )
    .await;
    etcd.put(
        &format!("{p}global/connections/cache"),
        &json!({"type": "redis", "host": "127.0.0.1", "port": 1, "password": "REDISPW"})
            .to_string(),
    )
    .await;
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;

    let s = status(&app).await;
    assert_eq!(s["backend"], "etcd");
    assert_eq!(s["etcd"], "healthy");
    assert_eq!(s["revision"], etcd.revision().await);
    assert!(s["applied_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["skipped"][0]["key"], format!("{p}acme/webhooks/broken"));
    assert!(s["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("gitlab"));
    assert_eq!(
        s["connections"],
        json!([{"name": "cache", "type": "redis", "client": "not_started"}])
    );
    let text = s.to_string();
    assert!(
        !text.contains("TOPSECRET") && !text.contains("REDISPW"),
        "{text}"
    );

    // Fixing the entry clears it from the skipped list as soon as it is applied.
    let fixed = etcd
        .put(&format!("{p}acme/webhooks/broken"), r#"{"module":"log"}"#)
        .await;
    wait_until(
        std::time::Duration::from_secs(10),
        "fix applied",
        || async { status(&app).await["revision"] == fixed },
    )
    .await;
    assert_eq!(status(&app).await["skipped"], json!([]));
}

#[tokio::test]
async fn metrics_count_requests_and_expose_config_and_etcd_state() {
    let etcd = Etcd::start().await;
    let p = format!("/{}/", unique!("cwm"));
    etcd.put(&format!("{p}acme/webhooks/a"), r#"{"module":"log"}"#)
        .await;
    etcd.put(&format!("{p}acme/webhooks/bad"), "{").await;
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    for _ in 0..3 {
        assert_eq!(app.status_of("acme/a").await, StatusCode::OK);
    }
    assert_eq!(app.status_of("acme/nope").await, StatusCode::NOT_FOUND);

    let text = get_text(&app, "/metrics").await;
    for expected in [
        r#"switchyard_requests_total{namespace="acme",status="200",webhook="a"} 3"#,
        // Ids that name no webhook share `_other`: made-up ids cannot take label slots.
        r#"switchyard_requests_total{namespace="_other",status="404",webhook="_other"} 1"#,
        r#"switchyard_delivery_duration_seconds_count{module="log",result="ok"} 3"#,
        r#"switchyard_config_entries{kind="webhook"} 1"#,
        "switchyard_etcd_connected 1",
        "switchyard_config_full_loads_total 1",
        "switchyard_config_invalid_entries 1",
        "switchyard_deliveries_in_flight 0",
        &format!("switchyard_config_revision {}", etcd.revision().await),
        "switchyard_request_duration_seconds_bucket",
        "switchyard_etcd_seconds_since_last_event",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

/// The `log` module logs the request headers it is told to (GitHub's event type lives only in
/// `X-GitHub-Event`), never a credential header, as one JSON field in both log formats.
#[tokio::test]
async fn the_log_module_logs_chosen_headers_but_never_credentials() {
    use crate::support::{files::write_json, process::Router};
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &serde_json::json!({"gh": {"module": "log", "module-config":
            {"headers": ["X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256"]}}}),
    );
    write_json(dir.path(), "connections.json", &serde_json::json!({}));
    for format in ["text", "json"] {
        let router = Router::start(dir.path(), &[("LOG_FORMAT", format)]);
        router.wait_ready().await;
        let response = reqwest::Client::new()
            .post(router.url("/webhook/gh"))
            .header("X-GitHub-Event", "pull_request")
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("X-Hub-Signature-256", "sha256=not-for-logs")
            .body(r#"{"action":"opened"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let line = payload_line(&router).await;
        let logs = router.logs();
        assert!(line.contains("pull_request"), "{format}: {line}");
        assert!(
            line.contains("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "{format}: {line}"
        );
        assert!(!logs.contains("not-for-logs"), "{format}: {line}");
    }
}

#[tokio::test]
async fn pretty_printed_bodies_and_logged_headers_read_as_the_readme_says() {
    use crate::support::{files::write_json, process::Router};
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"p": {"module": "log", "module-config":
            {"pretty_print": true, "headers": ["X-GitHub-Event"]}}}),
    );
    write_json(dir.path(), "connections.json", &json!({}));
    let router = Router::start(dir.path(), &[("LOG_FORMAT", "json")]);
    router.wait_ready().await;
    let response = reqwest::Client::new()
        .post(router.url("/webhook/p"))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", "push")
        .body(r#"{"a":1,"b":[1,2]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let line = payload_line(&router).await;
    // One line, the body indented with its line breaks escaped.
    let entry: Value = serde_json::from_str(&line).unwrap();
    let body = entry["body"].as_str().unwrap();
    assert_eq!(body, "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ]\n}");
    // `headers`: one JSON object, names lower-cased.
    assert_eq!(entry["headers"], json!({"x-github-event": "push"}));
}

#[tokio::test]
async fn every_metric_the_alert_rules_and_the_dashboard_use_is_exposed() {
    use crate::support::{files::write_json, process::Router};
    let mut text = String::new();
    for file in ["prometheus/alerts.yml", "grafana/switchyard.json"] {
        let path = format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"));
        text.push_str(&std::fs::read_to_string(path).unwrap());
    }
    let mut used: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("switchyard_"))
        .map(|word| {
            // A histogram's series are named after it.
            ["_count", "_bucket", "_sum"]
                .iter()
                .fold(word.to_owned(), |w, suffix| {
                    w.strip_suffix(suffix).map_or(w.clone(), str::to_owned)
                })
        })
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    // A spooled request for a destination that is down, so the per-destination spool metrics
    // exist too.
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "connections.json",
        &json!({"down": {"type": "redis", "host": "127.0.0.1", "port": 1}}),
    );
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"w": {"module": "redis_stream", "connection": "down", "spool": "always",
                      "module-config": {"stream": "s"}}}),
    );
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let answer = client
        .post(router.url("/webhook/w"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let scrape = || async {
        client
            .get(router.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    wait_until(
        std::time::Duration::from_secs(10),
        "a failed delivery counted",
        || async {
            scrape().await.contains(
                "switchyard_delivery_duration_seconds_count{module=\"redis_stream\",result=\"error\"}",
            )
        },
    )
    .await;
    let exposed = scrape().await;
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exposed.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts use metrics that do not exist: {missing:?}"
    );
}
