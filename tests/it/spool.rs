//! The spool against real processes: Redis and the router SIGKILLed mid-stream, the Kafka broker
//! frozen, the router killed at random points while it writes, a full spool, dead letters with
//! replay and purge through `switchyard spool`. The one check that matters each time: every
//! request that got a 2xx ends up at its destination.

use std::{collections::HashMap, path::Path, process::Stdio, time::Duration};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::{
        files::write_json, get_json, load::Load, process::Router, wait_until, Freeze as _, Kafka,
        Redis,
    },
    unique,
};

/// A config directory with connection `r` (or `k`) and `webhooks`.
fn config(connections: Value, webhooks: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_json(dir.path(), "connections.json", &connections);
    write_json(dir.path(), "webhooks.json", &webhooks);
    dir
}

fn redis_config(redis: &Redis, webhook: Value) -> tempfile::TempDir {
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    config(json!({"r": connection}), json!({"s": webhook}))
}

fn body(seq: usize) -> String {
    format!(r#"{{"seq":{seq},"pad":"{}"}}"#, "x".repeat(seq % 40))
}

/// Waits until every body in `acknowledged` is in what `stored()` returns; then reports
/// duplicates (allowed: at-least-once) and returns how many there were.
async fn wait_all_delivered<F, Fut>(acknowledged: &[String], what: &str, stored: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let last = loop {
        let last = stored().await;
        let have: std::collections::HashSet<&String> = last.iter().collect();
        let missing = acknowledged.iter().filter(|b| !have.contains(b)).count();
        if missing == 0 {
            break last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {missing} of {} acknowledged requests never arrived",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for body in &last {
        *counts.entry(body).or_default() += 1;
    }
    let duplicates = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{what}: {} acknowledged, all delivered; {} entries at the destination, {duplicates} \
         duplicates",
        acknowledged.len(),
        last.len()
    );
    duplicates
}

#[tokio::test]
async fn redis_and_the_router_killed_mid_stream_lose_no_acknowledged_request() {
    let mut redis = Redis::start().await;
    let stream = unique!("spool");
    // Defaults: `spool: on_failure`, timeout_ms 5000, SPOOL_HANDOFF_MS 2000.
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "module-config": {"stream": stream}}),
    );
    let mut router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let port = router.port;

    let load = Load::start_with(router.url("/webhook/s"), 1_500, 4, body, true);
    load.wait_acknowledged(100).await;
    redis.kill();
    load.wait_stored(50).await;
    let health = get_json(&router.base(), "/health").await;
    assert_eq!(
        health["status"], "healthy",
        "serving from the spool: {health}"
    );
    assert_eq!(health["components"]["spool"], "forwarding backlog");

    // The router dies mid-stream and comes back on the same directory.
    router.kill();
    let router = Router::start_on(dir.path(), port, &[]);
    router.wait_ready().await;
    let before = load.stored();
    load.wait_stored(before + 50).await;

    redis.restart().await;
    let outcome = load.finish().await;
    assert_eq!(
        outcome.count(StatusCode::SERVICE_UNAVAILABLE),
        0,
        "every request that reached a router got a 2xx"
    );
    assert!(
        outcome.slowest < Duration::from_secs(3),
        "answered within 3 s during the outage (slowest {:?})",
        outcome.slowest
    );
    let acknowledged: Vec<String> = outcome.acknowledged().into_iter().cloned().collect();
    eprintln!(
        "redis + router killed: {} answered 200, {} answered 202, {} sent while the router was down",
        outcome.count(StatusCode::OK),
        outcome.count(StatusCode::ACCEPTED),
        outcome.unreachable
    );
    wait_all_delivered(&acknowledged, "redis + router killed", || {
        redis.stream_payloads(&stream)
    })
    .await;
    // Drained: the backlog is gone and new requests go straight through again.
    wait_until(Duration::from_secs(30), "the spool to drain", || async {
        get_json(&router.base(), "/health").await["spool"]["backlog"] == 0
    })
    .await;
    let direct = reqwest::Client::new()
        .post(router.url("/webhook/s"))
        .body(r#"{"after":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_frozen_kafka_broker_and_a_killed_router_lose_no_acknowledged_request() {
    let kafka = Kafka::start().await;
    let topic = unique!("spool");
    kafka.create_topic(&topic, 1).await;
    let connection: Value = serde_json::from_str(&kafka.connection()).unwrap();
    let dir = config(
        json!({"k": connection}),
        json!({"w": {"module": "kafka", "connection": "k", "module-config": {"topic": topic}}}),
    );
    let mut router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let port = router.port;

    let load = Load::start_with(router.url("/webhook/w"), 600, 4, body, true);
    load.wait_acknowledged(50).await;
    kafka.pause();
    load.wait_stored(30).await;
    router.kill();
    let router = Router::start_on(dir.path(), port, &[]);
    router.wait_ready().await;
    let before = load.stored();
    load.wait_stored(before + 30).await;
    kafka.resume();
    let outcome = load.finish().await;
    assert_eq!(outcome.count(StatusCode::SERVICE_UNAVAILABLE), 0);
    assert!(
        outcome.slowest < Duration::from_secs(3),
        "answered within 3 s while the broker was frozen (slowest {:?})",
        outcome.slowest
    );
    let acknowledged: Vec<String> = outcome.acknowledged().into_iter().cloned().collect();
    wait_all_delivered(&acknowledged, "kafka frozen + router killed", || async {
        kafka
            .consume(&topic, 1, acknowledged.len())
            .await
            .iter()
            .map(|r| String::from_utf8(r.value.clone()).unwrap())
            .collect()
    })
    .await;
    drop(router);
}

