//! What one tenant's config entry or one sender could once do to everyone, run against the real
//! binary: a value that panicked the provider, chains that ate memory and threads, a schema
//! pattern that held a worker, duplicate waits past the memory bound, a `Host` that replayed a
//! signature, one namespace writing into another's destination, and the smaller ones.

use std::{net::IpAddr, process::Command, time::Duration};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::{
    support::{
        files::write_json, get_json, ports::free_port, process::Router, wait_until, Etcd, Redis,
    },
    unique,
};

/// Once a panic inside the rate limiter library: a window per request of ~600 years.
const POISON: &str =
    r#"{"module":"log","rate_limit":{"max_requests":1,"window_seconds":20000000000}}"#;

async fn status_code(client: &reqwest::Client, url: String) -> StatusCode {
    client
        .post(url)
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap()
        .status()
}

/// The reason `/status` gives for a skipped key (the first whose key contains `key`).
async fn skipped_reason(base: &str, key: &str) -> Option<String> {
    let status = get_json(base, "/status").await;
    status["skipped"].as_array()?.iter().find_map(|s| {
        s["key"]
            .as_str()
            .filter(|k| k.contains(key))
            .and(s["reason"].as_str().map(ToOwned::to_owned))
    })
}

/// A router process on the file backend serving `webhooks` and `connections`.
async fn file_router(
    webhooks: Value,
    connections: Value,
    env: &[(&str, &str)],
) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "webhooks.json", &webhooks);
    write_json(dir.path(), "connections.json", &connections);
    let router = Router::start(dir.path(), env);
    router.wait_ready().await;
    (router, dir)
}

/// A router process on the etcd backend under `prefix`.
fn etcd_router(dir: &std::path::Path, etcd: &Etcd, prefix: &str, env: &[(&str, &str)]) -> Router {
    Router::on_etcd(dir, etcd, prefix, env)
}

// 1. A panic while applying an entry ----------------------------------------------------

