//! The etcd backend against a real etcd: routing, isolation, live changes, invalid entries.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::json;
use switchyard::{keys::Namespace, settings::Settings};

use crate::{
    support::{app::etcd_settings, Etcd, TestApp},
    unique,
};

fn prefix() -> String {
    format!("/{}/", unique!("cwm"))
}

#[tokio::test]
async fn webhooks_route_by_namespace_and_namespaces_stay_isolated() {
    let etcd = Etcd::start().await;
    let p = prefix();
    etcd.put(&format!("{p}acme/webhooks/github"), r#"{"module":"log"}"#)
        .await;
    etcd.put(&format!("{p}globex/webhooks/stripe"), r#"{"module":"log"}"#)
        .await;

    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;

    assert_eq!(app.status_of("acme/github").await, StatusCode::OK);
    assert_eq!(app.status_of("globex/stripe").await, StatusCode::OK);
    assert_eq!(app.status_of("globex/github").await, StatusCode::NOT_FOUND);
    assert_eq!(app.status_of("acme/stripe").await, StatusCode::NOT_FOUND);
    let (status, health) = app.health().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["components"]["etcd"], "healthy");
    assert_eq!(health["config"]["backend"], "etcd");
    assert_eq!(health["config"]["webhooks"], 2);
    assert_eq!(health["config"]["revision"], etcd.revision().await);
}

#[tokio::test]
async fn short_path_falls_back_to_the_configured_default_namespace() {
    let etcd = Etcd::start().await;
    let p = prefix();
    etcd.put(&format!("{p}default/webhooks/ping"), r#"{"module":"log"}"#)
        .await;
    etcd.put(&format!("{p}tenant7/webhooks/hook"), r#"{"module":"log"}"#)
        .await;

    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    assert_eq!(app.status_of("ping").await, StatusCode::OK);
    assert_eq!(app.status_of("hook").await, StatusCode::NOT_FOUND);

    let tenant = TestApp::spawn_ready(Settings {
        etcd_namespace: Namespace::parse("tenant7").unwrap(),
        ..etcd_settings(&etcd.endpoint(), &p)
    })
    .await;
    assert_eq!(tenant.status_of("hook").await, StatusCode::OK);
    assert_eq!(tenant.status_of("ping").await, StatusCode::NOT_FOUND);
    assert_eq!(tenant.status_of("default/ping").await, StatusCode::OK);
}

#[tokio::test]
async fn live_put_and_delete_take_effect_without_restart() {
    let etcd = Etcd::start().await;
    let p = prefix();
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    assert_eq!(app.status_of("acme/new").await, StatusCode::NOT_FOUND);

    let revision = etcd
        .put(&format!("{p}acme/new"), "ignored: not in the layout")
        .await;
    let put = etcd
        .put(&format!("{p}acme/webhooks/new"), r#"{"module":"log"}"#)
        .await;
    assert!(put > revision);
    app.wait_status("acme/new", StatusCode::OK).await;
    assert_eq!(app.health().await.1["config"]["revision"], put);

    // An update is applied too: switching to blob makes a non-JSON body acceptable.
    let raw = || {
        app.client
            .post(app.url("/webhook/acme/new"))
            .body("plain text")
            .send()
    };
    assert_eq!(raw().await.unwrap().status(), StatusCode::BAD_REQUEST);
    etcd.put(
        &format!("{p}acme/webhooks/new"),
        r#"{"module":"log","data_type":"blob"}"#,
    )
    .await;
    crate::support::wait_until(
        std::time::Duration::from_secs(10),
        "blob update applied",
        || async { raw().await.unwrap().status() == StatusCode::OK },
    )
    .await;

    let deleted = etcd.delete(&format!("{p}acme/webhooks/new")).await;
    app.wait_status("acme/new", StatusCode::NOT_FOUND).await;
    assert_eq!(app.health().await.1["config"]["revision"], deleted);
    assert_eq!(app.health().await.1["config"]["webhooks"], 0);
}

#[tokio::test]
async fn invalid_entries_are_skipped_and_the_last_good_value_keeps_serving() {
    let etcd = Etcd::start().await;
    let p = prefix();
    etcd.put(
        &format!("{p}acme/webhooks/good"),
        r#"{"module":"log","data_type":"blob"}"#,
    )
    .await;
    // Invalid from the start: bad JSON, unknown module, unknown field, bad key names.
    etcd.put(&format!("{p}acme/webhooks/badjson"), "{nope")
        .await;
    etcd.put(&format!("{p}acme/webhooks/kafak"), r#"{"module":"kafak"}"#)
        .await;
    etcd.put(
        &format!("{p}acme/webhooks/typo"),
        r#"{"module":"log","hmca":{}}"#,
    )
    .await;
    etcd.put(&format!("{p}bad ns/webhooks/x"), r#"{"module":"log"}"#)
        .await;
    etcd.put(&format!("{p}global/webhooks/x"), r#"{"module":"log"}"#)
        .await;

    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    assert_eq!(app.health().await.1["config"]["webhooks"], 1);
    // Present but invalid: 503 webhook_invalid with Retry-After (retrying senders keep the
    // event until the entry is fixed), never 404.
    for path in ["acme/badjson", "acme/kafak", "acme/typo"] {
        let response = app.post_webhook(path, &serde_json::json!({})).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "webhook_invalid", "{path}");
    }
    assert_eq!(app.status_of("acme/absent").await, StatusCode::NOT_FOUND);
    let skipped_at_load = app.stats().invalid_entries.load(Ordering::Relaxed);
    assert_eq!(skipped_at_load, 5);

    // Breaking a good entry keeps its last good value (still blob, still served).
    etcd.put(
        &format!("{p}acme/webhooks/good"),
        r#"{"module":"log","data_type":"xml"}"#,
    )
    .await;
    etcd.put(&format!("{p}acme/webhooks/marker"), r#"{"module":"log"}"#)
        .await;
    app.wait_status("acme/marker", StatusCode::OK).await;
    assert_eq!(
        app.stats().invalid_entries.load(Ordering::Relaxed),
        skipped_at_load + 1
    );
    let response = app
        .client
        .post(app.url("/webhook/acme/good"))
        .body("still blob")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Fixing it later is applied as usual.
    etcd.put(&format!("{p}acme/webhooks/good"), r#"{"module":"log"}"#)
        .await;
    crate::support::wait_until(
        std::time::Duration::from_secs(10),
        "fixed entry applied (json again)",
        || async {
            let r = app.client.post(app.url("/webhook/acme/good")).body("x");
            r.send().await.unwrap().status() == StatusCode::BAD_REQUEST
        },
    )
    .await;
}

#[tokio::test]
async fn connections_are_loaded_and_counted() {
    let etcd = Etcd::start().await;
    let p = prefix();
    etcd.put(
        &format!("{p}global/connections/kafka-main"),
        &json!({"type": "kafka", "bootstrap_servers": "k:9092"}).to_string(),
    )
    .await;
    etcd.put(&format!("{p}global/connections/bad"), r#"{"type":"mqtt"}"#)
        .await;
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    assert_eq!(app.health().await.1["config"]["connections"], 1);

    etcd.put(
        &format!("{p}global/connections/cache"),
        r#"{"type":"redis-rq","host":"r"}"#,
    )
    .await;
    crate::support::wait_until(
        std::time::Duration::from_secs(10),
        "second connection",
        || async { app.health().await.1["config"]["connections"] == 2 },
    )
    .await;
    etcd.delete(&format!("{p}global/connections/kafka-main"))
        .await;
    crate::support::wait_until(
        std::time::Duration::from_secs(10),
        "connection removed",
        || async { app.health().await.1["config"]["connections"] == 1 },
    )
    .await;
}

#[tokio::test]
async fn keys_under_other_prefixes_are_ignored() {
    let etcd = Etcd::start().await;
    let p = prefix();
    let other = prefix();
    etcd.put(&format!("{other}acme/webhooks/x"), r#"{"module":"log"}"#)
        .await;
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    etcd.put(&format!("{other}acme/webhooks/y"), r#"{"module":"log"}"#)
        .await;
    etcd.put(&format!("{p}acme/webhooks/z"), r#"{"module":"log"}"#)
        .await;
    app.wait_status("acme/z", StatusCode::OK).await;
    assert_eq!(app.status_of("acme/x").await, StatusCode::NOT_FOUND);
    assert_eq!(app.status_of("acme/y").await, StatusCode::NOT_FOUND);
}