#[tokio::test]
async fn the_router_killed_at_random_points_while_spooling_loses_nothing_acknowledged() {
    let redis = Redis::start().await;
    let stream = unique!("always");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "spool": "always",
               "module-config": {"stream": stream}}),
    );
    let mut acknowledged: Vec<String> = Vec::new();
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let mut router = Router::start(dir.path(), &[]);
        // The store opens after every kill (redb repairs an interrupted commit on open).
        router.wait_ready().await;
        let load = Load::start_with(
            router.url("/webhook/s"),
            usize::MAX - 1,
            16,
            unique_body,
            true,
        );
        load.wait_acknowledged(1).await;
        // A random point in the stream of commits: that is what this test is about.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..400))).await;
        router.kill();
        load.stop();
        let outcome = load.finish().await;
        assert_eq!(
            outcome.count(StatusCode::SERVICE_UNAVAILABLE),
            0,
            "round {round}"
        );
        assert_eq!(
            outcome.count(StatusCode::OK),
            0,
            "spool: always answers 202"
        );
        acknowledged.extend(outcome.acknowledged().into_iter().cloned());
    }
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    assert!(
        acknowledged.len() > ROUNDS,
        "{} acknowledged",
        acknowledged.len()
    );
    wait_all_delivered(&acknowledged, "20 SIGKILLs", || {
        redis.stream_payloads(&stream)
    })
    .await;
}

