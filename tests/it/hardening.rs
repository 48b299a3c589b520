//! Attacks against the real HTTP surface, each one that worked against an earlier build: stalled
//! uploads, forwarded-address tricks, rate budgets spent by strangers, environment values read
//! back, credentials handed on, weak secrets, JWT time claims, forged log lines, metric label
//! exhaustion, JSON that is not JSON, and credential cleanup rewriting more than credentials.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use reqwest::{
    header::{HeaderMap, HeaderValue},
    StatusCode,
};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{
    support::{
        app::file_settings, files::write_json, ports::free_port, process::Router, wait_until,
        Redis, TestApp,
    },
    unique,
};

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A file-backend app serving `webhooks` (and `connections`), with `tune` applied to settings.
async fn app_with(
    webhooks: Value,
    connections: Value,
    tune: impl FnOnce(&mut switchyard::settings::Settings),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "webhooks.json", &webhooks);
    write_json(dir.path(), "connections.json", &connections);
    let mut settings = file_settings(dir.path());
    tune(&mut settings);
    (TestApp::spawn_ready(settings).await, dir)
}

/// Opens a connection from `from` that sends a request head and part of its body, then stalls.
async fn stalled_upload(port: u16, from: IpAddr, path: &str, chunked: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let head = if chunked {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Hub-Signature-256: sha256=00\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
        )
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Hub-Signature-256: sha256=00\r\nContent-Length: 100\r\n\r\n{{"
        )
    };
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads one response (head and a `Content-Length` body) from a raw connection.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + length].to_owned());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "connection closed before a full response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// POSTs `body` with `headers` to `url` on `app`.
async fn post(
    app: &TestApp,
    url: impl AsRef<str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(url.as_ref()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.expect("the router answers")
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    crate::support::metric(&app.base(), name).await
}

// 1. Stalled uploads ----------------------------------------------------------------------

#[tokio::test]
async fn stalled_uploads_do_not_take_the_capacity_of_complete_requests() {
    let (app, _dir) = app_with(
        json!({
            "target": {"module": "log", "hmac": {"provider": "github", "secret": "target-secret"}},
            "other": {"module": "log", "hmac": {"provider": "github", "secret": "other-secret"}},
        }),
        json!({}),
        |s| {
            s.max_in_flight = 1024;
            s.body_read_timeout_ms = 60_000;
            s.max_body_readers = 4096;
            s.max_body_readers_per_client = 4096;
        },
    )
    .await;
    // 1,100 stalled uploads, half chunked, from another loopback address.
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let mut stalled = Vec::new();
    for i in 0..1100 {
        stalled.push(stalled_upload(app.port, attacker, "/webhook/target", i % 2 == 0).await);
    }
    wait_until(
        Duration::from_secs(20),
        "every stalled upload is being read",
        || async { metric(&app, "switchyard_body_reads_in_progress").await >= 1100.0 },
    )
    .await;
    // Correctly signed requests to another webhook are answered at once.
    for i in 0..20 {
        let body = format!(r#"{{"n":{i}}}"#);
        let started = Instant::now();
        let response = app
            .client
            .post(app.url("/webhook/other"))
            .header(
                "x-hub-signature-256",
                github_signature("other-secret", body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered in {:?} while 1,100 uploads stall",
            started.elapsed()
        );
    }
    assert_eq!(metric(&app, "switchyard_deliveries_in_flight").await, 0.0);
    drop(stalled);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_closed() {
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |s| {
        s.body_read_timeout_ms = 300;
    })
    .await;
    for chunked in [false, true] {
        let mut stream = stalled_upload(
            app.port,
            "127.0.0.1".parse().unwrap(),
            "/webhook/w",
            chunked,
        )
        .await;
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 408, "chunked: {chunked}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "request_timeout");
        // The connection is closed: the rest of the body can never be read as a request.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed in time");
        assert!(closed.is_ok_and(|n| n == 0), "chunked: {chunked}");
    }
    assert_eq!(metric(&app, "switchyard_body_reads_in_progress").await, 0.0);
}

#[tokio::test]
async fn an_early_answer_to_a_chunked_upload_closes_the_connection() {
    let (app, _dir) = app_with(
        json!({"w": {"module": "log", "authorization": "Bearer right"}}),
        json!({}),
        |_| {},
    )
    .await;
    // Refused on its head (401) while the chunked body is still open: without the close, the
    // server would keep the connection to drain a body that never ends.
    let mut stream =
        stalled_upload(app.port, "127.0.0.1".parse().unwrap(), "/webhook/w", true).await;
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 401);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(closed.is_ok_and(|n| n == 0));
}

#[tokio::test]
async fn a_stalled_chunked_body_to_any_other_route_does_not_keep_the_connection() {
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |_| {}).await;
    for (method, path) in [
        ("POST", "/health"),
        ("GET", "/metrics"),
        ("POST", "/nowhere"),
        ("GET", "/webhook/w"),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (status, _) = read_response(&mut stream).await;
        assert!(status >= 200, "{method} {path}");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: connection kept open"));
        assert!(closed.is_ok_and(|n| n == 0), "{method} {path}");
    }
    // Requests without a body keep their keep-alive connection.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let health = client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn requests_whose_body_has_arrived_need_no_reader_slot() {
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |s| {
        s.max_body_readers = 8;
        s.max_body_readers_per_client = 8;
        s.body_read_timeout_ms = 60_000;
    })
    .await;
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(
            stalled_upload(
                app.port,
                "127.0.0.4".parse().unwrap(),
                "/webhook/w",
                i % 2 == 0,
            )
            .await,
        );
    }
    wait_until(
        Duration::from_secs(10),
        "every reader slot taken",
        || async { metric(&app, "switchyard_body_reads_in_progress").await >= 8.0 },
    )
    .await;
    // A ninth upload that stalls is refused (no slot), but complete requests are served.
    let mut ninth =
        stalled_upload(app.port, "127.0.0.5".parse().unwrap(), "/webhook/w", false).await;
    assert_eq!(read_response(&mut ninth).await.0, 503);
    for _ in 0..10 {
        assert_eq!(app.status_of("w").await, StatusCode::OK);
    }
    drop(held);
}

