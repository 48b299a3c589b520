//! Graceful shutdown behind a load balancer: `/health` drains first, in-flight deliveries finish
//! and are answered with their real outcome, then the process exits 0.

use crate::support::Freeze as _;
use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::{app::file_settings, files::write_json, process::Router, wait_until, Redis, TestApp},
    unique,
};

/// A router process with one `redis_stream` webhook `slow` (and a `log` webhook `fast`).
async fn router_with_redis(
    redis: &Redis,
    stream: &str,
    env: &[(&str, &str)],
) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    write_json(dir.path(), "connections.json", &json!({"r": connection}));
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({
            // Direct delivery only: these tests are about requests waiting on a destination
            // (with the spool they would be stored after SPOOL_HANDOFF_MS; see tests/it/spool.rs).
            "slow": {"module": "redis_stream", "connection": "r", "timeout_ms": 60000,
                     "spool": "off", "module-config": {"stream": stream}},
            "fast": {"module": "log"},
        }),
    );
    let router = Router::start(dir.path(), env);
    router.wait_ready().await;
    (router, dir)
}

async fn in_flight(router: &Router) -> f64 {
    crate::support::metric(&router.base(), "switchyard_deliveries_in_flight").await
}

/// Delivers one request to `slow`, freezes Redis, then leaves a second request waiting on it
/// (in flight, as `/metrics` confirms). Returns that request's answer-to-be.
async fn request_stuck_on_frozen_redis(
    router: &Router,
    redis: &Redis,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let url = router.url("/webhook/slow");
    let client = reqwest::Client::new();
    let first = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    redis.pause();
    let pending = tokio::spawn(async move { client.post(url).body("{}").send().await });
    wait_until(
        Duration::from_secs(10),
        "one delivery in flight",
        || async { in_flight(router).await >= 1.0 },
    )
    .await;
    pending
}

#[tokio::test]
async fn sigterm_drains_health_then_answers_in_flight_deliveries_with_their_outcome() {
    let redis = Redis::start().await;
    let stream = unique!("drain");
    let (mut router, _dir) = router_with_redis(
        &redis,
        &stream,
        &[
            ("SHUTDOWN_DRAIN_SECONDS", "2"),
            ("SHUTDOWN_GRACE_SECONDS", "30"),
        ],
    )
    .await;
    // A delivery is in flight to a frozen Redis when SIGTERM arrives.
    let pending = request_stuck_on_frozen_redis(&router, &redis).await;
    let client = reqwest::Client::new();
    router.terminate();

    // The load balancer's probe sees `draining` while requests are still served.
    wait_until(Duration::from_secs(5), "health says draining", || async {
        match client.get(router.url("/health")).send().await {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => r
                .json::<Value>()
                .await
                .is_ok_and(|b| b["status"] == "draining"),
            _ => false,
        }
    })
    .await;
    let fast = client
        .post(router.url("/webhook/fast"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status(), StatusCode::OK);

    // Redis comes back: the in-flight request is answered with its real outcome.
    redis.resume();
    let answer = pending
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(answer.status(), StatusCode::OK);
    let exit = router
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits");
    assert!(exit.success(), "{exit:?}");
    let mut conn = redis.conn().await;
    let stored: usize = conn.xlen(&stream).await.unwrap();
    assert_eq!(stored, 2, "both acknowledged requests are in the stream");
}

#[tokio::test]
async fn a_delivery_still_waiting_at_the_end_of_the_grace_period_gets_an_answer() {
    let redis = Redis::start().await;
    let stream = unique!("grace");
    let (mut router, _dir) = router_with_redis(
        &redis,
        &stream,
        &[
            ("SHUTDOWN_DRAIN_SECONDS", "0"),
            ("SHUTDOWN_GRACE_SECONDS", "3"),
        ],
    )
    .await;
    let pending = request_stuck_on_frozen_redis(&router, &redis).await;
    router.terminate();
    let answer = pending.await.unwrap().expect("answered, not cut off");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "shutting_down");
    let exit = router
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits");
    assert!(exit.success(), "{exit:?}");
    redis.resume();
}

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