/// Distinct bodies across rounds (each round's load counts from 0 again).
fn unique_body(seq: usize) -> String {
    format!(
        r#"{{"seq":{seq},"id":"{}"}}"#,
        uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn a_full_spool_answers_503_and_delivers_everything_it_acknowledged() {
    let mut redis = Redis::start().await;
    let stream = unique!("full");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "module-config": {"stream": stream}}),
    );
    let router = Router::start(
        dir.path(),
        &[("SPOOL_MAX_BYTES", "1048576"), ("MAX_BODY_BYTES", "65536")],
    );
    router.wait_ready().await;
    redis.kill();
    let client = reqwest::Client::new();
    let (acknowledged, refused) = post_until_refused(&client, &router.url("/webhook/s"), 200).await;
    assert!(refused.headers().contains_key("retry-after"));
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "spool_full");
    let (status, health) = {
        let r = client.get(router.url("/health")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        status,
        StatusCode::OK,
        "a full spool is not a dead instance"
    );
    assert_eq!(health["components"]["spool"], "full");
    let report = get_json(&router.base(), "/status").await["spool"].clone();
    let queue = &report["queues"][0];
    assert_eq!(
        queue["destination"],
        format!("default/s:redis_stream@r/{stream}")
    );
    assert_eq!(queue["depth"], acknowledged.len());
    assert!(queue["bytes"].as_u64().unwrap() > 16 * 1024 * acknowledged.len() as u64);
    assert!(queue["oldest_age_seconds"].as_f64().is_some(), "{report}");
    assert!(report["bytes_free"].as_u64().unwrap() < 65536);

    redis.restart().await;
    wait_all_delivered(&acknowledged, "full spool", || {
        redis.stream_payloads(&stream)
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "room in the spool again",
        || async {
            client
                .post(router.url("/webhook/s"))
                .body("{}")
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
}

/// Posts distinct 16 KiB bodies to `url` until one is refused with 503 (the spool or the
/// namespace's share is full); every other answer must be 202. Returns the stored bodies and
/// the refusal. Fails after `at_most` stored ones.
async fn post_until_refused(
    client: &reqwest::Client,
    url: &str,
    at_most: usize,
) -> (Vec<String>, reqwest::Response) {
    let pad = "y".repeat(16 * 1024);
    let mut stored = Vec::new();
    loop {
        let body = format!(r#"{{"n":{},"pad":"{pad}"}}"#, stored.len());
        let answer = client.post(url).body(body.clone()).send().await.unwrap();
        match answer.status() {
            StatusCode::ACCEPTED => stored.push(body),
            StatusCode::SERVICE_UNAVAILABLE => return (stored, answer),
            other => panic!("unexpected {other}"),
        }
        assert!(stored.len() < at_most, "{url}: the spool never filled up");
    }
}

/// Posts `{"n":0}` .. `{"n":count-1}` to webhook `s`, each answered 202; returns the bodies.
async fn post_stored(router: &Router, count: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut stored = Vec::new();
    for n in 0..count {
        let body = format!(r#"{{"n":{n}}}"#);
        let answer = client
            .post(router.url("/webhook/s"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        stored.push(body);
    }
    stored
}

/// Runs `switchyard spool <args>` with `env`; returns (exit code, stdout).
async fn spool_cli(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("spool")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    let code = output.status.code().unwrap_or(-1);
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if code != 0 {
        text.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    (code, text)
}

fn spool_dir(dir: &Path) -> String {
    dir.join("spool").display().to_string()
}

/// The forwarder sends `redis_stream` batches as one `MULTI`/`EXEC`, whole once the destination
/// took a record. A command Redis refuses inside the transaction (the key now holds a string)
/// fails the batch, so nothing is counted as delivered: the records stay spooled and arrive,
/// once each, when the key can take them.
#[tokio::test]
async fn a_batch_redis_refuses_for_good_is_dead_lettered_at_once_and_replayed_once_fixed() {
    let redis = Redis::start().await;
    let stream = unique!("wrongtype");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "spool": "always",
               "module-config": {"stream": stream}}),
    );
    let admin_port = crate::support::ports::free_port().to_string();
    let router = Router::start(dir.path(), &[("ADMIN_PORT", admin_port.as_str())]);
    router.wait_ready().await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let post = |body: String| {
        let request = client.post(router.url("/webhook/s")).body(body);
        async move { request.send().await.unwrap().status() }
    };
    // Taken: the forwarder stops probing and sends whole batches.
    assert_eq!(post(body(100)).await, StatusCode::ACCEPTED);
    wait_all_delivered(&[body(100)], "first record", || {
        redis.stream_payloads(&stream)
    })
    .await;

    // The key now holds a string: every XADD (inside MULTI/EXEC) is refused with WRONGTYPE,
    // which no retry can change.
    let mut conn = redis.conn().await;
    let () = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(&stream)
        .ignore()
        .cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let bodies: Vec<String> = (0..8).map(body).collect();
    let answers = futures_util::future::join_all(bodies.iter().cloned().map(post)).await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    wait_until(Duration::from_secs(30), "8 dead letters", || async {
        get_json(&admin, "/spool").await["dead_letters"] == 8
    })
    .await;
    let spool = get_json(&admin, "/spool").await;
    let queue = &spool["queues"][0];
    assert_eq!(queue["depth"], 0, "none left to retry: {spool}");
    assert!(
        queue["retries"].as_u64().is_some_and(|r| r <= 8),
        "each refused once, never retried: {spool}"
    );
    let letters = get_json(&admin, "/spool/dead-letters").await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 8);
    assert!(
        letters.iter().all(|l| l["attempts"] == 1
            && l["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused the payload") && e.contains("WRONGTYPE"))),
        "{letters:?}"
    );

    // Fixed, then replayed: each arrives once.
    let () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    let replayed: Value = client
        .post(format!("{admin}/spool/replay"))
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["replayed"], 8);
    let duplicates = wait_all_delivered(&bodies, "replayed after the fix", || {
        redis.stream_payloads(&stream)
    })
    .await;
    assert_eq!(duplicates, 0);
}

#[tokio::test]
async fn without_the_spool_a_refusal_for_good_is_a_502_and_an_outage_a_503() {
    let mut redis = Redis::start().await;
    let key = unique!("wrongtype");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "spool": "off",
               "module-config": {"stream": key}}),
    );
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let mut conn = redis.conn().await;
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let post = || async {
        let answer = client
            .post(router.url("/webhook/s"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let retry_after = answer.headers().contains_key("retry-after");
        let error = answer.json::<Value>().await.unwrap()["error"].clone();
        (status, retry_after, error)
    };
    let (status, retry_after, error) = post().await;
    assert_eq!((status, retry_after), (502, false), "{error}");
    assert_eq!(error, "destination_rejected");
    // Redis gone is no refusal: the sender is asked to retry.
    redis.kill();
    let (status, retry_after, error) = post().await;
    assert_eq!((status, retry_after), (503, true), "{error}");
    assert_eq!(error, "destination_unavailable");
}

#[tokio::test]
async fn dead_letters_after_max_attempts_are_listed_replayed_and_purged() {
    let mut redis = Redis::start().await;
    let stream = unique!("dead");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "retry": {"max_attempts": 2},
               "module-config": {"stream": stream}}),
    );
    let admin_port = crate::support::ports::free_port().to_string();
    let mut router = Router::start(dir.path(), &[("ADMIN_PORT", admin_port.as_str())]);
    router.wait_ready().await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    redis.kill();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = client
            .post(router.url("/webhook/s"))
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["status"], "stored");
        ids.push(answer["request_id"].as_str().unwrap().to_owned());
    }
    wait_until(Duration::from_secs(30), "3 dead letters", || async {
        get_json(&admin, "/spool").await["dead_letters"] == 3
    })
    .await;
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            r#"switchyard_spool_dead_letters{{destination="default/s:redis_stream@r/{stream}"}} 3"#
        )),
        "{metrics}"
    );

    // Replay and purge: only on the admin listener, only from this host without a proxy, only
    // with a JSON body.
    let purge_all = |base: &str| {
        client
            .post(format!("{base}/spool/purge"))
            .json(&json!({"all": true}))
    };
    let public = purge_all(&router.base()).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let proxied = purge_all(&admin)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::FORBIDDEN);
    let form = client
        .post(format!("{admin}/spool/purge"))
        .header("content-type", "text/plain")
        .body(r#"{"all":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        form.status(),
        StatusCode::BAD_REQUEST,
        "no CSRF from a web page"
    );
    assert_eq!(get_json(&admin, "/spool").await["dead_letters"], 3);

    // The instance holds the directory: the CLI goes through its admin listener.
    let port = router.port.to_string();
    let spool = spool_dir(dir.path());
    let env = [
        ("SPOOL_DIR", spool.as_str()),
        ("PORT", port.as_str()),
        ("ADMIN_PORT", admin_port.as_str()),
    ];
    let (code, out) = spool_cli(&["dead-letters"], &env, "").await;
    assert_eq!(code, 0, "{out}");
    let letters: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(letters.len(), 3);
    let listed: Vec<&str> = letters
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "oldest first, with their original request ids");
    assert_eq!(letters[0]["attempts"], 2);
    assert!(!letters[0]["last_error"].as_str().unwrap().is_empty());

    redis.restart().await;
    let first = letters[0]["id"].to_string();
    let (code, out) = spool_cli(&["replay", "--id", &first], &env, "").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["replayed"], 1);
    wait_all_delivered(&[r#"{"n":0}"#.to_owned()], "replayed", || {
        redis.stream_payloads(&stream)
    })
    .await;
    let entries = redis.stream_payloads(&stream).await;
    assert_eq!(entries.len(), 1, "only the replayed one: {entries:?}");

    // Purge asks first; anything but `yes` purges nothing.
    let (code, _) = spool_cli(&["purge", "--all"], &env, "no\n").await;
    assert_eq!(code, 1);
    assert_eq!(get_json(&admin, "/spool").await["dead_letters"], 2);
    let (code, out) = spool_cli(&["purge", "--all"], &env, "yes\n").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["purged"], 2);

    // With no instance running, the CLI reads the directory itself.
    router.terminate();
    router
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("stops");
    let (code, out) = spool_cli(&["status"], &[("SPOOL_DIR", spool.as_str())], "").await;
    assert_eq!(code, 0, "{out}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (status["dead_letters"].clone(), status["backlog"].clone()),
        (json!(0), json!(0))
    );
}

