//! OpenTelemetry traces against a real OTLP receiver (rotel): a request is one trace with its
//! stages as children, a spooled copy's forward joins that trace once the destination is back,
//! a sender's `traceparent` is a link and never the parent, and spans still queued at a stop
//! are exported before the process exits. Both transports: gRPC and HTTP/protobuf.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::{
        files::write_json,
        hmac_sha256,
        otlp::{Collector, ExportedSpan},
        process::Router,
        Redis,
    },
    unique,
};

const SECRET: &str = "trace-secret";

async fn post_signed(router: &Router, path: &str, body: &str, delivery: &str) -> Value {
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]))
    );
    let response = reqwest::Client::new()
        .post(router.url(path))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// The span named `name` among `spans` whose parent is `parent`.
fn child<'a>(spans: &'a [ExportedSpan], parent: &ExportedSpan, name: &str) -> &'a ExportedSpan {
    spans
        .iter()
        .find(|s| s.name == name && s.parent_id == parent.id)
        .unwrap_or_else(|| panic!("no `{name}` span under {parent:#?}; spans: {spans:#?}"))
}

#[tokio::test]
async fn a_request_is_one_trace_and_its_spooled_copy_joins_it_when_forwarded() {
    let collector = Collector::start().await;
    let mut redis = Redis::start().await;
    let stream = unique!("traced");
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "connections.json", &json!({"r": connection}));
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"gh": {
            "module": "redis_stream", "connection": "r", "module-config": {"stream": stream},
            "hmac": {"provider": "github", "secret": SECRET}, "dedup": true
        }}),
    );
    let endpoint = format!("http://127.0.0.1:{}", collector.grpc);
    let router = Router::start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("SPOOL_HANDOFF_MS", "500"),
        ],
    );
    router.wait_ready().await;
    redis.stop();

    let answer = post_signed(&router, "/webhook/gh", r#"{"ref":"main"}"#, "d-1").await;
    let request_id = answer["request_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["status"], "stored");
    let root = collector
        .wait_for("the request's span", |spans| {
            spans
                .iter()
                .find(|s| {
                    s.attribute("request_id") == Some(&request_id) && s.kind == "SPAN_KIND_SERVER"
                })
                .cloned()
        })
        .await;
    assert_eq!(root.name, "POST /webhook/{id}");
    assert_eq!(root.parent_id, "", "a request starts its own trace");
    assert_eq!(root.attribute("http.response.status_code"), Some("202"));
    assert_eq!(root.attribute("switchyard.webhook"), Some("gh"));
    assert_eq!(root.status, "STATUS_CODE_UNSET");
    assert_eq!(root.service, "switchyard");

    let spans = collector
        .wait_for("the request's stages", |spans| {
            let ours: Vec<ExportedSpan> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            (ours.len() >= 5).then_some(ours)
        })
        .await;
    assert_eq!(child(&spans, &root, "verify").status, "STATUS_CODE_UNSET");
    assert_eq!(
        child(&spans, &root, "dedup").attribute("switchyard.dedup"),
        Some("claimed")
    );
    let deliver = child(&spans, &root, "deliver");
    assert_eq!(deliver.kind, "SPAN_KIND_CLIENT");
    assert_eq!(
        deliver.status, "STATUS_CODE_ERROR",
        "Redis is down: {deliver:#?}"
    );
    assert_eq!(deliver.attribute("request_id"), Some(request_id.as_str()));
    let spool = child(&spans, &root, "spool");
    assert!(
        spool
            .attribute("switchyard.destinations")
            .is_some_and(|d| d.contains("default/gh:redis_stream@r")),
        "{spool:#?}"
    );

    // Redis comes back: the forward is a span of the same trace, under the request's span.
    redis.restart().await;
    let forward = collector
        .wait_for("the forward's span", |spans| {
            spans
                .iter()
                .find(|s| s.name == "forward" && s.status == "STATUS_CODE_OK")
                .cloned()
        })
        .await;
    assert_eq!(forward.trace_id, root.trace_id);
    assert_eq!(forward.parent_id, root.id);
    assert_eq!(forward.attribute("request_id"), Some(request_id.as_str()));
    assert_eq!(redis.stream_payloads(&stream).await.len(), 1);

    // A copy is answered as a duplicate, in a trace of its own.
    let copy = reqwest::Client::new()
        .post(router.url("/webhook/gh"))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(SECRET.as_bytes(), &[br#"{"ref":"main"}"#]))
            ),
        )
        .header("x-github-delivery", "d-1")
        .body(r#"{"ref":"main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(copy.status(), StatusCode::OK);
    let copy_id = copy.headers()["x-request-id"].to_str().unwrap().to_owned();
    collector
        .wait_for("the duplicate's dedup span", |spans| {
            let root = spans
                .iter()
                .find(|s| s.attribute("request_id") == Some(&copy_id) && s.parent_id.is_empty())?;
            spans
                .iter()
                .find(|s| {
                    s.parent_id == root.id && s.attribute("switchyard.dedup") == Some("duplicate")
                })
                .cloned()
        })
        .await;
}

#[tokio::test]
async fn over_http_a_senders_trace_is_a_link_and_queued_spans_leave_at_the_stop() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "connections.json", &json!({}));
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"signed": {"module": "log", "hmac": {"provider": "github", "secret": SECRET}}}),
    );
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let mut router = Router::start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // The spec's default protocol, http/protobuf, and nothing exported before the stop.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_SERVICE_NAME", "edge-router"),
            ("SHUTDOWN_DRAIN_SECONDS", "0"),
        ],
    );
    router.wait_ready().await;

    let senders = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let client = reqwest::Client::new();
    let body = r#"{"zen":"Keep it logically awesome."}"#;
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]))
    );
    let delivered = client
        .post(router.url("/webhook/default/signed"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .header("traceparent", senders)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::OK);
    let refused = client
        .post(router.url("/webhook/default/signed"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", "sha256=00")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        collector.spans().is_empty(),
        "nothing is exported before the batch is due"
    );

    router.terminate();
    assert!(router.wait_exit(Duration::from_secs(20)).await.is_some());
    let spans = collector.spans();
    let linked = spans
        .iter()
        .find(|s| s.name == "POST /webhook/{namespace}/{id}" && !s.links.is_empty())
        .unwrap_or_else(|| {
            panic!("the delivered request's span, exported at the stop: {spans:#?}")
        });
    assert_eq!(linked.links, ["4bf92f3577b34da6a3ce929d0e0e4736"]);
    assert_eq!(linked.parent_id, "", "the sender's span is not our parent");
    assert_eq!(
        linked.service, "edge-router",
        "OTEL_SERVICE_NAME names the service"
    );
    assert_ne!(linked.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(child(&spans, linked, "deliver").status, "STATUS_CODE_OK");

    // A refusal is the sender's fault: the request span is not failed, its verify span is.
    let refused = spans
        .iter()
        .find(|s| s.attribute("request_id") == Some(&refused_id) && s.parent_id.is_empty())
        .unwrap_or_else(|| panic!("the refused request's span: {spans:#?}"));
    assert_eq!(refused.attribute("http.response.status_code"), Some("401"));
    assert_eq!(refused.status, "STATUS_CODE_UNSET");
    assert!(refused.attribute("error.type").is_some(), "{refused:#?}");
    assert_eq!(child(&spans, refused, "verify").status, "STATUS_CODE_ERROR");
    assert!(
        spans.iter().all(|s| !s.name.is_empty()),
        "every span parsed: {spans:#?}"
    );
}
