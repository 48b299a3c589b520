//! Graceful shutdown: in-flight requests finish, then the application stops.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{app::file_settings, TestApp};

#[tokio::test]
async fn stop_lets_the_application_finish_and_return() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("webhooks.json"),
        r#"{"x":{"module":"log"}}"#,
    )
    .unwrap();
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    assert_eq!(app.status_of("x").await, StatusCode::OK);
    let port = app.port;
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("stops within the grace period");
    // The port no longer accepts connections.
    let refused = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(refused.is_err());
}
