//! The etcd link as production clusters run it: mutual TLS, and auth with expiring tokens.

use std::{sync::atomic::Ordering, time::Duration};

use reqwest::StatusCode;
use switchyard::settings::Settings;

use crate::{
    support::{app::etcd_settings, etcd::EtcdOptions, tls, wait_until, Etcd, Proxy, TestApp},
    unique,
};

const LOG: &str = r#"{"module":"log"}"#;

#[tokio::test]
async fn mutual_tls_link_loads_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls::generate(dir.path());
    let etcd = Etcd::start_with(EtcdOptions {
        tls: Some(files.clone()),
        ..EtcdOptions::default()
    })
    .await;
    let p = format!("/{}/", unique!("cwm"));
    etcd.put(&format!("{p}acme/webhooks/a"), LOG).await;

    let settings = Settings {
        etcd_ca_file: Some(files.ca.clone()),
        etcd_cert_file: Some(files.client_cert.clone()),
        etcd_key_file: Some(files.client_key.clone()),
        // No scheme: TLS settings make it https.
        ..etcd_settings(&format!("127.0.0.1:{}", etcd.client_port), &p)
    };
    assert!(settings.etcd_endpoints()[0].starts_with("https://"));
    let app = TestApp::spawn_ready(settings).await;
    assert_eq!(app.status_of("acme/a").await, StatusCode::OK);
    etcd.put(&format!("{p}acme/webhooks/b"), LOG).await;
    app.wait_status("acme/b", StatusCode::OK).await;
    assert_eq!(app.health().await.1["components"]["etcd"], "healthy");
}

#[tokio::test]
async fn without_a_client_certificate_etcd_refuses_and_the_router_keeps_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls::generate(dir.path());
    let etcd = Etcd::start_with(EtcdOptions {
        tls: Some(files.clone()),
        ..EtcdOptions::default()
    })
    .await;
    let settings = Settings {
        etcd_ca_file: Some(files.ca.clone()),
        ..etcd_settings(&etcd.endpoint(), "/cwm/")
    };
    let app = TestApp::spawn(settings).await;
    wait_until(
        Duration::from_secs(20),
        "a failed attempt and a retry",
        || async { app.stats().reconnects.load(Ordering::Relaxed) >= 1 },
    )
    .await;
    let (status, health) = app.health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["components"]["etcd"], "connecting");
}

#[tokio::test]
async fn auth_tokens_that_expire_do_not_stop_the_watch_or_reconnects() {
    let mut etcd = Etcd::start_with(EtcdOptions {
        auth_token_ttl: Some(2),
        ..EtcdOptions::default()
    })
    .await;
    etcd.enable_auth("rootpw").await;
    let proxy = Proxy::start(etcd.client_port).await;
    let p = format!("/{}/", unique!("cwm"));
    etcd.put(&format!("{p}acme/webhooks/a"), LOG).await;

    let app = TestApp::spawn_ready(Settings {
        etcd_username: Some("root".into()),
        etcd_password: Some("rootpw".parse().unwrap()),
        ..etcd_settings(&proxy.endpoint(), &p)
    })
    .await;
    assert_eq!(app.status_of("acme/a").await, StatusCode::OK);

    // Token expiry is a matter of time: let the 2 s TTL lapse.
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.put(&format!("{p}acme/webhooks/b"), LOG).await;
    app.wait_status("acme/b", StatusCode::OK).await;

    // A reconnect after expiry authenticates again and resumes.
    proxy.block();
    app.wait_etcd_state("disconnected", Duration::from_secs(30))
        .await;
    etcd.put(&format!("{p}acme/webhooks/c"), LOG).await;
    proxy.unblock();
    app.wait_etcd_state("healthy", Duration::from_secs(30))
        .await;
    app.wait_status("acme/c", StatusCode::OK).await;

    // Wrong credentials never load anything.
    let wrong = TestApp::spawn(Settings {
        etcd_username: Some("root".into()),
        etcd_password: Some("nope".parse().unwrap()),
        ..etcd_settings(&etcd.endpoint(), &p)
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "a refused attempt and a retry",
        || async { wrong.stats().reconnects.load(Ordering::Relaxed) >= 1 },
    )
    .await;
    assert_eq!(wrong.health().await.0, StatusCode::SERVICE_UNAVAILABLE);
}