#[tokio::test]
async fn a_spool_directory_held_by_another_instance_stops_start_up() {
    let dir = config(json!({}), json!({"w": {"module": "log"}}));
    let first = Router::start(dir.path(), &[]);
    first.wait_ready().await;
    let mut second = Router::start(dir.path(), &[]);
    let exit = second
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the second instance refuses to start");
    assert!(!exit.success());
    let logs = second.logs();
    assert!(logs.contains("cannot open the spool"), "{logs}");
    // The cause is named once, not once per error that wraps it.
    let line = logs
        .lines()
        .find(|l| l.contains("cannot open the spool"))
        .unwrap_or_default();
    assert_eq!(line.matches("already open").count(), 1, "{line}");
}

#[tokio::test]
async fn a_graceful_stop_leaves_the_backlog_on_disk_and_the_next_start_forwards_it() {
    let mut redis = Redis::start().await;
    let stream = unique!("resume");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "module-config": {"stream": stream}}),
    );
    let mut router = Router::start(dir.path(), &[("SHUTDOWN_DRAIN_SECONDS", "0")]);
    router.wait_ready().await;
    redis.kill();
    let acknowledged = post_stored(&router, 20).await;
    router.terminate();
    let exit = router
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("stops");
    assert!(exit.success(), "{exit:?}");

    redis.restart().await;
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let duplicates = wait_all_delivered(&acknowledged, "graceful stop", || {
        redis.stream_payloads(&stream)
    })
    .await;
    assert_eq!(duplicates, 0);
    assert_eq!(
        redis.stream_payloads(&stream).await,
        acknowledged,
        "forwarded in arrival order"
    );
}

