//! Redis delivery against a real redis-server: every module end to end, live connection
//! changes, a missing connection, and an outage in the middle of a steady stream.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::files::write_json,
    support::{
        app::{etcd_settings, file_settings},
        load::Load,
        wait_until, Etcd, Redis, TestApp,
    },
    unique,
};

/// A file-backend app with one Redis connection `r` and the given webhooks.
async fn app_with(redis: &Redis, webhooks: Value) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    write_json(dir.path(), "connections.json", &json!({ "r": connection }));
    write_json(dir.path(), "webhooks.json", &webhooks);
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    (app, dir)
}

async fn post_raw(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/webhook/{path}")))
        .header("content-type", "application/json")
        .header("x-github-delivery", "delivery-1")
        .header("authorization", "Bearer secret")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_list_receives_the_envelope_and_is_trimmed() {
    let redis = Redis::start().await;
    let key = unique!("list");
    let rkey = unique!("rlist");
    let (app, _dir) = app_with(
        &redis,
        json!({
            "l": {"module": "redis_list", "connection": "r",
                  "module-config": {"key": key, "max_length": 3}},
            "r": {"module": "redis_list", "connection": "r",
                  "module-config": {"key": rkey, "direction": "rpush"}},
        }),
    )
    .await;

    let response = post_raw(&app, "l", r#"{"n": 0,  "spaced": true}"#).await;
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.json::<Value>().await.unwrap()["request_id"].clone();

    let mut conn = redis.conn().await;
    let items: Vec<String> = conn.lrange(&key, 0, -1).await.unwrap();
    assert_eq!(items.len(), 1);
    // The payload is embedded exactly as sent.
    assert!(
        items[0].contains(r#""payload":{"n": 0,  "spaced": true}"#),
        "{}",
        items[0]
    );
    let envelope: Value = serde_json::from_str(&items[0]).unwrap();
    assert_eq!(envelope["namespace"], "default");
    assert_eq!(envelope["webhook"], "l");
    assert_eq!(envelope["request_id"], request_id);
    assert_eq!(envelope["payload_encoding"], "json");
    assert_eq!(envelope["headers"]["x-github-delivery"], "delivery-1");
    assert!(envelope["headers"].get("authorization").is_none());
    assert!(envelope["received_at"].as_str().unwrap().ends_with('Z'));

    for n in 1..5 {
        let status = post_raw(&app, "l", &format!(r#"{{"n": {n}}}"#))
            .await
            .status();
        assert_eq!(status, StatusCode::OK);
    }
    let items: Vec<String> = conn.lrange(&key, 0, -1).await.unwrap();
    let ns: Vec<i64> = items
        .iter()
        .map(|i| {
            serde_json::from_str::<Value>(i).unwrap()["payload"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ns,
        [4, 3, 2],
        "lpush keeps the newest at the head, trimmed to 3"
    );

    for n in 0..3 {
        post_raw(&app, "r", &format!(r#"{{"n": {n}}}"#)).await;
    }
    let items: Vec<String> = conn.lrange(&rkey, 0, -1).await.unwrap();
    let ns: Vec<i64> = items
        .iter()
        .map(|i| {
            serde_json::from_str::<Value>(i).unwrap()["payload"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [0, 1, 2], "rpush appends at the tail");
}

#[tokio::test]
async fn redis_stream_entries_carry_the_exact_body() {
    let redis = Redis::start().await;
    let stream = unique!("stream");
    let (app, _dir) = app_with(
        &redis,
        json!({
            "s": {"module": "redis_stream", "connection": "r", "data_type": "blob",
                  "module-config": {"stream": stream, "maxlen": 1000}},
        }),
    )
    .await;

    let body: &[u8] = b"\x00\xffnot json at all";
    let response = app
        .client
        .post(app.url("/webhook/default/s"))
        .header("x-request-id", "fixed-id")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let mut conn = redis.conn().await;
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    assert_eq!(entries.ids.len(), 1);
    let fields = &entries.ids[0].map;
    let field =
        |name: &str| -> Vec<u8> { redis::from_redis_value_ref(fields.get(name).unwrap()).unwrap() };
    assert_eq!(field("payload"), body);
    assert_eq!(field("namespace"), b"default");
    assert_eq!(field("webhook"), b"s");
    assert_eq!(field("request_id"), b"fixed-id");
    let headers: Value = serde_json::from_slice(&field("headers")).unwrap();
    assert!(headers.is_object());
}

#[tokio::test]
async fn redis_publish_reaches_a_subscriber() {
    let redis = Redis::start().await;
    let channel = unique!("chan");
    let (app, _dir) = app_with(
        &redis,
        json!({"p": {"module": "redis_publish", "connection": "r",
                     "module-config": {"channel": channel}}}),
    )
    .await;
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(&channel).await.unwrap();

    assert_eq!(
        post_raw(&app, "p", r#"{"event":"x"}"#).await.status(),
        StatusCode::OK
    );
    let message = tokio::time::timeout(Duration::from_secs(10), pubsub.on_message().next())
        .await
        .expect("a message within 10 s")
        .unwrap();
    let envelope: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
    assert_eq!(envelope["payload"], json!({"event": "x"}));
    assert_eq!(envelope["webhook"], "p");
}

#[tokio::test]
async fn fan_out_chain_writes_every_destination() {
    let redis = Redis::start().await;
    let (list, stream) = (unique!("list"), unique!("stream"));
    for execution in ["parallel", "sequential"] {
        let (app, _dir) = app_with(
            &redis,
            json!({"fan": {"chain": [
                {"module": "redis_list", "connection": "r", "module-config": {"key": list}},
                {"module": "redis_stream", "connection": "r", "module-config": {"stream": stream}},
                {"module": "log"}
            ], "chain-config": {"execution": execution}}}),
        )
        .await;
        assert_eq!(post_raw(&app, "fan", "{}").await.status(), StatusCode::OK);
    }
    let mut conn = redis.conn().await;
    let len: usize = conn.llen(&list).await.unwrap();
    let xlen: usize = conn.xlen(&stream).await.unwrap();
    assert_eq!((len, xlen), (2, 2));
}

#[tokio::test]
async fn missing_connection_answers_503_and_recovers_when_it_appears() {
    let redis = Redis::start().await;
    let key = unique!("list");
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "connections.json", &json!({}));
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"w": {"module": "redis_list", "connection": "late",
                      "module-config": {"key": key}}}),
    );
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;

    let response = post_raw(&app, "w", "{}").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "connection_missing");
    assert!(body["message"].as_str().unwrap().len() > 10);

    // A connection of the wrong type is not silently used.
    write_json(
        dir.path(),
        "connections.json",
        &json!({"late": {"type": "kafka", "bootstrap_servers": "127.0.0.1:1"}}),
    );
    wait_until(
        Duration::from_secs(10),
        "kafka connection loaded",
        || async { app.health().await.1["config"]["connections"] == 1 },
    )
    .await;
    let body: Value = post_raw(&app, "w", "{}").await.json().await.unwrap();
    assert_eq!(body["error"], "connection_missing");

    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    write_json(
        dir.path(),
        "connections.json",
        &json!({ "late": connection }),
    );
    app.wait_status("w", StatusCode::OK).await;
    let len: usize = redis.conn().await.llen(&key).await.unwrap();
    assert_eq!(len, 1);
}

#[tokio::test]
async fn changing_a_connection_in_etcd_moves_traffic_to_the_new_server() {
    let (first, second) = (Redis::start().await, Redis::start().await);
    let etcd = Etcd::start().await;
    let p = format!("/{}/", unique!("cwm"));
    let key = unique!("list");
    etcd.put(&format!("{p}global/connections/main"), &first.connection())
        .await;
    etcd.put(
        &format!("{p}acme/webhooks/w"),
        &json!({"module": "redis_list", "connection": "main", "module-config": {"key": key}})
            .to_string(),
    )
    .await;
    let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
    assert_eq!(app.status_of("acme/w").await, StatusCode::OK);
    let on_first: usize = first.conn().await.llen(&key).await.unwrap();
    assert_eq!(on_first, 1);

    etcd.put(&format!("{p}global/connections/main"), &second.connection())
        .await;
    let mut second_conn = second.conn().await;
    wait_until(
        Duration::from_secs(10),
        "traffic on the second server",
        || {
            let app = &app;
            let key = key.clone();
            let mut conn = second_conn.clone();
            async move {
                assert_eq!(app.status_of("acme/w").await, StatusCode::OK);
                conn.llen::<_, usize>(&key).await.unwrap() > 0
            }
        },
    )
    .await;
    let before: usize = first.conn().await.llen(&key).await.unwrap();
    assert_eq!(app.status_of("acme/w").await, StatusCode::OK);
    let after: usize = first.conn().await.llen(&key).await.unwrap();
    assert_eq!(before, after, "nothing more goes to the first server");
    let _: usize = second_conn.llen(&key).await.unwrap();
}

#[tokio::test]
async fn redis_outage_loses_nothing_that_was_acknowledged() {
    let mut redis = Redis::start().await;
    let stream = unique!("stream");
    let (app, _dir) = app_with(
        &redis,
        json!({"s": {"module": "redis_stream", "connection": "r", "timeout_ms": 2000,
                     "module-config": {"stream": stream}}}),
    )
    .await;
    const TOTAL: usize = 600;
    let load = Load::start(app.url("/webhook/s"), TOTAL, 4, |seq| {
        format!(r#"{{"seq": {seq}, "pad": "{}"}}"#, "x".repeat(seq % 50))
    });
    load.wait_acknowledged(100).await;
    redis.stop();
    load.wait_refused(5).await;
    redis.restart().await;
    let outcome = load.finish().await;
    assert_eq!(outcome.sent.len(), TOTAL);

    let mut conn = redis.conn().await;
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    let stored: Vec<String> = entries
        .ids
        .iter()
        .map(|e| {
            let bytes: Vec<u8> =
                redis::from_redis_value_ref(e.map.get("payload").unwrap()).unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    outcome.assert_all_acknowledged_are_stored(&stored, "redis outage");
    assert!(outcome.refused() >= 5, "the outage was seen by senders");
    let accepted = outcome.acknowledged();
    // Sending resumed after the restart.
    assert!(stored.len() > 100 && accepted.len() > 100);
}

/// The forwarder's batch of stream entries goes as one `MULTI`/`EXEC`. Redis queues every
/// command and reports a refusal only inside `EXEC`'s reply: that must fail the batch (a batch
/// reported as delivered would be dropped from the spool), and after it the connection works.
#[tokio::test]
async fn a_stream_batch_refused_inside_its_transaction_is_an_error() {
    let redis = Redis::start().await;
    let key = unique!("wrongtype");
    let mut conn = redis.conn().await;
    let () = conn.set(&key, "not a stream").await.unwrap();
    let client = switchyard::connections::redis::RedisClient::build(
        &switchyard::config::connection::RedisConnection {
            host: Some("127.0.0.1".into()),
            port: Some(redis.port),
            db: None,
            username: None,
            password: None,
            tls: false,
            url: None,
            namespaces: None,
            target_prefix: None,
        },
    )
    .unwrap();
    let entry: Vec<(&str, &[u8])> = vec![("payload", b"{}".as_slice())];
    let batch = vec![entry.clone(), entry.clone(), entry];
    let refused = client.xadd_all(&key, None, &batch).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.message.contains("WRONGTYPE") && e.permanent),
        "a refused command is permanent: {refused:?}"
    );

    let stream = unique!("stream");
    client.xadd_all(&stream, None, &batch).await.unwrap();
    let length: usize = conn.xlen(&stream).await.unwrap();
    assert_eq!(length, 3, "the batch, in one transaction");
}

#[tokio::test]
async fn a_redis_that_accepts_and_never_answers_fails_a_delivery_at_the_connection_s_cap() {
    // A server that takes connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "connections.json",
        &json!({"r": {"type": "redis", "host": "127.0.0.1", "port": port}}),
    );
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"w": {"module": "redis_stream", "connection": "r", "spool": "off",
                      "timeout_ms": 20000, "module-config": {"stream": "s"}}}),
    );
    let app = TestApp::spawn_ready(file_settings(dir.path())).await;
    let started = std::time::Instant::now();
    let response = post_raw(&app, "w", "{}").await;
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The README: about 6.5 s (3 connection attempts of 2 s), not the webhook's 20 s.
    assert!(
        took > Duration::from_secs(4) && took < Duration::from_secs(12),
        "failed after {took:?}"
    );
    silent.abort();
}
