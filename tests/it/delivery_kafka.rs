//! Kafka delivery against a real Kafka-protocol broker (tansu): records, keys, headers,
//! partitions, and a broker outage in the middle of a steady stream.

use crate::support::Freeze as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::files::write_json,
    support::{app::file_settings, load::Load, Kafka, TestApp},
    unique,
};

async fn app_with(kafka: &Kafka, webhooks: Value) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let connection: Value = serde_json::from_str(&kafka.connection()).unwrap();
    write_json(dir.path(), "connections.json", &json!({ "k": connection }));
    write_json(dir.path(), "webhooks.json", &webhooks);
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    (app, dir)
}

#[tokio::test]
async fn kafka_record_is_the_exact_body_with_key_and_metadata_headers() {
    let kafka = Kafka::start().await;
    let topic = unique!("events");
    kafka.create_topic(&topic, 3).await;
    let (app, _dir) = app_with(
        &kafka,
        json!({
            "gh": {"module": "kafka", "connection": "k", "module-config": {
                "topic": topic, "key": {"json_pointer": "/repository/id"},
                "forward_headers": ["X-GitHub-Event", "Authorization"]}},
            "hdr": {"module": "kafka", "connection": "k", "module-config": {
                "topic": topic, "key": {"header": "X-GitHub-Delivery"}, "partition": 2}},
        }),
    )
    .await;

    let body = r#"{"repository": {"id": 42},   "action": "push"}"#;
    let response = app
        .client
        .post(app.url("/webhook/gh"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("authorization", "Bearer secret")
        .header("x-request-id", "req-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .post(app.url("/webhook/default/hdr"))
        .header("x-github-delivery", "d-77")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let records = kafka.consume(&topic, 3, 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let gh = records.iter().find(|r| r.value == body.as_bytes()).unwrap();
    assert_eq!(gh.key.as_deref(), Some(&b"42"[..]));
    assert_eq!(gh.header("switchyard-namespace"), Some("default"));
    assert_eq!(gh.header("switchyard-webhook"), Some("gh"));
    assert_eq!(gh.header("switchyard-request-id"), Some("req-1"));
    assert!(gh.header("switchyard-received-at").unwrap().ends_with('Z'));
    assert_eq!(gh.header("content-type"), Some("application/json"));
    assert_eq!(gh.header("x-github-event"), Some("push"));
    assert_eq!(
        gh.header("authorization"),
        None,
        "credentials are never forwarded"
    );

    let hdr = records.iter().find(|r| r.value == b"{}").unwrap();
    assert_eq!(hdr.key.as_deref(), Some(&b"d-77"[..]));
    assert_eq!(hdr.partition, 2);
    assert_eq!(hdr.header("switchyard-webhook"), Some("hdr"));
}

#[tokio::test]
async fn unknown_topic_is_a_503_not_a_lost_payload() {
    let kafka = Kafka::start().await;
    let (app, _dir) = app_with(
        &kafka,
        json!({"w": {"module": "kafka", "connection": "k", "timeout_ms": 1500,
                     "module-config": {"topic": "does-not-exist"}}}),
    )
    .await;
    let response = app.post_webhook("w", &json!({})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "destination_unavailable");
}

#[tokio::test]
async fn broker_outage_loses_nothing_that_was_acknowledged() {
    let kafka = Kafka::start().await;
    let topic = unique!("stream");
    kafka.create_topic(&topic, 1).await;
    let (app, _dir) = app_with(
        &kafka,
        json!({"w": {"module": "kafka", "connection": "k", "timeout_ms": 1000,
                     "module-config": {"topic": topic}}}),
    )
    .await;
    const TOTAL: usize = 400;
    let load = Load::start(app.url("/webhook/w"), TOTAL, 4, |seq| {
        format!(r#"{{"seq": {seq}}}"#)
    });
    load.wait_acknowledged(50).await;
    kafka.pause();
    load.wait_refused(4).await;
    kafka.resume();
    let outcome = load.finish().await;
    assert_eq!(outcome.sent.len(), TOTAL);
    // Refused records may still land later (at-least-once), so read at least the accepted ones.
    let records = kafka.consume(&topic, 1, outcome.acknowledged().len()).await;
    let stored: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    outcome.assert_all_acknowledged_are_stored(&stored, "kafka outage");
    assert!(outcome.refused() >= 4);
    assert!(outcome.acknowledged().len() > 50);
}