#[tokio::test]
async fn one_namespace_cannot_fill_the_spool_for_the_others() {
    let etcd = crate::support::Etcd::start().await;
    let prefix = format!("/{}/", unique!("share"));
    // A destination that is always down, and two tenants using it.
    etcd.put(
        &format!("{prefix}global/connections/down"),
        r#"{"type": "redis", "host": "127.0.0.1", "port": 1}"#,
    )
    .await;
    for (namespace, spool) in [("hostile", "always"), ("victim", "on_failure")] {
        etcd.put(
            &format!("{prefix}{namespace}/webhooks/w"),
            &json!({"module": "redis_stream", "connection": "down", "spool": spool,
                    "module-config": {"stream": "s"}})
            .to_string(),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let router = Router::on_etcd(
        dir.path(),
        &etcd,
        &prefix,
        &[("SPOOL_MAX_BYTES", "1048576"), ("MAX_BODY_BYTES", "65536")],
    );
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let (stored, refused) =
        post_until_refused(&client, &router.url("/webhook/hostile/w"), 64).await;
    let stored = stored.len();
    assert!(stored >= 10, "{stored} stored before the share ran out");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "spool_full");
    // The other tenant's failed deliveries are still kept.
    let victim = client
        .post(router.url("/webhook/victim/w"))
        .body(format!(r#"{{"pad":"{}"}}"#, "z".repeat(16 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(victim.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn records_spooled_for_a_chain_reach_their_own_destination_after_it_is_reordered() {
    use redis::AsyncCommands as _;
    let mut redis = Redis::start().await;
    let (stream, list) = (unique!("stream"), unique!("list"));
    let to_stream =
        json!({"module": "redis_stream", "connection": "r", "module-config": {"stream": stream}});
    let to_list = json!({"module": "redis_list", "connection": "r",
                         "module-config": {"key": list, "direction": "rpush"}});
    let dir = redis_config(
        &redis,
        json!({"chain": [to_stream.clone(), to_list.clone()], "spool": "always"}),
    );
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    redis.kill();
    let acknowledged = post_stored(&router, 20).await;
    let waiting = get_json(&router.base(), "/health").await["spool"]["backlog"].clone();
    assert_eq!(waiting, 40, "both destinations' copies wait in the spool");
    // The chain is reordered while its records wait: each queue names the stream or the list
    // it delivers to, not its position.
    let revision = get_json(&router.base(), "/health").await["config"]["revision"].clone();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"s": {"chain": [to_list, to_stream], "spool": "always"}}),
    );
    wait_until(
        Duration::from_secs(20),
        "reordered chain loaded",
        || async { get_json(&router.base(), "/health").await["config"]["revision"] != revision },
    )
    .await;
    redis.restart().await;
    let duplicates =
        wait_all_delivered(&acknowledged, "stream", || redis.stream_payloads(&stream)).await;
    assert_eq!(duplicates, 0);
    let listed = || async {
        let items: Vec<String> = redis.conn().await.lrange(&list, 0, -1).await.unwrap();
        items
            .iter()
            .map(|item| serde_json::from_str::<Value>(item).unwrap()["payload"].to_string())
            .collect::<Vec<String>>()
    };
    let duplicates = wait_all_delivered(&acknowledged, "list", listed).await;
    assert_eq!(duplicates, 0);
    let spool = get_json(&router.base(), "/spool").await;
    assert_eq!(spool["dead_letters"], 0, "{spool}");
}

