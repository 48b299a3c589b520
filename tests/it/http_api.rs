//! In-process HTTP tests: every status and JSON body of the webhook API, no network.

use std::time::Duration;

use actix_web::{
    http::{header, StatusCode},
    test,
};
use serde_json::{json, Value};
use switchyard::http::app;

use crate::support::{
    inproc::{add, call, harness, harness_with, post, LIMIT},
    recording::RecordingModule,
};

#[actix_web::test]
async fn accepted_payload_reaches_the_module_with_sensitive_headers_removed() {
    let h = harness(true);
    let module = RecordingModule::new();
    add(&h.cache, "acme", "gh", json!({"module": "log"}), &module);

    let (status, headers, body) = call(
        &h,
        post("/webhook/acme/gh", r#"{"a":1}"#)
            .insert_header(("authorization", "Bearer s3cret"))
            .insert_header(("x-hub-signature-256", "sha256=abc"))
            .insert_header(("x-github-delivery", "d-1"))
            .insert_header(("x-request-id", "req-42")),
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "accepted", "request_id": "req-42"}));
    assert_eq!(headers.get("x-request-id").unwrap(), "req-42");
    let deliveries = module.taken();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(d.body.as_ref(), br#"{"a":1}"#);
    assert_eq!((d.namespace.as_str(), d.webhook.as_str()), ("acme", "gh"));
    assert_eq!(d.request_id, "req-42");
    let names: Vec<_> = d.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"x-github-delivery"), "{names:?}");
    assert!(!names.contains(&"authorization"), "{names:?}");
    assert!(!names.contains(&"x-hub-signature-256"), "{names:?}");
}

