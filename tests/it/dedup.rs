//! Deduplication through the real HTTP stack: a delivery id seen again within the window is
//! answered `200 {"status":"duplicate"}` and not delivered; a failed first attempt never blocks
//! the retry; two concurrent copies are delivered once.

use std::{sync::atomic::Ordering, time::Duration};

use actix_web::{http::StatusCode, test};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{
    inproc::{add, call, harness, post_bytes, Harness},
    recording::RecordingModule,
};

fn github(h: &Harness, module: &std::sync::Arc<RecordingModule>) {
    add(
        &h.cache,
        "a",
        "gh",
        json!({"module": "log", "hmac": {"provider": "github", "secret": "s"}, "dedup": true}),
        module,
    );
}

const BODY: &str = r#"{"action":"opened"}"#;

fn signed() -> test::TestRequest {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s").unwrap();
    mac.update(BODY.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    post_bytes("/webhook/a/gh", BODY)
        .insert_header(("x-hub-signature-256", format!("sha256={sig}")))
}

fn github_delivery(id: &str) -> test::TestRequest {
    signed().insert_header(("x-github-delivery", id.to_owned()))
}

async fn answer(h: &Harness, req: test::TestRequest) -> (StatusCode, Value) {
    let (status, _, body) = call(h, req).await;
    (status, body)
}

#[actix_web::test]
async fn a_repeated_github_delivery_is_answered_as_a_duplicate_and_not_delivered() {
    let h = harness(true);
    let module = RecordingModule::new();
    github(&h, &module);
    let first = answer(&h, github_delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958")).await;
    assert_eq!(
        (first.0, first.1["status"].clone()),
        (StatusCode::OK, json!("accepted"))
    );
    let again = answer(&h, github_delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958")).await;
    assert_eq!(
        (again.0, again.1["status"].clone()),
        (StatusCode::OK, json!("duplicate"))
    );
    let other = answer(&h, github_delivery("another-delivery")).await;
    assert_eq!(other.1["status"], "accepted");
    // Without an id there is nothing to deduplicate by: delivered.
    let (status, _, _) = call(&h, signed()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(module.taken().len(), 3);
}

#[actix_web::test]
async fn a_failed_first_attempt_never_blocks_the_senders_retry() {
    let h = harness(true);
    let module = RecordingModule::failing();
    github(&h, &module);
    let failed = answer(&h, github_delivery("d-1")).await;
    assert_eq!(failed.0, StatusCode::SERVICE_UNAVAILABLE);
    module.fail.store(false, Ordering::SeqCst);
    let retry = answer(&h, github_delivery("d-1")).await;
    assert_eq!(
        (retry.0, retry.1["status"].clone()),
        (StatusCode::OK, json!("accepted"))
    );
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn two_concurrent_copies_are_delivered_once() {
    let h = harness(true);
    let module = RecordingModule::stalling(Duration::from_millis(300));
    github(&h, &module);
    let (a, b) = tokio::join!(
        answer(&h, github_delivery("same")),
        answer(&h, github_delivery("same"))
    );
    let mut words = [a.1["status"].to_string(), b.1["status"].to_string()];
    words.sort();
    assert_eq!(words, [r#""accepted""#, r#""duplicate""#], "{a:?} {b:?}");
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn explicit_keys_from_a_header_or_the_body_and_entries_that_cannot_dedup() {
    let (h, module) = crate::support::inproc::one_webhook(
        json!({"module": "log", "dedup": {"key": {"json_pointer": "/id"}, "ttl_seconds": 60}}),
    );
    let event = |id: &str| post_bytes("/webhook/a/w", format!(r#"{{"id":"{id}"}}"#));
    assert_eq!(answer(&h, event("evt_1")).await.1["status"], "accepted");
    assert_eq!(answer(&h, event("evt_1")).await.1["status"], "duplicate");
    assert_eq!(answer(&h, event("evt_2")).await.1["status"], "accepted");
    assert_eq!(module.taken().len(), 2);

    for (entry, why) in [
        (
            json!({"module": "log", "dedup": true}),
            "needs an `hmac` preset",
        ),
        (
            json!({"module": "log", "hmac": {"provider": "zoom", "secret": "s"}, "dedup": true}),
            "needs an `hmac` preset",
        ),
        (
            json!({"module": "log", "dedup": {"key": {"header": "X-Id"}, "ttl_seconds": 0}}),
            "ttl_seconds",
        ),
        (
            json!({"module": "log", "data_type": "blob",
                "dedup": {"key": {"json_pointer": "/id"}}}),
            "needs `data_type: json`",
        ),
    ] {
        let err = switchyard::webhook::Webhook::from_value(entry.clone()).unwrap_err();
        assert!(err.to_string().contains(why), "{entry}: {err}");
    }
}

/// `"store": {"connection": "<redis>"}`: two instances share one window through a real Redis;
/// with Redis gone, requests are delivered without deduplication (never refused).
#[actix_web::test]
async fn a_redis_store_shares_the_window_between_instances() {
    let mut redis = crate::support::Redis::start().await;
    let connection = switchyard::provider::parse_connection(
        redis.connection().as_bytes(),
        &switchyard::config::Secrets::env_only(&|_: &str| None),
    )
    .unwrap();
    let entry = json!({"module": "log", "hmac": {"provider": "github", "secret": "s"},
        "dedup": {"key": {"header": "X-GitHub-Delivery"}, "store": {"connection": "shared"}}});
    let instances: Vec<_> = (0..2)
        .map(|_| {
            let h = harness(true);
            h.state.pool.upsert(
                switchyard::keys::ConnectionName::parse("shared").unwrap(),
                std::sync::Arc::new(connection.clone()),
            );
            let module = RecordingModule::new();
            add(&h.cache, "a", "gh", entry.clone(), &module);
            (h, module)
        })
        .collect();
    let (a, b) = (&instances[0], &instances[1]);
    assert_eq!(
        answer(&a.0, github_delivery("shared-1")).await.1["status"],
        "accepted"
    );
    assert_eq!(
        answer(&b.0, github_delivery("shared-1")).await.1["status"],
        "duplicate"
    );
    assert_eq!(
        answer(&b.0, github_delivery("shared-2")).await.1["status"],
        "accepted"
    );
    assert_eq!(a.1.taken().len() + b.1.taken().len(), 2);

    // A failed attempt on one instance frees the key for the retry on the other.
    a.1.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        answer(&a.0, github_delivery("shared-3")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    crate::support::wait_until(Duration::from_secs(5), "the failed claim freed", || async {
        answer(&b.0, github_delivery("shared-3")).await.1["status"] == "accepted"
    })
    .await;

    redis.kill();
    a.1.fail.store(false, Ordering::SeqCst);
    let (status, body) = answer(&a.0, github_delivery("shared-1")).await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("accepted")),
        "Redis down: delivered"
    );
}