/// Bytes `path` takes on disk (its allocated blocks).
fn on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

#[tokio::test]
async fn the_spool_file_stays_within_its_bound_through_outages_and_drains() {
    const MAX: u64 = 2 << 20;
    let mut redis = Redis::start().await;
    let stream = unique!("bound");
    let dir = redis_config(
        &redis,
        json!({"module": "redis_stream", "connection": "r", "spool": "always",
               "module-config": {"stream": stream}}),
    );
    let router = Router::start(dir.path(), &[("SPOOL_MAX_BYTES", &MAX.to_string())]);
    router.wait_ready().await;
    let redb = dir.path().join("spool").join("spool.redb");
    let client = reqwest::Client::new();
    for cycle in 0..3 {
        redis.kill();
        // Small records: the file's own overhead per record counts most for them.
        let mut stored = 0;
        loop {
            let body = format!(
                r#"{{"cycle":{cycle},"n":{stored},"pad":"{}"}}"#,
                "z".repeat(400)
            );
            let answer = client
                .post(router.url("/webhook/s"))
                .body(body)
                .send()
                .await
                .unwrap();
            match answer.status() {
                StatusCode::ACCEPTED => stored += 1,
                StatusCode::SERVICE_UNAVAILABLE => break,
                other => panic!("unexpected {other}"),
            }
            assert!(stored < 20_000, "the spool never filled up");
        }
        assert!(stored > 1000, "cycle {cycle}: only {stored} stored");
        let size = on_disk(&redb);
        assert!(
            size <= MAX + MAX / 10,
            "cycle {cycle}: spool.redb takes {size} bytes on disk at a {MAX}-byte bound"
        );
        redis.restart().await;
        wait_until(Duration::from_secs(90), "backlog delivered", || async {
            get_json(&router.base(), "/health").await["spool"]["backlog"] == 0
        })
        .await;
    }
}

#[tokio::test]
async fn with_the_spool_on_a_missing_connection_is_stored_and_delivered_once_it_appears() {
    let redis = Redis::start().await;
    let stream = unique!("late");
    let dir = config(
        json!({}),
        json!({"s": {"module": "redis_stream", "connection": "r",
                     "module-config": {"stream": stream}}}),
    );
    let router = Router::start(dir.path(), &[("SPOOL_HANDOFF_MS", "200")]);
    router.wait_ready().await;
    // 202, not 503 connection_missing: the spool keeps it until the connection exists.
    let stored = post_stored(&router, 1).await;
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    write_json(dir.path(), "connections.json", &json!({ "r": connection }));
    wait_all_delivered(&stored, "late connection", || {
        redis.stream_payloads(&stream)
    })
    .await;
}
