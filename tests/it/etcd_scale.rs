//! Scale: 25,000 webhooks in 5,000 namespaces load and route.

use std::time::Instant;

use reqwest::StatusCode;

use crate::{
    support::{app::etcd_settings, Etcd, TestApp},
    unique,
};

#[tokio::test]
async fn loads_25k_webhooks_across_5k_namespaces() {
    let etcd = Etcd::start().await;
    let p = format!("/{}/", unique!("scale"));
    let entries: Vec<_> = (0..5_000)
        .flat_map(|ns| {
            let p = p.clone();
            (0..5).map(move |id| {
                (
                    format!("{p}ns{ns}/webhooks/hook{id}"),
                    r#"{"module":"log","module-config":{"pretty_print":false}}"#.to_owned(),
                )
            })
        })
        .collect();
    etcd.put_many(&entries).await;

    let started = Instant::now();
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    eprintln!(
        "25k webhooks ready after {:?} (incl. test polling)",
        started.elapsed()
    );

    let (_, health) = app.health().await;
    assert_eq!(health["config"]["webhooks"], 25_000);
    for path in ["ns0/hook0", "ns2500/hook3", "ns4999/hook4"] {
        assert_eq!(app.status_of(path).await, StatusCode::OK, "{path}");
    }
    assert_eq!(app.status_of("ns5000/hook0").await, StatusCode::NOT_FOUND);
    assert_eq!(app.status_of("ns0/hook5").await, StatusCode::NOT_FOUND);
}