#[actix_web::test]
async fn short_path_uses_the_default_namespace() {
    let h = harness(true);
    let module = RecordingModule::new();
    add(
        &h.cache,
        "default",
        "ping",
        json!({"module": "log"}),
        &module,
    );
    add(&h.cache, "other", "pong", json!({"module": "log"}), &module);

    assert_eq!(
        call(&h, post("/webhook/ping", "{}")).await.0,
        StatusCode::OK
    );
    let (status, _, body) = call(&h, post("/webhook/pong", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "webhook_not_found");
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn generated_request_id_is_echoed_in_header_and_body() {
    let h = harness(true);
    add(
        &h.cache,
        "default",
        "x",
        json!({"module": "log"}),
        &RecordingModule::new(),
    );
    let (_, headers, body) = call(&h, post("/webhook/x", "{}")).await;
    let id = headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(body["request_id"], id);
}

#[actix_web::test]
async fn invalid_names_get_400_with_the_reason() {
    let h = harness(true);
    let (status, headers, body) = call(&h, post("/webhook/bad%20ns/x", "{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_namespace");
    assert!(headers.contains_key("x-request-id"));

    let long = format!("/webhook/acme/{}", "a".repeat(129));
    let (status, _, body) = call(&h, post(&long, "{}").uri(&long)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_webhook_id");
    assert!(body["message"].as_str().unwrap().contains("128"));

    let (status, _, body) = call(&h, post("/webhook/global/x", "{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_namespace");
}

#[actix_web::test]
async fn unknown_webhook_is_404_never_410() {
    let h = harness(true);
    let (status, _, body) = call(&h, post("/webhook/acme/nope", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "webhook_not_found");
    assert!(body["message"].as_str().unwrap().contains("nope"));
}

#[actix_web::test]
async fn json_webhook_refuses_a_non_json_body_and_blob_accepts_it() {
    let h = harness(true);
    let json_module = RecordingModule::new();
    let blob_module = RecordingModule::new();
    add(&h.cache, "a", "j", json!({"module": "log"}), &json_module);
    add(
        &h.cache,
        "a",
        "b",
        json!({"module": "log", "data_type": "blob"}),
        &blob_module,
    );

    let (status, _, body) = call(&h, post("/webhook/a/j", "not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_json");
    assert!(json_module.taken().is_empty());

    let (status, _, _) = call(&h, post("/webhook/a/b", "not json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(blob_module.taken()[0].body.as_ref(), b"not json");
}

#[actix_web::test]
async fn body_over_the_limit_is_413_and_never_delivered() {
    let h = harness(true);
    let module = RecordingModule::new();
    add(
        &h.cache,
        "a",
        "blob",
        json!({"module": "log", "data_type": "blob"}),
        &module,
    );
    let big: &'static str = Box::leak("x".repeat(LIMIT as usize + 1).into_boxed_str());
    let (status, _, body) = call(&h, post("/webhook/a/blob", big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large");

    let exact: &'static str = Box::leak("x".repeat(LIMIT as usize).into_boxed_str());
    assert_eq!(
        call(&h, post("/webhook/a/blob", exact)).await.0,
        StatusCode::OK
    );
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn wrong_method_is_405_with_allow_header() {
    let h = harness(true);
    // A webhook without a GET handshake answers GET with 405.
    add(
        &h.cache,
        "acme",
        "gh",
        json!({"module": "log"}),
        &RecordingModule::new(),
    );
    let (status, headers, body) = call(&h, test::TestRequest::get().uri("/webhook/acme/gh")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers.get(header::ALLOW).unwrap(), "POST");
    assert_eq!(body["error"], "method_not_allowed");
    let (status, headers, _) = call(&h, test::TestRequest::put().uri("/webhook/gh")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // The route itself takes GET and HEAD (handshakes) and POST.
    assert_eq!(headers.get(header::ALLOW).unwrap(), "GET, HEAD, POST");
}

#[actix_web::test]
async fn unknown_path_is_json_404() {
    let h = harness(true);
    let (status, headers, body) = call(&h, test::TestRequest::get().uri("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert!(headers.contains_key("x-request-id"));
}

#[actix_web::test]
async fn before_the_first_load_webhooks_get_503_with_retry_after() {
    let h = harness(false);
    let (status, headers, body) = call(&h, post("/webhook/acme/gh", "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(body["error"], "not_ready");

    let (status, headers, body) = call(&h, test::TestRequest::get().uri("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(body["status"], "starting");
}

#[actix_web::test]
async fn failing_module_gives_503_destination_unavailable() {
    let h = harness(true);
    add(
        &h.cache,
        "a",
        "f",
        json!({"module": "log"}),
        &RecordingModule::failing(),
    );
    let (status, headers, body) = call(&h, post("/webhook/a/f", "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(body["error"], "destination_unavailable");
}

#[actix_web::test]
async fn module_slower_than_timeout_gives_503() {
    let h = harness(true);
    let slow = RecordingModule::stalling(Duration::from_secs(5));
    add(
        &h.cache,
        "a",
        "slow",
        json!({"module": "log", "timeout_ms": 50}),
        &slow,
    );
    let (status, _, body) = call(&h, post("/webhook/a/slow", "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "destination_unavailable");
    assert!(slow.taken().is_empty());
}

#[actix_web::test]
async fn health_reports_counts_and_backend() {
    let h = harness(true);
    h.cache.set_revision(7);
    add(
        &h.cache,
        "a",
        "x",
        json!({"module": "log"}),
        &RecordingModule::new(),
    );
    let (status, _, body) = call(&h, test::TestRequest::get().uri("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "healthy", "components": {"config_manager": "healthy"},
            "config": {"backend": "file", "revision": 7, "webhooks": 1, "connections": 0}})
    );
}

#[actix_web::test]
async fn past_max_in_flight_requests_get_503_overloaded_at_once() {
    let h = harness_with(true, 1);
    let slow = RecordingModule::stalling(Duration::from_millis(500));
    add(&h.cache, "a", "slow", json!({"module": "log"}), &slow);
    let service = test::init_service(app(h.state.clone(), switchyard::http::Surface::All)).await;

    let first = test::call_service(&service, post("/webhook/a/slow", "{}").to_request());
    let second = async {
        while slow.started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        let response =
            test::call_service(&service, post("/webhook/a/slow", "{}").to_request()).await;
        (response, started.elapsed())
    };
    let (first, (second, waited)) = tokio::join!(first, second);

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key(header::RETRY_AFTER));
    assert!(
        waited < Duration::from_millis(400),
        "refused without queueing ({waited:?})"
    );
    let body: Value = test::read_body_json(second).await;
    assert_eq!(body["error"], "overloaded");
    // The permit is released: the next request goes through.
    assert_eq!(
        call(&h, post("/webhook/a/slow", "{}")).await.0,
        StatusCode::OK
    );
    assert_eq!(slow.taken().len(), 2);
}

#[actix_web::test]
async fn a_fixed_response_answers_every_accepted_request_and_never_an_error() {
    use crate::support::inproc::{call_text, one_webhook, post_bytes};
    let (h, module) = one_webhook(json!({"module": "log",
        "response": {"status": 200, "content_type": "text/plain", "body": "OK"},
        "dedup": {"key": {"header": "x-delivery"}}, "authorization": "Bearer t"}));
    let request = |id: &str| {
        post_bytes("/webhook/a/w", r#"{"echo":"me"}"#)
            .insert_header(("authorization", "Bearer t"))
            .insert_header(("x-delivery", id.to_owned()))
    };
    for id in ["d-1", "d-1", "d-2"] {
        let (status, headers, body) = call_text(&h, request(id)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"), "{id}");
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "text/plain");
        assert_eq!(
            headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff"
        );
    }
    assert_eq!(module.taken().len(), 2, "the duplicate is not delivered");
    // A refusal keeps its JSON error.
    let (status, _, body) = call_text(&h, post_bytes("/webhook/a/w", "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#""error""#), "{body}");

    let (h, _) = one_webhook(json!({"module": "log", "response": {"status": 204}}));
    let (status, _, body) = call_text(&h, post_bytes("/webhook/a/w", "{}")).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
}

#[actix_web::test]
async fn a_fixed_response_is_2xx_bounded_and_never_of_the_request() {
    let parse = |response: Value| {
        switchyard::webhook::Webhook::from_bytes(
            json!({"module": "log", "response": response})
                .to_string()
                .as_bytes(),
            &switchyard::config::Secrets::env_only(&|_| None),
        )
        .map(|w| w.response)
    };
    let fixed = parse(json!({})).unwrap().unwrap();
    assert_eq!(
        (
            fixed.status,
            fixed.content_type.as_str(),
            fixed.body.as_str()
        ),
        (200, "text/plain; charset=utf-8", "")
    );
    for (response, why) in [
        (json!({"status": 302}), "2xx"),
        (json!({"status": 500}), "2xx"),
        (json!({"status": 204, "body": "x"}), "no body"),
        (json!({"body": "x".repeat(4097)}), "4096"),
        (
            json!({"content_type": "text/plain\r\nX-Injected: 1"}),
            "media type",
        ),
        (json!({"content_type": "nonsense"}), "media type"),
        (json!({"body": "OK", "echo": true}), "unknown field `echo`"),
    ] {
        let err = parse(response.clone()).unwrap_err().to_string();
        assert!(err.contains(why), "{response}: {err}");
    }
}
