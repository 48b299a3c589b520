//! The file backend: serves out of the box, reloads live, keeps the last good config.

use std::{sync::atomic::Ordering, time::Duration};

use futures_util::stream;
use reqwest::StatusCode;

use crate::support::{app::file_settings, files::write, wait_until, TestApp};

#[tokio::test]
async fn the_shipped_sample_config_serves_out_of_the_box() {
    let app = TestApp::spawn_ready(crate::support::app::settings()).await;
    assert_eq!(app.status_of("example").await, StatusCode::OK);
    let (_, health) = app.health().await;
    assert_eq!(health["config"]["backend"], "file");
    assert!(health["components"].get("etcd").is_none());
}

#[tokio::test]
async fn file_changes_apply_live_with_removals() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "webhooks.json", r#"{"old": {"module": "log"}}"#);
    write(
        dir.path(),
        "connections.json",
        r#"{"r": {"type": "redis", "host": "localhost"}}"#,
    );
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    assert_eq!(app.status_of("old").await, StatusCode::OK);
    assert_eq!(app.status_of("default/old").await, StatusCode::OK);
    assert_eq!(app.health().await.1["config"]["revision"], 1);

    write(dir.path(), "webhooks.json", r#"{"new": {"module": "log"}}"#);
    app.wait_status("new", StatusCode::OK).await;
    assert_eq!(app.status_of("old").await, StatusCode::NOT_FOUND);

    // In-place writes are seen too.
    std::fs::write(dir.path().join("connections.json"), "{}").unwrap();
    wait_until(Duration::from_secs(10), "connection removed", || async {
        app.health().await.1["config"]["connections"] == 0
    })
    .await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "webhooks.json", r#"{"a": {"module": "log"}}"#);
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    let revision = app.health().await.1["config"]["revision"].clone();

    write(dir.path(), "webhooks.json", r#"{"a": {"module": "log"}, "#);
    wait_until(
        Duration::from_secs(10),
        "the broken file to be read",
        || async { app.stats().rejected_loads.load(Ordering::Relaxed) >= 1 },
    )
    .await;
    assert_eq!(app.status_of("a").await, StatusCode::OK);
    assert_eq!(app.health().await.1["config"]["revision"], revision);

    write(dir.path(), "webhooks.json", r#"{"b": {"module": "log"}}"#);
    app.wait_status("b", StatusCode::OK).await;
    assert_eq!(app.status_of("a").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_invalid_entry_is_skipped_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "webhooks.json",
        r#"{"good": {"module": "log"}, "bad": {"module": "nope"}, "bad id!": {"module": "log"}}"#,
    );
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    assert_eq!(app.status_of("good").await, StatusCode::OK);
    assert_eq!(app.status_of("bad").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.stats().invalid_entries.load(Ordering::Relaxed), 2);

    // Breaking `good` later keeps its last good value.
    write(
        dir.path(),
        "webhooks.json",
        r#"{"good": {"module": "log", "extra": 1}, "marker": {"module": "log"}}"#,
    );
    app.wait_status("marker", StatusCode::OK).await;
    assert_eq!(app.status_of("good").await, StatusCode::OK);
    // The invalid entry is gone from the file: now it is simply not found.
    assert_eq!(app.status_of("bad").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "webhooks.json",
        r#"{"blob": {"module": "log", "data_type": "blob"}}"#,
    );
    let settings = crate::support::app::Settings {
        max_body_bytes: 1000,
        ..file_settings(dir.path())
    };
    let app = TestApp::spawn_ready(settings).await;
    // 64 chunks of 100 bytes, no Content-Length.
    let chunks = stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 100])));
    let response = app
        .client
        .post(app.url("/webhook/blob"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");

    // Declared too large: refused before reading.
    let response = app
        .client
        .post(app.url("/webhook/blob"))
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

async fn status_json(app: &TestApp) -> serde_json::Value {
    crate::support::get_json(&app.base(), "/status").await
}

#[tokio::test]
async fn a_missing_file_is_reported_in_health_and_status_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "webhooks.json", r#"{"w": {"module": "log"}}"#);
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    let (status, health) = app.health().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an empty connections file still serves"
    );
    assert_eq!(health["components"]["config_manager"], "no config file");
    let missing = status_json(&app).await["missing_files"].clone();
    assert!(
        missing.to_string().contains("connections.json"),
        "{missing}"
    );

    write(dir.path(), "connections.json", "{}");
    wait_until(
        Duration::from_secs(10),
        "config_manager healthy",
        || async { app.health().await.1["components"]["config_manager"] == "healthy" },
    )
    .await;
}

#[tokio::test]
async fn saving_a_file_rebuilds_only_the_connections_whose_value_changed() {
    let redis = crate::support::Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = r#"{"s": {"module": "redis_stream", "connection": "r", "module-config": {"stream": "keep"}}}"#;
    write(dir.path(), "webhooks.json", hooks);
    write(
        dir.path(),
        "connections.json",
        &format!(
            r#"{{"r": {}, "k": {{"type": "kafka", "bootstrap_servers": "k:9092",
                "client_config": {{"no.such.property": "1"}}}}}}"#,
            redis.connection()
        ),
    );
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    assert_eq!(app.status_of("s").await, StatusCode::OK);
    let status = status_json(&app).await;
    assert_eq!(status["connections"][0]["client"], "ready", "{status}");
    // librdkafka's refusal is reported when the entry is applied, not at the first request.
    let skipped = status["skipped"].to_string();
    assert!(
        skipped.contains("connections.json#k") && skipped.contains("no.such.property"),
        "{skipped}"
    );

    // Saving the webhooks file (a change elsewhere) keeps the live client.
    write(
        dir.path(),
        "webhooks.json",
        &hooks.replace("}}}", "}}, \"new\": {\"module\": \"log\"}}"),
    );
    app.wait_status("new", StatusCode::OK).await;
    let status = status_json(&app).await;
    assert_eq!(status["connections"][0]["name"], "r");
    assert_eq!(status["connections"][0]["client"], "ready", "{status}");
}

#[tokio::test]
async fn a_broken_file_at_start_up_says_what_is_true() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "webhooks.json", "{ not json");
    write(dir.path(), "connections.json", "{}");
    let router = crate::support::process::Router::start(dir.path(), &[]);
    router
        .wait_log("no config is loaded yet, so requests get 503 not_ready")
        .await;
    let client = reqwest::Client::new();
    let health = client.get(router.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer = client
        .post(router.url("/webhook/anything"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!router.logs().contains("the last good config keeps serving"));

    write(dir.path(), "webhooks.json", r#"{"w": {"module": "log"}}"#);
    router.wait_ready().await;
}

#[tokio::test]
async fn a_config_folder_created_after_start_is_watched_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config").join("live");
    let webhooks = config.join("webhooks.json");
    let connections = config.join("connections.json");
    let router = crate::support::process::Router::start(
        dir.path(),
        &[
            ("WEBHOOKS_CONFIG_FILE", webhooks.to_str().unwrap()),
            ("CONNECTIONS_CONFIG_FILE", connections.to_str().unwrap()),
        ],
    );
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let status = client
        .post(router.url("/webhook/late"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    // The folder (two levels of it) and the file appear later, as a deployment would mount them.
    std::fs::create_dir_all(&config).unwrap();
    crate::support::files::write_json(
        &config,
        "webhooks.json",
        &serde_json::json!({"late": {"module": "log"}}),
    );
    crate::support::wait_until(Duration::from_secs(10), "the late file loaded", || async {
        client
            .post(router.url("/webhook/late"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            == reqwest::StatusCode::OK
    })
    .await;
}
