//! The spool on a slow disk, made slow from outside: `strace` delays every durable write of the
//! router process (`pwrite64`, `fdatasync`, ...) while senders keep posting to a spooled
//! webhook. The requests that need the spool wait (or get 503 past `SPOOL_WRITE_TIMEOUT_MS`);
//! every other request and `/health` must not.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{files::write_json, get_json, process::Router, strace::Strace, wait_until};

/// Writes to disk that `strace` slows down (the journal's direct writes and redb's).
const DISK_WRITES: &str = "pwrite64,pwritev,pwritev2,fsync,fdatasync";

/// `strace` delaying each disk write of `pid` by `delay`.
async fn slow_disk(pid: u32, delay: Duration, dir: &std::path::Path) -> Strace {
    let inject = format!("delay_enter={}", delay.as_micros());
    Strace::attach(pid, DISK_WRITES, &inject, &[], dir).await
}

/// The 95th percentile of `n` sequential calls of `call`, in milliseconds.
async fn p95<F, Fut>(n: usize, call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let status = call().await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort_by(f64::total_cmp);
    times[(n * 95).div_ceil(100) - 1]
}

#[tokio::test]
async fn a_slow_disk_slows_only_the_requests_that_need_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({
            "spooled": {"module": "log", "spool": "always"},
            "direct": {"module": "log", "spool": "off"},
        }),
    );
    write_json(dir.path(), "connections.json", &json!({}));
    let router = Router::start(dir.path(), &[("SPOOL_WRITE_TIMEOUT_MS", "1000")]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let slow = slow_disk(router.pid(), Duration::from_millis(250), dir.path()).await;

    // Eight senders keep the spool writing for the whole measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|i| {
            let (client, url) = (client.clone(), router.url("/webhook/spooled"));
            let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let response = client
                        .post(&url)
                        .json(&json!({"sender": i, "n": n}))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .unwrap();
                    answers.fetch_add(1, Ordering::Relaxed);
                    statuses.push(response.status());
                }
                statuses
            })
        })
        .collect();
    wait_until(
        Duration::from_secs(20),
        "spooled requests answered",
        || async { answers.load(Ordering::Relaxed) >= 8 },
    )
    .await;

    let direct = p95(40, || async {
        client
            .post(router.url("/webhook/direct"))
            .json(&json!({"a": 1}))
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    let health = p95(40, || async {
        client
            .get(router.url("/health"))
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for sender in senders {
        statuses.extend(sender.await.unwrap());
    }
    let injected = slow.log();
    drop(slow);
    assert!(
        direct < 100.0,
        "log webhook p95 {direct:.1} ms on a slow disk"
    );
    assert!(health < 100.0, "/health p95 {health:.1} ms on a slow disk");
    // The spooled ones waited for the disk: 202 once durable, never anything but 202 or 503.
    assert!(
        statuses.iter().all(|s| matches!(s.as_u16(), 202 | 503)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::ACCEPTED),
        "{statuses:?} {injected}"
    );
}

#[tokio::test]
async fn writes_slower_than_the_timeout_are_answered_503_and_health_says_degraded() {
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"spooled": {"module": "log", "spool": "always"}}),
    );
    write_json(dir.path(), "connections.json", &json!({}));
    let router = Router::start(dir.path(), &[("SPOOL_WRITE_TIMEOUT_MS", "100")]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let post = |n: u32| {
        let client = client.clone();
        let url = router.url("/webhook/spooled");
        async move {
            let response = client
                .post(url)
                .json(&json!({ "n": n }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(post(0).await.0, StatusCode::ACCEPTED);

    let slow = slow_disk(router.pid(), Duration::from_millis(400), dir.path()).await;
    let (status, body) = post(1).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "spool_unavailable", "{body}");
    let health = get_json(&router.base(), "/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["components"]["spool"], "degraded", "{health}");
    assert!(
        health["spool"]["degraded"]
            .as_str()
            .is_some_and(|r| r.contains("SPOOL_WRITE_TIMEOUT_MS is 100")),
        "{health}"
    );
    drop(slow);

    // The disk is fast again: requests are stored again, and what was answered 202 before is
    // delivered (the log module writes it).
    wait_until(Duration::from_secs(20), "stored again", || async {
        post(2).await.0 == StatusCode::ACCEPTED
    })
    .await;
    router.wait_log(r#"\"n\":0"#).await;
}