#[tokio::test]
async fn one_client_cannot_take_every_reader_slot() {
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |s| {
        s.max_body_readers_per_client = 8;
        s.body_read_timeout_ms = 60_000;
    })
    .await;
    let attacker: IpAddr = "127.0.0.3".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(stalled_upload(app.port, attacker, "/webhook/w", false).await);
    }
    wait_until(Duration::from_secs(10), "8 uploads being read", || async {
        metric(&app, "switchyard_body_reads_in_progress").await >= 8.0
    })
    .await;
    let mut ninth = stalled_upload(app.port, attacker, "/webhook/w", true).await;
    let (status, body) = read_response(&mut ninth).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "too_many_uploads"
    );
    // Another client is not affected.
    assert_eq!(app.status_of("w").await, StatusCode::OK);
    drop(held);
}

// 2. X-Forwarded-For over several lines ---------------------------------------------------

#[tokio::test]
async fn forwarded_for_lines_are_one_list_read_from_the_right() {
    let (app, _dir) = app_with(
        json!({"w": {"module": "log", "ip_whitelist": ["192.0.2.10", "2001:db8::/32"]}}),
        json!({}),
        |s| s.trusted_proxies = "127.0.0.1".parse().unwrap(),
    )
    .await;
    let post = |lines: &[&str]| {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        app.client
            .post(app.url("/webhook/w"))
            .headers(headers)
            .body("{}")
            .send()
    };
    // HAProxy `option forwardfor`: the client's own line, then the proxy's line with the truth.
    let spoofed = post(&["192.0.2.10", "203.0.113.66"]).await.unwrap();
    assert_eq!(spoofed.status(), StatusCode::FORBIDDEN);
    for allowed in [
        &["192.0.2.10"][..],
        &["203.0.113.66", "192.0.2.10"],
        &["192.0.2.10:5678"],
        &["[2001:db8::1]:443"],
    ] {
        let response = post(allowed).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{allowed:?}");
    }
    // An entry that is not an address never falls back to the proxy's own address.
    for unreadable in [&["unknown"][..], &["192.0.2.10", "garbage"]] {
        let response = post(unreadable).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{unreadable:?}");
    }
}

