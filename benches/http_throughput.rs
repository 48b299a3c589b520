//! HTTP throughput: keep-alive load from `wrk` against the log, Redis and Kafka webhooks, and
//! against a bare actix-web handler returning 200, all measured in the same run.
//!
//! Run with `make bench` (or `cargo bench --bench http_throughput`). Needs wrk, redis-server and
//! tansu (`make deps`). `BENCH_SECONDS` (default 8) sets each run's length.

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::{net::TcpListener, process::Command, time::Duration};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;
use support::{app::file_settings, Kafka, Redis};
use switchyard::{settings::LogFormat, startup::Application, telemetry};

const CONNECTIONS: &str = "32";

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn parse_latency(value: &str) -> f64 {
    let value = value.trim();
    let (number, unit) = value.split_at(
        value
            .find(|c: char| c.is_alphabetic())
            .unwrap_or(value.len()),
    );
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1_000.0,
        "ms" => n,
        "s" => n * 1_000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, script: &std::path::Path, seconds: u64) -> Figures {
    let output = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "--latency"])
        .args(["-d", &format!("{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (make deps installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut figures = Figures {
        rps: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        non_2xx: 0,
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            figures.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("50%") {
            figures.p50_ms = parse_latency(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            figures.p99_ms = parse_latency(v);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figures.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    figures
}

fn bare_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        // Takes the body like any real handler would, then answers 200.
        App::new().route(
            "/{tail:.*}",
            web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().finish() }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    port
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    // Real log formatting (JSON) into a sink, so the log module pays what it pays in production.
    let filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "info".into());
    telemetry::init(LogFormat::Json, &filter, std::io::sink).unwrap();

    let redis = Redis::start().await;
    let kafka = Kafka::start().await;
    kafka.create_topic("bench", 1).await;

    let dir = tempfile::tempdir().unwrap();
    let redis_conn: serde_json::Value = serde_json::from_str(&redis.connection()).unwrap();
    let kafka_conn: serde_json::Value = serde_json::from_str(&kafka.connection()).unwrap();
    std::fs::write(
        dir.path().join("connections.json"),
        json!({"r": redis_conn, "k": kafka_conn}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("webhooks.json"),
        json!({
            "log": {"module": "log"},
            "redis": {"module": "redis_stream", "connection": "r",
                      "module-config": {"stream": "bench", "maxlen": 10000}},
            "kafka": {"module": "kafka", "connection": "k", "module-config": {"topic": "bench"}},
        })
        .to_string(),
    )
    .unwrap();
    let mut settings = file_settings(dir.path());
    settings.http_workers = 1;
    settings.max_in_flight = 4096;
    let app = Application::build(&settings).unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let bare = bare_server();

    let payload = json!({
        "ref": "refs/heads/main",
        "repository": {"id": 123456, "full_name": "acme/widgets", "private": false},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "commits": (0..5).map(|i| json!({"id": format!("{i:040}"), "message": "Fix the widget"})).collect::<Vec<_>>(),
    })
    .to_string();
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
            serde_json::to_string(&payload).unwrap()
        ),
    )
    .unwrap();

    // Warm up every target (connections, producers, JIT-free but caches).
    for path in ["log", "redis", "kafka"] {
        let url = format!("http://127.0.0.1:{port}/webhook/{path}");
        let w = wrk(&url, &script, 1);
        assert!(w.rps > 0.0, "{path} answered nothing");
    }
    let warm = wrk(&format!("http://127.0.0.1:{bare}/"), &script, 1);
    assert!(warm.rps > 0.0, "the bare server answered nothing");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Bare and target runs alternate, and each ratio is taken against the bare run just before
    // it: on a shared, noisy machine the median of paired ratios is what repeats.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "HTTP throughput: wrk -t1 -c{CONNECTIONS} -d{seconds}s, {} byte JSON body, 1 server worker, \
         {rounds} rounds of (bare, target); medians",
        payload.len()
    );
    println!();
    println!("| target | req/s | p50 ms | p99 ms | non-2xx | bare req/s | vs bare |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    // `BENCH_ONLY=log` measures one target (for profiling).
    let only = std::env::var("BENCH_ONLY").ok();
    for path in ["log", "redis", "kafka"] {
        if only.as_deref().is_some_and(|o| o != path) {
            continue;
        }
        let url = format!("http://127.0.0.1:{port}/webhook/{path}");
        let mut runs = Vec::new();
        for _ in 0..rounds {
            let bare_run = wrk(&format!("http://127.0.0.1:{bare}/"), &script, seconds);
            let target = wrk(&url, &script, seconds);
            runs.push((bare_run, target));
        }
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        };
        println!(
            "| switchyard {path} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} |",
            median(runs.iter().map(|(_, t)| t.rps).collect()),
            median(runs.iter().map(|(_, t)| t.p50_ms).collect()),
            median(runs.iter().map(|(_, t)| t.p99_ms).collect()),
            runs.iter().map(|(_, t)| t.non_2xx).sum::<u64>(),
            median(runs.iter().map(|(b, _)| b.rps).collect()),
            median(runs.iter().map(|(b, t)| t.rps / b.rps).collect()),
        );
    }
}
