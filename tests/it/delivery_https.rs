//! The `http` module's TLS options against a real HTTPS service on loopback: `ca_file` trusts
//! a private CA (and the delivery goes over HTTP/2, offered by ALPN); without it the private
//! certificate is refused in the handshake; `insecure_skip_verify` accepts it with a warning;
//! `cert_file`/`key_file` answer a service that requires a client certificate; and one of
//! them without the other makes the connection entry invalid.

use std::time::Duration;

use hyper::Version;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{
    files::write_json,
    get_json,
    process::Router,
    tls::{self, TlsFiles},
    tls_service::{ClientAuth, TlsService},
    wait_until,
};

const LOOPBACK: (&str, &str) = ("HTTP_ALLOWED_NETWORKS", "127.0.0.0/8");

/// A temp dir holding fresh test certificates, to be used for the config files too.
fn certificates() -> (tempfile::TempDir, TlsFiles) {
    let dir = tempfile::tempdir().unwrap();
    let files = tls::generate(dir.path());
    (dir, files)
}

/// An `http` connection to `service` with the TLS options in `tls` (`ca_file`, ...).
fn connection(service: &TlsService, tls: Value) -> Value {
    let mut entry = json!({"type": "http", "base_url": service.url(), "timeout_ms": 5000});
    if let (Some(entry), Some(tls)) = (entry.as_object_mut(), tls.as_object()) {
        for (key, value) in tls {
            entry.insert(key.clone(), value.clone());
        }
    }
    entry
}

/// An `http` webhook posting to `/ok` on `connection`, spool off.
fn webhook(connection: &str) -> Value {
    json!({"module": "http", "connection": connection, "spool": "off",
        "module-config": {"path": "/ok"}})
}

/// The router on `connections` and `webhooks` written into `dir`, ready.
async fn start(dir: &tempfile::TempDir, connections: Value, webhooks: Value) -> Router {
    write_json(dir.path(), "connections.json", &connections);
    write_json(dir.path(), "webhooks.json", &webhooks);
    let router = Router::start(dir.path(), &[LOOPBACK]);
    router.wait_ready().await;
    router
}

async fn post(router: &Router, webhook: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(router.url(&format!("/webhook/{webhook}")))
        .header("content-type", "application/json")
        .body(r#"{"over":"tls"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `service` has refused `count` handshakes, so "nothing received" is known to be
/// the handshake's doing and not a request still on its way.
async fn wait_refused(service: &TlsService, count: usize) {
    wait_until(
        Duration::from_secs(10),
        "the service refused the handshake",
        || async { service.refused_handshakes().len() >= count },
    )
    .await;
}

/// The router's log lines that name `needle` (for assertion messages and the report).
fn log_lines(router: &Router, needle: &str) -> String {
    router
        .logs()
        .lines()
        .filter(|l| l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn with_ca_file_the_private_ca_is_trusted_and_the_delivery_goes_over_http2() {
    let (dir, files) = certificates();
    let service = TlsService::start(&files, ClientAuth::Off);
    let router = start(
        &dir,
        json!({"svc": connection(&service, json!({"ca_file": files.ca}))}),
        json!({"tls": webhook("svc")}),
    )
    .await;

    let (status, answer) = post(&router, "tls").await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    let received = service.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let got = &received[0];
    assert_eq!(
        got.version,
        Version::HTTP_2,
        "HTTP/2 where the service offers it over TLS"
    );
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/ok"));
    assert_eq!(got.body, br#"{"over":"tls"}"#);
    assert_eq!(got.header("switchyard-webhook"), Some("tls"));
    assert!(!got.client_certificate, "none configured, none sent");
    assert!(service.refused_handshakes().is_empty());
}

#[tokio::test]
async fn without_ca_file_a_certificate_from_a_private_ca_is_refused_in_the_handshake() {
    let (dir, files) = certificates();
    let service = TlsService::start(&files, ClientAuth::Off);
    let router = start(
        &dir,
        json!({"svc": connection(&service, json!({}))}),
        json!({"tls": webhook("svc")}),
    )
    .await;

    let (status, answer) = post(&router, "tls").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "destination_unavailable", "{answer}");
    wait_refused(&service, 1).await;
    assert!(service.received().is_empty(), "{:?}", service.received());
    let failed = log_lines(&router, "webhook=default/tls");
    assert!(
        failed.contains("invalid peer certificate: UnknownIssuer"),
        "the log names the certificate problem: {failed}"
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate_and_warns_in_the_log() {
    let (dir, files) = certificates();
    let service = TlsService::start(&files, ClientAuth::Off);
    let router = start(
        &dir,
        json!({"svc": connection(&service, json!({"insecure_skip_verify": true}))}),
        json!({"tls": webhook("svc")}),
    )
    .await;

    let (status, answer) = post(&router, "tls").await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(service.received().len(), 1, "{:?}", service.received());
    router.wait_log("insecure_skip_verify").await;
    let warning = log_lines(&router, "insecure");
    assert!(
        warning.contains("WARN") && warning.contains("connection=svc"),
        "a warning naming the connection: {warning}"
    );
}

#[tokio::test]
async fn a_service_requiring_a_client_certificate_accepts_only_the_one_from_cert_and_key_file() {
    let (dir, files) = certificates();
    let service = TlsService::start(&files, ClientAuth::Required);
    let router = start(
        &dir,
        json!({
            "anonymous": connection(&service, json!({"ca_file": files.ca})),
            "mtls": connection(&service, json!({"ca_file": files.ca,
                "cert_file": files.client_cert, "key_file": files.client_key})),
        }),
        json!({"anonymous": webhook("anonymous"), "mtls": webhook("mtls")}),
    )
    .await;

    let (status, answer) = post(&router, "anonymous").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "destination_unavailable", "{answer}");
    wait_refused(&service, 1).await;
    let refused = service.refused_handshakes();
    assert!(refused[0].contains("no certificates"), "{refused:?}");
    assert!(service.received().is_empty(), "{:?}", service.received());

    let (status, answer) = post(&router, "mtls").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let received = service.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].client_certificate);
    assert_eq!(received[0].header("switchyard-webhook"), Some("mtls"));
}

#[tokio::test]
async fn cert_file_without_key_file_makes_the_connection_invalid_and_its_webhook_answers_503() {
    let (dir, files) = certificates();
    let service = TlsService::start(&files, ClientAuth::Required);
    let router = start(
        &dir,
        json!({"svc": connection(&service, json!({"ca_file": files.ca,
            "cert_file": files.client_cert}))}),
        json!({"tls": webhook("svc")}),
    )
    .await;

    let (status, answer) = post(&router, "tls").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "connection_missing", "{answer}");
    let status = get_json(&router.base(), "/status").await;
    let skipped = status["skipped"].as_array().unwrap();
    let entry = skipped
        .iter()
        .find(|e| {
            e["key"]
                .as_str()
                .is_some_and(|k| k.ends_with("connections.json#svc"))
        })
        .unwrap_or_else(|| panic!("the connection is skipped: {status}"));
    assert!(
        entry["reason"]
            .as_str()
            .is_some_and(|r| r.contains("key_file")),
        "{entry}"
    );
    assert!(service.received().is_empty());
    assert!(
        service.refused_handshakes().is_empty(),
        "never connected: {:?}",
        service.refused_handshakes()
    );
}