#[tokio::test]
async fn an_entry_that_panicked_the_provider_is_skipped_and_every_later_change_applies() {
    let etcd = Etcd::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    let dir = tempfile::tempdir().unwrap();
    etcd.put(&format!("{prefix}good/webhooks/old"), r#"{"module":"log"}"#)
        .await;
    let mut router = etcd_router(dir.path(), &etcd, &prefix, &[]);
    router.wait_ready().await;
    let client = reqwest::Client::new();

    // The attack, written by one namespace while the instance runs.
    etcd.put(&format!("{prefix}evil/webhooks/poison"), POISON)
        .await;
    // Every later put and delete, in every namespace, still applies.
    etcd.put(&format!("{prefix}good/webhooks/new"), r#"{"module":"log"}"#)
        .await;
    etcd.delete(&format!("{prefix}good/webhooks/old")).await;
    wait_until(Duration::from_secs(10), "later changes applied", || async {
        status_code(&client, router.url("/webhook/good/new")).await == StatusCode::OK
            && status_code(&client, router.url("/webhook/good/old")).await == StatusCode::NOT_FOUND
    })
    .await;
    let reason = skipped_reason(&router.base(), "evil/webhooks/poison")
        .await
        .expect("the entry is listed as skipped");
    assert!(reason.contains("window_seconds"), "{reason}");
    assert_eq!(
        status_code(&client, router.url("/webhook/evil/poison")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "invalid with no last good value: 503 webhook_invalid"
    );
    let health = get_json(&router.base(), "/health").await;
    assert_eq!(health["status"], "healthy", "{health}");

    // A restart with the entry in etcd gets ready and serves everyone else.
    router.kill();
    let router = etcd_router(dir.path(), &etcd, &prefix, &[]);
    router.wait_ready().await;
    assert_eq!(
        status_code(&client, router.url("/webhook/good/new")).await,
        StatusCode::OK
    );
    assert!(!router.logs().contains("panicked"), "{}", router.logs());
}

#[tokio::test]
async fn the_file_backend_and_check_refuse_the_entry_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!(r#"{{"poison": {POISON}, "fine": {{"module": "log"}}}}"#);
    std::fs::write(dir.path().join("webhooks.json"), webhooks).unwrap();
    write_json(dir.path(), "connections.json", &json!({}));
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(
        status_code(&client, router.url("/webhook/fine")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_code(&client, router.url("/webhook/poison")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--webhooks"])
        .arg(dir.path().join("webhooks.json"))
        .arg("--connections")
        .arg(dir.path().join("connections.json"))
        .env_remove("CONFIG_BACKEND")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{:?}", output.stderr);
    assert!(stdout.contains("window_seconds"), "{stdout}");
    assert!(stdout.contains("1 valid, 1 invalid"), "{stdout}");
}

// 2. Long chains ---------------------------------------------------------------------------

/// `VmRSS` in MiB and `Threads` of a process, from /proc.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:") / 1024, field("Threads:"))
}

#[tokio::test]
async fn a_chain_longer_than_max_chain_length_is_invalid() {
    let chain = |n: usize| json!({"chain": vec![json!({"module": "log"}); n]});
    let (router, _dir) = file_router(
        json!({"sixteen": chain(16), "seventeen": chain(17), "huge": chain(10_000)}),
        json!({}),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    assert_eq!(
        status_code(&client, router.url("/webhook/sixteen")).await,
        StatusCode::OK
    );
    for id in ["seventeen", "huge"] {
        assert_eq!(
            status_code(&client, router.url(&format!("/webhook/{id}"))).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let reason = skipped_reason(&router.base(), &format!("#{id}"))
            .await
            .unwrap();
        assert!(reason.contains("MAX_CHAIN_LENGTH is 16"), "{reason}");
    }
}

#[tokio::test]
async fn spooled_destinations_that_are_down_keep_memory_and_threads_flat() {
    const WEBHOOKS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: every attempt fails at once, every record stays spooled.
    let down = free_port();
    let chain: Vec<Value> = (0..16)
        .map(|i| {
            json!({"module": "redis_stream", "connection": "down",
                   "module-config": {"stream": format!("s{i}")}})
        })
        .collect();
    let webhooks: serde_json::Map<String, Value> = (0..WEBHOOKS)
        .map(|i| {
            (
                format!("w{i}"),
                json!({"chain": chain, "spool": "always", "chain-config": {"execution": "parallel"}}),
            )
        })
        .collect();
    write_json(dir.path(), "webhooks.json", &Value::Object(webhooks));
    write_json(
        dir.path(),
        "connections.json",
        &json!({"down": {"type": "redis", "host": "127.0.0.1", "port": down}}),
    );
    let router = Router::start(dir.path(), &[("RUST_LOG", "warn")]);
    router.wait_ready().await;
    let pid = router.pid();
    let (rss_before, _) = rss_and_threads(pid);

    let client = reqwest::Client::new();
    let body = json!({"payload": "x".repeat(1000)});
    let answers = futures_util::future::join_all((0..WEBHOOKS).map(|i| {
        let (client, url, body) = (client.clone(), router.url(&format!("/webhook/w{i}")), &body);
        async move { client.post(url).json(body).send().await.unwrap().status() }
    }))
    .await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    let queued = (WEBHOOKS * 16) as f64;
    wait_until(Duration::from_secs(30), "every record spooled", || async {
        let spool = get_json(&router.base(), "/health").await;
        spool["spool"]["backlog"].as_f64() == Some(queued)
    })
    .await;
    // Every destination gets tried (and fails) a few times while we watch.
    let mut worst = (0, 0);
    for _ in 0..20 {
        let (rss, threads) = rss_and_threads(pid);
        worst = (worst.0.max(rss), worst.1.max(threads));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (rss, threads) = worst;
    eprintln!("fan-out: RSS {rss_before} -> at most {rss} MiB, at most {threads} threads");
    assert!(rss < 200, "RSS {rss} MiB (was {rss_before} MiB before)");
    assert!(threads < 64, "{threads} threads");
    let status = get_json(&router.base(), "/status").await;
    assert_eq!(
        status["spool"]["backlog"].as_f64(),
        Some(queued),
        "{status}"
    );
}

#[tokio::test]
async fn the_log_module_writes_at_most_its_limit_of_a_body_per_line() {
    let (router, _dir) = file_router(
        json!({
            "big": {"module": "log", "data_type": "blob"},
            "small": {"module": "log", "data_type": "blob", "module-config": {"max_body_bytes": 100}},
        }),
        json!({}),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    for (id, size, shown) in [("big", 200_000, 65_536), ("small", 5_000, 100)] {
        let body = format!("{id}-{}", "y".repeat(size - id.len() - 1));
        let response = client
            .post(router.url(&format!("/webhook/{id}")))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let marker = format!("[truncated: {size} bytes in all]");
        router.wait_log(&marker).await;
        let logs = router.logs();
        let line = logs.lines().find(|l| l.contains(&marker)).unwrap();
        assert!(line.len() < shown + 1_000, "{id}: a line of {}", line.len());
        assert!(line.len() > shown, "{id}: a line of {}", line.len());
    }
}

// 3. A schema pattern that backtracks ------------------------------------------------------

#[tokio::test]
async fn a_backtracking_schema_pattern_makes_the_entry_invalid_and_linear_ones_work() {
    let schema = |pattern: &str| {
        json!({"module": "log", "json_schema": {"type": "array",
            "items": {"type": "string", "pattern": pattern}}})
    };
    let (router, _dir) = file_router(
        json!({
            "slow": schema("^(?:(a|a)*\\1c|.*)$"),
            "linear": schema("^(?:a|a)*c?$"),
        }),
        json!({}),
        &[],
    )
    .await;
    let reason = skipped_reason(&router.base(), "#slow").await.unwrap();
    assert!(reason.contains("json_schema"), "{reason}");
    let client = reqwest::Client::new();
    // The attack's body: 2,000 strings that make a backtracking engine explore.
    let body: Vec<String> = (0..2000).map(|_| "a".repeat(18)).collect();
    for (id, expected) in [
        ("slow", StatusCode::SERVICE_UNAVAILABLE),
        ("linear", StatusCode::OK),
    ] {
        let response = client
            .post(router.url(&format!("/webhook/{id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{id}");
    }
    let refused = client
        .post(router.url("/webhook/linear"))
        .json(&["ab"])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

// 4. Waiting on a duplicate holds a delivery slot ------------------------------------------

#[tokio::test]
async fn copies_waiting_on_a_delivery_count_against_max_in_flight() {
    // A destination that accepts the connection and never answers: the first copy waits.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    // Every body is read (one address may read them all here); only the delivery slots bound
    // what waits. The first copy waits up to a minute: no slot frees up during the test, however
    // slowly the 300 uploads arrive.
    let (router, _dir) = file_router(
        json!({"w": {"module": "redis_stream", "connection": "silent", "spool": "off",
            "timeout_ms": 60000, "module-config": {"stream": "s"},
            "dedup": {"key": {"header": "X-Delivery"}}}}),
        json!({"silent": {"type": "redis", "host": "127.0.0.1", "port": silent_port}}),
        &[
            ("MAX_IN_FLIGHT", "20"),
            ("MAX_BODY_READERS_PER_CLIENT", "1024"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    // 128 KiB each: small enough that all 300 arrive within a second even on a loaded machine,
    // before the silent destination's client gives up on the first copy.
    let body = format!("\"{}\"", "x".repeat((128 << 10) - 2)).into_bytes();
    // The `error` of every answer so far.
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let copies: Vec<_> = (0..300)
        .map(|_| {
            let (client, url, body) = (client.clone(), router.url("/webhook/w"), body.clone());
            let answers = std::sync::Arc::clone(&answers);
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("x-delivery", "same-id")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let error = response.json::<Value>().await.unwrap_or_default()["error"].clone();
                answers.lock().unwrap().push(error);
            })
        })
        .collect();
    // While the first copy waits on its silent destination, whoever waits holds a slot: at most
    // MAX_IN_FLIGHT requests (and their bodies) are held, and every other copy is answered
    // `overloaded` at once.
    wait_until(Duration::from_secs(50), "280 copies answered", || async {
        answers.lock().unwrap().len() >= 280
    })
    .await;
    let in_flight = crate::support::metric(&router.base(), "switchyard_deliveries_in_flight").await;
    assert!(in_flight <= 20.0, "{in_flight} in flight");
    let answers = answers.lock().unwrap().clone();
    assert!(
        answers.iter().all(|e| e.as_str() == Some("overloaded")),
        "{answers:?}"
    );
    for copy in copies {
        copy.abort();
    }
    held.abort();
}

// 5. `Host` replays a Twilio signature -----------------------------------------------------

#[tokio::test]
async fn a_host_outside_the_host_port_grammar_is_refused_on_every_route() {
    let (router, _dir) = file_router(
        json!({"twilio2": {"module": "log", "data_type": "form",
            "hmac": {"provider": "twilio", "secret": "twilio-auth-token"}}}),
        json!({}),
        &[],
    )
    .await;
    for path in ["/webhook/twilio2", "/health", "/status", "/nowhere"] {
        for host in ["public.example/webhook/twilioBody", "a@b", "x y", "h:99999"] {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", router.port))
                .await
                .unwrap();
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: \
                 application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\
                 Connection: close\r\n\r\na=1"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
                .await
                .unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "{path} {host}: {answer}"
            );
            assert!(answer.contains("\"invalid_host\""), "{answer}");
            assert!(
                answer.to_ascii_lowercase().contains("x-request-id:"),
                "{answer}"
            );
        }
    }
    // A well-formed Host is served as before.
    let health = reqwest::Client::new()
        .get(router.url("/health"))
        .header("host", "public.example:443")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

// 6. One namespace writing into another's destination --------------------------------------

#[tokio::test]
async fn a_connection_open_to_some_namespaces_and_prefixes_keeps_the_others_out() {
    let etcd = Etcd::start().await;
    let redis = Redis::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    let dir = tempfile::tempdir().unwrap();
    let shared = |namespaces: Value| {
        json!({"type": "redis", "host": "127.0.0.1", "port": redis.port,
            "namespaces": namespaces, "target_prefix": "{namespace}-"})
        .to_string()
    };
    etcd.put(
        &format!("{prefix}global/connections/shared"),
        &shared(json!(["good", "evil"])),
    )
    .await;
    let stream_to = |stream: &str| {
        json!({"module": "redis_stream", "connection": "shared", "spool": "off",
            "module-config": {"stream": stream}})
        .to_string()
    };
    let good_orders = unique!("good-orders");
    let evil_orders = unique!("evil-orders");
    etcd.put(
        &format!("{prefix}good/webhooks/orders"),
        &stream_to(&good_orders),
    )
    .await;
    etcd.put(
        &format!("{prefix}evil/webhooks/steal"),
        &stream_to(&good_orders),
    )
    .await;
    etcd.put(
        &format!("{prefix}evil/webhooks/own"),
        &stream_to(&evil_orders),
    )
    .await;
    etcd.put(
        &format!("{prefix}other/webhooks/any"),
        &stream_to("other-x"),
    )
    .await;
    let router = etcd_router(dir.path(), &etcd, &prefix, &[]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let post = |path: &str| status_code(&client, router.url(path));
    assert_eq!(post("/webhook/good/orders").await, StatusCode::OK);
    assert_eq!(post("/webhook/evil/own").await, StatusCode::OK);
    assert_eq!(
        post("/webhook/evil/steal").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        post("/webhook/other/any").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let reason = skipped_reason(&router.base(), "evil/webhooks/steal")
        .await
        .unwrap();
    assert!(reason.contains("starting with \"evil-\""), "{reason}");
    let reason = skipped_reason(&router.base(), "other/webhooks/any")
        .await
        .unwrap();
    assert!(reason.contains("may not use this connection"), "{reason}");

    // Tightened while `evil/own` is live: its next request is refused at delivery.
    etcd.put(
        &format!("{prefix}global/connections/shared"),
        &shared(json!(["good"])),
    )
    .await;
    wait_until(Duration::from_secs(10), "the rule applied", || async {
        post("/webhook/evil/own").await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // The polls before the rule applied were delivered; none after it.
    let evil_before = redis.stream_payloads(&evil_orders).await.len();
    assert_eq!(
        post("/webhook/evil/own").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(post("/webhook/good/orders").await, StatusCode::OK);
    assert_eq!(redis.stream_payloads(&good_orders).await.len(), 2);
    assert_eq!(redis.stream_payloads(&evil_orders).await.len(), evil_before);
}

// 7. The smaller ones ----------------------------------------------------------------------

#[tokio::test]
async fn get_handshakes_run_the_address_and_credential_checks_first() {
    let (router, _dir) = file_router(
        json!({
            "meta": {"module": "log", "ip_whitelist": ["10.9.9.9"],
                "handshake": {"provider": "meta", "verify_token": "vt"}},
            "keyed": {"module": "log",
                "query_auth": {"parameter_name": "key", "api_key": "k-123"},
                "handshake": {"provider": "meta", "verify_token": "vt"}},
        }),
        json!({}),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let challenge = "hub.mode=subscribe&hub.verify_token=vt&hub.challenge=1158201444";
    let get = |query: String| {
        let client = client.clone();
        async move { client.get(query).send().await.unwrap() }
    };
    let refused = get(router.url(&format!("/webhook/meta?{challenge}"))).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = get(router.url(&format!("/webhook/keyed?{challenge}"))).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let answered = get(router.url(&format!("/webhook/keyed?key=k-123&{challenge}"))).await;
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(answered.text().await.unwrap(), "1158201444");
}

#[tokio::test]
async fn slack_tokens_never_reach_a_module() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let (router, _dir) = file_router(
        json!({
            "events": {"module": "log", "hmac": {"provider": "slack", "secret": secret}},
            "interactive": {"module": "log", "data_type": "form",
                "hmac": {"provider": "slack", "secret": secret}},
        }),
        json!({}),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let events =
        r#"{"token":"events-token-1","type":"event_callback","event":{"type":"app_mention"}}"#;
    let payload: String = form_urlencoded::byte_serialize(
        br#"{"type":"block_actions","token":"form-token-2","user":{"id":"U1"}}"#,
    )
    .collect();
    let interactive = format!("payload={payload}");
    for (id, body, content_type) in [
        ("events", events.to_owned(), "application/json"),
        (
            "interactive",
            interactive,
            "application/x-www-form-urlencoded",
        ),
    ] {
        let ts = crate::support::unix_now().to_string();
        let signature = crate::support::hmac_sha256(
            secret.as_bytes(),
            &[b"v0:", ts.as_bytes(), b":", body.as_bytes()],
        );
        let response = client
            .post(router.url(&format!("/webhook/{id}")))
            .header("content-type", content_type)
            .header("x-slack-request-timestamp", &ts)
            .header(
                "x-slack-signature",
                format!("v0={}", hex::encode(signature)),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{id}");
    }
    router.wait_log("block_actions").await;
    router.wait_log("app_mention").await;
    let logs = router.logs();
    assert!(!logs.contains("events-token-1"), "{logs}");
    assert!(!logs.contains("form-token-2"), "{logs}");
    assert!(logs.contains("***"), "{logs}");
}

#[tokio::test]
async fn long_delivery_ids_that_share_a_prefix_are_different_ids() {
    let (router, _dir) = file_router(
        json!({"w": {"module": "log", "dedup": {"key": {"header": "X-Delivery"}}}}),
        json!({}),
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let shared = "d".repeat(3000);
    let mut words = Vec::new();
    for id in [
        format!("{shared}-1"),
        format!("{shared}-2"),
        format!("{shared}-1"),
    ] {
        let answer: Value = client
            .post(router.url("/webhook/w"))
            .header("x-delivery", id)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        words.push(answer["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(words, ["accepted", "accepted", "duplicate"]);
}

#[tokio::test]
async fn the_admin_listener_refuses_foreign_hosts_and_web_pages() {
    let admin = free_port();
    let (_router, _dir) = file_router(
        json!({}),
        json!({}),
        &[
            ("ADMIN_PORT", &admin.to_string()),
            ("ADMIN_HOSTS", "admin.internal"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{admin}/status");
    let get = |host: Option<&str>, origin: Option<&str>| {
        let mut request = client.get(&url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.unwrap() }
    };
    assert_eq!(get(None, None).await.status(), StatusCode::OK);
    assert_eq!(
        get(Some("admin.internal:9000"), None).await.status(),
        StatusCode::OK
    );
    // DNS rebinding: a page's own name, now resolving to this host.
    let refused = get(Some("attacker.example:9000"), None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "host_not_allowed"
    );
    let refused = get(None, Some("http://attacker.example")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "origin_not_allowed"
    );
    // `localhost` is not listed here (ADMIN_HOSTS replaces the default).
    assert_eq!(
        get(Some("localhost"), None).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn without_an_admin_port_the_spool_answers_local_unproxied_clients_only() {
    let (router, _dir) = file_router(json!({}), json!({}), &[]).await;
    let client = reqwest::Client::new();
    for path in ["/spool", "/spool/dead-letters"] {
        let local = client.get(router.url(path)).send().await.unwrap();
        assert_eq!(local.status(), StatusCode::OK, "{path}");
        let proxied = client
            .get(router.url(path))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(proxied.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Replay and purge are served (the CLI works without ADMIN_PORT), local only too.
    let replay = client
        .post(router.url("/spool/replay"))
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.json::<Value>().await.unwrap()["replayed"], 0);
    let proxied = client
        .post(router.url("/spool/purge"))
        .header("forwarded", "for=203.0.113.9")
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_hundred_attacking_addresses_leave_reader_slots_for_everyone_else() {
    let (router, _dir) = file_router(
        json!({"w": {"module": "log"}}),
        json!({}),
        &[("BODY_READ_TIMEOUT_MS", "60000")],
    )
    .await;
    let mut held = Vec::new();
    // Each address tries 11 uploads: 1,100 in all, more than the 1,024 slots (the old share of
    // 64 per client let them take every slot); the share (8 by default) is all each gets.
    for host in 10..110u8 {
        let from: IpAddr = format!("127.0.1.{host}").parse().unwrap();
        for _ in 0..11 {
            held.push(stalled_head(router.port, from).await);
        }
    }
    wait_until(
        Duration::from_secs(20),
        "800 uploads being read",
        || async {
            crate::support::metric(&router.base(), "switchyard_body_reads_in_progress").await
                >= 800.0
        },
    )
    .await;
    let reading = crate::support::metric(&router.base(), "switchyard_body_reads_in_progress").await;
    assert_eq!(reading, 800.0, "8 per address, no more");
    // A sender whose body arrives a little after its head is still served.
    let mut late = stalled_head(router.port, "127.0.2.1".parse().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    late.write_all(b"}").await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut late, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
}

/// A connection from `from` that sent a request head and the first byte of a 2-byte body.
async fn stalled_head(port: u16, from: IpAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /webhook/w HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{",
        )
        .await
        .unwrap();
    stream
}
