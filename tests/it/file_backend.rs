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
    assert_eq!(app.status_of("bad").await, StatusCode::NOT_FOUND);
    assert_eq!(app.stats().invalid_entries.load(Ordering::Relaxed), 2);

    // Breaking `good` later keeps its last good value.
    write(
        dir.path(),
        "webhooks.json",
        r#"{"good": {"module": "log", "extra": 1}, "marker": {"module": "log"}}"#,
    );
    app.wait_status("marker", StatusCode::OK).await;
    assert_eq!(app.status_of("good").await, StatusCode::OK);
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