// 3. Rate limits -----------------------------------------------------------------------------

#[tokio::test]
async fn only_authenticated_requests_spend_the_rate_budget_and_reloads_keep_it() {
    let secret = "gh-secret";
    let webhooks = json!({"gh": {"module": "log",
        "hmac": {"provider": "github", "secret": secret},
        "rate_limit": {"max_requests": 2, "window_seconds": 3600}}});
    let (app, dir) = app_with(webhooks.clone(), json!({}), |_| {}).await;
    let signed = |body: &'static str| {
        app.client
            .post(app.url("/webhook/gh"))
            .header(
                "x-hub-signature-256",
                github_signature(secret, body.as_bytes()),
            )
            .body(body)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(app.status_of("gh").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(signed("{}").await.unwrap().status(), StatusCode::OK);
    // A reload that does not change `gh` keeps its budget.
    let mut changed = webhooks.clone();
    changed["new"] = json!({"module": "log"});
    write_json(dir.path(), "webhooks.json", &changed);
    app.wait_status("new", StatusCode::OK).await;
    assert_eq!(signed("{}").await.unwrap().status(), StatusCode::OK);
    let spent = signed("{}").await.unwrap();
    assert_eq!(spent.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(spent.headers().contains_key("retry-after"));
}

// 4. Environment values ------------------------------------------------------------------

#[tokio::test]
async fn environment_values_never_reach_senders_status_or_logs() {
    let canary = format!("canary-{}", unique!("value"));
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({
            "leak": {"module": "log",
                     "json_schema": {"properties": {"token": {"const": "{$SY_CANARY}"}}}},
            "schema": {"module": "log",
                       "json_schema": {"properties": {"password": {"maxLength": 3}}},
                       "credential_cleanup": {"enabled": true}},
            "secret": {"module": "log", "authorization": "{$SY_CANARY}"},
        }),
    );
    write_json(
        dir.path(),
        "connections.json",
        &json!({"r": {"type": "redis", "port": "{$SY_CANARY}"}}),
    );
    let router = Router::start(dir.path(), &[("SY_CANARY", canary.as_str())]);
    router.wait_ready().await;
    let client = reqwest::Client::new();

    // The schema entry that would echo the variable is refused, naming where.
    let leak = client
        .post(router.url("/webhook/leak"))
        .body(r#"{"token":"guess"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(leak.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!leak.text().await.unwrap().contains(&canary));
    let status = client
        .get(router.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.contains("/json_schema/properties/token/const"),
        "{status}"
    );
    assert!(status.contains("connections.json#r"), "{status}");
    assert!(!status.contains(&canary), "{status}");

    // Credentials may still come from the environment.
    let ok = client
        .post(router.url("/webhook/secret"))
        .header("authorization", canary.as_str())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // A schema refusal names the path and rule, never the payload's value.
    let refused = client
        .post(router.url("/webhook/schema"))
        .body(r#"{"password":"hunter2-payload"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "schema_violation");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("/password") && message.contains("maxLength"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    router.wait_log("Request refused.").await;
    let logs = router.logs();
    assert!(logs.contains("Skipping invalid config entry."), "{logs}");
    assert!(!logs.contains(&canary), "{logs}");
    assert!(!logs.contains("hunter2-payload"), "{logs}");
}

// 5. The webhook's own credential headers ------------------------------------------------

#[tokio::test]
async fn headers_the_webhook_reads_credentials_from_are_not_handed_on() {
    let redis = Redis::start().await;
    let stream = unique!("creds");
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    let body = br#"{"a":1}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"mac-key").unwrap();
    mac.update(body);
    let digest = hex::encode(mac.finalize().into_bytes());
    let (app, _dir) = app_with(
        json!({
            "key": {"module": "redis_stream", "connection": "r",
                    "module-config": {"stream": stream},
                    "header_auth": {"header_name": "X-Webhook-Key", "api_key": "k-123456"}},
            "mac": {"module": "redis_stream", "connection": "r",
                    "module-config": {"stream": stream},
                    "hmac": {"header": "X-Body-Mac", "secret": "mac-key"}},
        }),
        json!({"r": connection}),
        |_| {},
    )
    .await;
    for (path, header, value) in [
        ("key", "x-webhook-key", "k-123456".to_owned()),
        ("mac", "x-body-mac", digest),
    ] {
        let response = post(
            &app,
            &format!("/webhook/{path}"),
            &[(header, &value), ("x-kept", "visible")],
            body.to_vec(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let mut conn = redis.conn().await;
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    assert_eq!(entries.ids.len(), 2);
    for entry in entries.ids {
        let headers: String = entry.get("headers").unwrap();
        assert!(headers.contains("x-kept"), "{headers}");
        for secret in ["x-webhook-key", "k-123456", "x-body-mac"] {
            assert!(!headers.contains(secret), "{secret} in {headers}");
        }
    }
}

// 6. Weak secrets --------------------------------------------------------------------------

#[tokio::test]
async fn weak_secrets_make_the_entry_invalid_and_real_ones_verify_in_any_base64() {
    let key: Vec<u8> = (0u8..32)
        .map(|b| b.wrapping_mul(91).wrapping_add(7))
        .collect();
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key);
    let (app, _dir) = app_with(
        json!({
            "empty": {"module": "log", "hmac": {"provider": "standard_webhooks", "secret": "whsec_"}},
            "short": {"module": "log",
                      "hmac": {"provider": "standard_webhooks", "secret": "whsec_c2VjcmV0"}},
            "blank": {"module": "log", "hmac": {"provider": "github", "secret": "{$SY_UNSET_VAR:}"}},
            "good": {"module": "log",
                     "hmac": {"provider": "standard_webhooks", "secret": format!("whsec_{url_safe}")}},
        }),
        json!({}),
        |_| {},
    )
    .await;
    // Signed with the empty key, as the attack did: nothing takes it.
    let id = "msg_1";
    let ts = unix_now().to_string();
    let sign = |key: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.{{}}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    for (path, signature) in [
        ("empty", sign(b"")),
        ("short", sign(b"secret")),
        ("blank", sign(b"")),
    ] {
        let response = post(
            &app,
            &format!("/webhook/{path}"),
            &[
                ("webhook-id", id),
                ("webhook-timestamp", ts.as_str()),
                ("webhook-signature", &signature),
                ("x-hub-signature-256", &github_signature("", b"{}")),
            ],
            "{}",
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let skipped = &app.stats().skipped;
    assert!(skipped
        .iter()
        .any(|e| e.key().contains("empty") && e.value().contains("fewer than 24 bytes")));
    assert!(skipped
        .iter()
        .any(|e| e.key().contains("blank") && e.value().contains("empty")));
    let good = post(
        &app,
        "/webhook/good",
        &[
            ("webhook-id", id),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", &sign(&key)),
        ],
        "{}",
    )
    .await;
    assert_eq!(good.status(), StatusCode::OK);
}

// 7. JWT time claims ------------------------------------------------------------------------

#[tokio::test]
async fn jwt_nbf_and_iat_are_checked_with_the_configured_leeway() {
    let (app, _dir) = app_with(
        json!({
            "default": {"module": "log", "jwt": {"secret": "jwt-secret"}},
            "strict": {"module": "log", "jwt": {"secret": "jwt-secret", "leeway_seconds": 0}},
        }),
        json!({}),
        |_| {},
    )
    .await;
    let token = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"jwt-secret"),
        )
        .unwrap()
    };
    let now = unix_now();
    let exp = now + 600;
    for (path, claims, expected) in [
        ("default", json!({"exp": exp}), StatusCode::OK),
        (
            "default",
            json!({"exp": exp, "nbf": now + 600}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "default",
            json!({"exp": exp, "iat": now + 600}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "default",
            json!({"exp": exp, "nbf": now + 30, "iat": now + 30}),
            StatusCode::OK,
        ),
        (
            "strict",
            json!({"exp": exp, "nbf": now + 30}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "strict",
            json!({"exp": exp, "iat": now + 30}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "strict",
            json!({"exp": exp, "nbf": now - 1, "iat": now - 1}),
            StatusCode::OK,
        ),
        ("default", json!({"exp": now - 30}), StatusCode::OK),
        ("strict", json!({"exp": now - 30}), StatusCode::UNAUTHORIZED),
    ] {
        let response = app
            .client
            .post(app.url(&format!("/webhook/{path}")))
            .bearer_auth(token(claims.clone()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{path} {claims}");
    }
}

// 8. Log forging -----------------------------------------------------------------------------

#[tokio::test]
async fn bodies_cannot_forge_log_lines_or_send_terminal_escapes() {
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"blob": {"module": "log", "data_type": "blob"}, "json": {"module": "log"}}),
    );
    write_json(dir.path(), "connections.json", &json!({}));
    let forged = "INFO switchyard::access: request_id=forged status=200 Request answered.";
    for format in ["text", "json"] {
        let router = Router::start(dir.path(), &[("LOG_FORMAT", format)]);
        router.wait_ready().await;
        let client = reqwest::Client::new();
        // Bidirectional controls turn text around (`invoice\u{202e}fdp.exe` reads as
        // `invoiceexe.pdf`); the separators are line breaks to some viewers.
        let tricky = "invoice\u{202e}fdp.exe\u{2028}INFO forged\u{2066}\u{61c}";
        let blob = format!("hello\n{forged}\r\x1b[31mred\x1b[0m{tricky}");
        let json = format!("{{\"a\":1,\r\"b\":\"x\",\"c\":\"{tricky}\"}}");
        for (path, body) in [("blob", blob), ("json", json)] {
            let response = client
                .post(router.url(&format!("/webhook/{path}")))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{format} {path}");
        }
        wait_until(Duration::from_secs(10), "both payload lines", || async {
            router.logs().matches("Webhook received.").count() >= 2
        })
        .await;
        let logs = router.logs();
        assert!(!logs.contains('\r'), "{format}: raw CR in {logs:?}");
        assert!(!logs.contains('\x1b'), "{format}: raw ESC in {logs:?}");
        for raw in ['\u{202e}', '\u{2028}', '\u{2066}', '\u{61c}'] {
            assert!(!logs.contains(raw), "{format}: {raw:?} written raw");
        }
        assert_eq!(logs.matches("fdp.exe").count(), 2, "{format}: {logs}");
        for line in logs.lines() {
            assert!(
                !line
                    .trim_start()
                    .starts_with("INFO switchyard::access: request_id=forged"),
                "{format}: forged line {line:?}"
            );
        }
    }
}

// 9. Metric labels and the admin listener ---------------------------------------------------

#[tokio::test]
async fn made_up_ids_do_not_take_the_label_slots_of_real_webhooks() {
    let (app, _dir) = app_with(json!({"real": {"module": "log"}}), json!({}), |s| {
        s.metrics_max_webhooks = 5;
    })
    .await;
    for i in 0..50 {
        assert_eq!(
            app.status_of(&format!("made-up-{i}")).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(app.status_of("real").await, StatusCode::OK);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"switchyard_requests_total{namespace="default",status="200",webhook="real"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("made-up"), "{metrics}");
}

#[tokio::test]
async fn with_an_admin_port_metrics_and_status_leave_the_public_port() {
    let admin_port = free_port();
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |s| {
        s.admin_port = Some(admin_port);
    })
    .await;
    let get = |port: u16, path: &str| {
        app.client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
    };
    for path in ["/metrics", "/status"] {
        let public = get(app.port, path).await.unwrap();
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            get(admin_port, path).await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    for port in [app.port, admin_port] {
        assert_eq!(get(port, "/health").await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(app.status_of("w").await, StatusCode::OK);
    let on_admin = app
        .client
        .post(format!("http://127.0.0.1:{admin_port}/webhook/w"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), StatusCode::NOT_FOUND);
    // No webhook handler there: a stalled chunked upload is answered and its connection closed
    // (403: its `Host: x` is no name the admin listener answers to; refused before any route).
    let mut stream =
        stalled_upload(admin_port, "127.0.0.1".parse().unwrap(), "/webhook/w", true).await;
    assert_eq!(read_response(&mut stream).await.0, 403);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(closed.is_ok_and(|n| n == 0));
}

// 10. JSON that is not JSON ------------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_and_lone_surrogates_are_not_json() {
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |_| {}).await;
    for body in [
        &b"{\"k\":\"\xff\"}"[..],
        br#"{"k":"\ud800"}"#,
        br#"{"\udfff":1}"#,
    ] {
        let response = post(&app, "/webhook/w", &[], body.to_vec()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_json");
    }
    let pair = post(&app, "/webhook/w", &[], r#"{"k":"\ud83d\ude00"}"#).await;
    assert_eq!(pair.status(), StatusCode::OK);
}

// 11. Cleanup, timestamps ------------------------------------------------------------------

#[tokio::test]
async fn credential_cleanup_changes_only_the_credentials() {
    let redis = Redis::start().await;
    let stream = unique!("clean");
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    let (app, _dir) = app_with(
        json!({"w": {"module": "redis_stream", "connection": "r",
                     "module-config": {"stream": stream},
                     "credential_cleanup": {"enabled": true}}}),
        json!({"r": connection}),
        |_| {},
    )
    .await;
    let body = r#"{"zeta": 1, "big": 12345678901234567890123, "price": 1.50, "password": "p", "alpha": [1e3, {"token": "t"}]}"#;
    let response = post(&app, "/webhook/w", &[], body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut conn = redis.conn().await;
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    let payload: String = entries.ids[0].get("payload").unwrap();
    assert_eq!(
        payload,
        r#"{"zeta": 1, "big": 12345678901234567890123, "price": 1.50, "password": "***", "alpha": [1e3, {"token": "***"}]}"#
    );
}

#[tokio::test]
async fn extreme_signature_timestamps_are_refused_not_a_crash() {
    let (app, _dir) = app_with(
        json!({
            "stripe": {"module": "log", "hmac": {"provider": "stripe", "secret": "whsec_x"}},
            "slack": {"module": "log", "hmac": {"provider": "slack", "secret": "s"}},
        }),
        json!({}),
        |_| {},
    )
    .await;
    for ts in ["-9223372036854775808", "9223372036854775807"] {
        let stripe = post(
            &app,
            "/webhook/stripe",
            &[("stripe-signature", &format!("t={ts},v1=00"))],
            "{}",
        )
        .await;
        assert_eq!(stripe.status(), StatusCode::UNAUTHORIZED, "{ts}");
        let slack = post(
            &app,
            "/webhook/slack",
            &[
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", "v0=00"),
            ],
            "{}",
        )
        .await;
        assert_eq!(slack.status(), StatusCode::UNAUTHORIZED, "{ts}");
    }
    assert_eq!(app.health().await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_head_that_does_not_arrive_in_time_gets_a_bare_408_and_the_connection_closes() {
    use tokio::io::AsyncWriteExt as _;
    let (app, _dir) = app_with(json!({"w": {"module": "log"}}), json!({}), |s| {
        s.client_request_timeout_ms = 300;
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    // Half a head, then nothing.
    stream
        .write_all(b"POST /webhook/w HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    // The HTTP layer answers before any request was read: no body, no request id (the README
    // says so), and the connection is closed.
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(!answer.contains("x-request-id"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "no body: {answer}");
}
