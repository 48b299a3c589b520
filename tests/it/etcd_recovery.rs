//! etcd failures: outage, restart, compaction, restored cluster, start-up without etcd.

use std::{sync::atomic::Ordering, time::Duration};

use reqwest::StatusCode;

use crate::{
    support::{app::etcd_settings, wait_until, Etcd, Proxy, TestApp},
    unique,
};

const LOG: &str = r#"{"module":"log"}"#;
/// Long enough for a few reconnect attempts (1 s, 2 s, 4 s ... with jitter).
const RECONNECT: Duration = Duration::from_secs(30);

fn prefix() -> String {
    format!("/{}/", unique!("cwm"))
}

#[tokio::test]
async fn outage_keeps_serving_from_cache_and_converges_after_reconnect() {
    let mut etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let p = prefix();
    etcd.put(&format!("{p}acme/webhooks/kept"), LOG).await;
    etcd.put(&format!("{p}acme/webhooks/doomed"), LOG).await;
    let app = TestApp::spawn_ready(etcd_settings(&proxy.endpoint(), &p)).await;
    app.wait_etcd_state("healthy", RECONNECT).await;

    // The router loses etcd: it keeps serving and says so.
    proxy.block();
    app.wait_etcd_state("disconnected", RECONNECT).await;
    let (status, health) = app.health().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "etcd down must not make the instance unhealthy"
    );
    assert_eq!(health["status"], "healthy");
    assert_eq!(app.status_of("acme/kept").await, StatusCode::OK);
    assert_eq!(app.status_of("acme/doomed").await, StatusCode::OK);

    // Meanwhile: adds, deletes, and a real etcd crash and restart.
    etcd.put(&format!("{p}acme/webhooks/added"), LOG).await;
    etcd.put(&format!("{p}globex/webhooks/added"), LOG).await;
    etcd.delete(&format!("{p}acme/webhooks/doomed")).await;
    etcd.restart().await;
    let last = etcd.put(&format!("{p}acme/webhooks/late"), LOG).await;
    assert_eq!(app.status_of("acme/added").await, StatusCode::NOT_FOUND);

    proxy.unblock();
    app.wait_etcd_state("healthy", RECONNECT).await;
    wait_until(RECONNECT, "caught up to the last revision", || async {
        app.health().await.1["config"]["revision"] == last
    })
    .await;
    assert_eq!(app.status_of("acme/added").await, StatusCode::OK);
    assert_eq!(app.status_of("globex/added").await, StatusCode::OK);
    assert_eq!(app.status_of("acme/late").await, StatusCode::OK);
    assert_eq!(app.status_of("acme/kept").await, StatusCode::OK);
    assert_eq!(app.status_of("acme/doomed").await, StatusCode::NOT_FOUND);
    // Caught up by resuming the watch, not by reloading everything.
    assert_eq!(app.stats().full_loads.load(Ordering::Relaxed), 1);
    assert!(app.stats().reconnects.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn compaction_while_disconnected_forces_a_full_reload_with_removals() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let p = prefix();
    etcd.put(&format!("{p}acme/webhooks/kept"), LOG).await;
    etcd.put(&format!("{p}acme/webhooks/doomed"), LOG).await;
    let app = TestApp::spawn_ready(etcd_settings(&proxy.endpoint(), &p)).await;
    app.wait_etcd_state("healthy", RECONNECT).await;

    proxy.block();
    app.wait_etcd_state("disconnected", RECONNECT).await;
    etcd.delete(&format!("{p}acme/webhooks/doomed")).await;
    for i in 0..20 {
        etcd.put(&format!("{p}acme/webhooks/n{i}"), LOG).await;
    }
    let compacted = etcd.compact().await;
    proxy.unblock();

    wait_until(RECONNECT, "full reload after compaction", || async {
        app.stats().full_loads.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(app.health().await.1["config"]["revision"], compacted);
    assert_eq!(app.health().await.1["config"]["webhooks"], 21);
    assert_eq!(app.status_of("acme/doomed").await, StatusCode::NOT_FOUND);
    assert_eq!(app.status_of("acme/n19").await, StatusCode::OK);
    assert_eq!(app.status_of("acme/kept").await, StatusCode::OK);

    // And the watch goes on from the reloaded revision.
    etcd.put(&format!("{p}acme/webhooks/after"), LOG).await;
    app.wait_status("acme/after", StatusCode::OK).await;
}

#[tokio::test]
async fn a_restored_cluster_with_a_lower_revision_is_reloaded_in_full() {
    let old = Etcd::start().await;
    let proxy = Proxy::start(old.client_port).await;
    let p = prefix();
    for i in 0..30 {
        old.put(&format!("{p}acme/webhooks/old{i}"), LOG).await;
    }
    let app = TestApp::spawn_ready(etcd_settings(&proxy.endpoint(), &p)).await;
    app.wait_etcd_state("healthy", RECONNECT).await;

    // A fresh cluster (think: restored from an old backup) takes the old one's place.
    let fresh = Etcd::start().await;
    fresh.put(&format!("{p}acme/webhooks/fresh"), LOG).await;
    assert!(fresh.revision().await < old.revision().await);
    proxy.block();
    proxy.retarget(fresh.client_port);
    drop(old);
    proxy.unblock();

    app.wait_status("acme/fresh", StatusCode::OK).await;
    assert_eq!(app.status_of("acme/old0").await, StatusCode::NOT_FOUND);
    assert_eq!(app.health().await.1["config"]["webhooks"], 1);
    assert_eq!(app.stats().full_loads.load(Ordering::Relaxed), 2);

    // Events of the new cluster keep flowing.
    fresh.put(&format!("{p}acme/webhooks/next"), LOG).await;
    app.wait_status("acme/next", StatusCode::OK).await;
}

#[tokio::test]
async fn startup_without_etcd_answers_503_until_the_first_load() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    proxy.block();
    let p = prefix();
    etcd.put(&format!("{p}acme/webhooks/x"), LOG).await;

    let app = TestApp::spawn(etcd_settings(&proxy.endpoint(), &p)).await;
    let (status, health) = app.health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "starting");
    assert_eq!(health["components"]["etcd"], "connecting");
    let response = app.post_webhook("acme/x", &serde_json::json!({})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "not_ready"
    );
    // It keeps trying while etcd is away...
    wait_until(RECONNECT, "a retry", || async {
        app.stats().reconnects.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(app.health().await.0, StatusCode::SERVICE_UNAVAILABLE);

    // ...and serves as soon as etcd is reachable.
    proxy.unblock();
    wait_until(RECONNECT, "ready", || async {
        app.health().await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(app.status_of("acme/x").await, StatusCode::OK);
    // The watch is established just after the first load.
    app.wait_etcd_state("healthy", RECONNECT).await;
}

#[tokio::test]
async fn a_silently_dead_etcd_is_noticed_and_recovered_from() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let p = prefix();
    etcd.put(&format!("{p}acme/webhooks/x"), LOG).await;
    let app = TestApp::spawn_ready(etcd_settings(&proxy.endpoint(), &p)).await;
    app.wait_etcd_state("healthy", RECONNECT).await;

    // No reset, no FIN: the link just goes quiet.
    proxy.freeze();
    let frozen_at = tokio::time::Instant::now();
    // The 6 s silence limit (progress requests unanswered) or the keep-alive (5 s + 3 s) notices
    // it within 10 s.
    app.wait_etcd_state("disconnected", Duration::from_secs(10))
        .await;
    eprintln!("silent etcd noticed after {:?}", frozen_at.elapsed());
    assert_eq!(app.status_of("acme/x").await, StatusCode::OK);

    etcd.put(&format!("{p}acme/webhooks/y"), LOG).await;
    proxy.block();
    proxy.thaw();
    proxy.unblock();
    app.wait_etcd_state("healthy", RECONNECT).await;
    app.wait_status("acme/y", StatusCode::OK).await;
}

#[tokio::test]
async fn a_quiet_watch_is_kept_up_by_progress_notifications() {
    let etcd = Etcd::start().await;
    let p = prefix();
    etcd.put(&format!("{p}acme/webhooks/x"), LOG).await;
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    app.wait_etcd_state("healthy", RECONNECT).await;

    // Nothing changes for longer than the 6 s silence limit: progress notifications (asked for
    // after 3 s of quiet) keep the link, so a healthy quiet etcd is never taken for a dead one.
    let heard = std::sync::Mutex::new(std::collections::HashSet::new());
    wait_until(
        Duration::from_secs(30),
        "four progress notifications",
        || async {
            let mut heard = heard.lock().unwrap();
            heard.insert(app.stats().heard_at_ms.load(Ordering::Relaxed));
            heard.len() >= 4
        },
    )
    .await;
    assert_eq!(app.stats().reconnects.load(Ordering::Relaxed), 0);
    assert_eq!(app.health().await.1["components"]["etcd"], "healthy");
}
