//! HTTP throughput: keep-alive load from `wrk` against the log, Redis, Kafka and http webhooks
//! (the http one forwards to the bare handler below), the spooled path (`"spool": "always"`,
//! journaled with one fsync per batch, forwarded to Redis
//! concurrently), and a bare actix-web handler returning 200, all measured in the same run. Then
//! the spool's drain: 100k requests spooled while Redis is down, and how long they take to
//! reach Redis once it is back, with the process's RSS before, at full depth and after; then
//! the spool's intake alone (Redis down, every request journaled and answered 202). The
//! `relay` target is a connector-mode channel's intake (fsync per commit, 202); `BENCH_ONLY=relay`
//! also times a connector draining `BENCH_DRAIN` of them. `relay_redis` is the intake of a channel
//! kept in Redis, as a fleet shares it (one script per message, `appendfsync always`).
//!
//! Run with `make bench` (or `cargo bench --bench http_throughput`). Needs wrk, redis-server and
//! tansu (`make deps`). `BENCH_SECONDS` (default 8) sets each run's length, `BENCH_ROUNDS`
//! (default 3) the rounds per target, `BENCH_ONLY=<target>` one target (`drain`: the drain
//! alone, `intake`: the intake alone, `verify`: the verification table alone), `BENCH_DRAIN`
//! (default 100000) the drained requests (0 skips the drain).
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other standard variables) set, every request's
//! spans are exported, as the binary does: the cost of tracing on.
//!
//! Verification: every scheme on a `log` webhook against the unverified `log` webhook, paired
//! runs in the same process (target: each at least 0.8x of the unverified path).

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::{net::TcpListener, process::Command, time::Duration};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;
use support::{app::file_settings, Kafka, Redis};
use switchyard::{settings::LogFormat, startup::Application, telemetry};

/// The allocator the shipped binary uses (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: &str = "32";
const TARGETS: [&str; 7] = [
    "log",
    "redis",
    "kafka",
    "http",
    "spooled",
    "relay",
    "relay_redis",
];
/// The channel's token in the relay runs (connector mode).
const RELAY_TOKEN: &str = "bench-connector-token";

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    /// Requests answered in the run.
    requests: u64,
    /// CPU time this process (the server; wrk is another process) spent during the run, in
    /// microseconds: steadier than the rate on a shared machine, where wrk and other tenants
    /// take the cores in turns.
    cpu_us: f64,
}

impl Figures {
    /// The server's CPU time per request, in microseconds.
    fn cpu_per_request(&self) -> f64 {
        self.cpu_us / self.requests.max(1) as f64
    }
}

/// This process's user + system CPU time so far, in microseconds (`/proc/self/stat`, in clock
/// ticks of 10 ms).
fn process_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its `)`.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    ticks * 10_000.0
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
    let cpu_before = process_cpu_us();
    let output = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "--latency"])
        .args(["-d", &format!("{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (make deps installs it)");
    let cpu_us = process_cpu_us() - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut figures = Figures {
        rps: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        non_2xx: 0,
        requests: 0,
        cpu_us,
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some((count, _)) = line.split_once(" requests in ") {
            figures.requests = count.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
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

/// `rounds` pairs of (baseline, target) runs, alternating, so a noisy machine moves both.
fn paired(
    baseline: &str,
    target: &str,
    script: &std::path::Path,
    seconds: u64,
    rounds: usize,
) -> Vec<(Figures, Figures)> {
    (0..rounds)
        .map(|_| (wrk(baseline, script, seconds), wrk(target, script, seconds)))
        .collect()
}

/// One table row: the target's medians and its median ratio to the bare run paired with it.
fn print_row(name: &str, runs: &[(Figures, Figures)]) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} |",
        median(runs.iter().map(|(_, t)| t.rps).collect()),
        median(runs.iter().map(|(_, t)| t.p50_ms).collect()),
        median(runs.iter().map(|(_, t)| t.p99_ms).collect()),
        runs.iter().map(|(_, t)| t.non_2xx).sum::<u64>(),
        median(runs.iter().map(|(b, _)| b.rps).collect()),
        median(runs.iter().map(|(b, t)| t.rps / b.rps).collect()),
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
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
    // Traces, when the standard variables ask for them (as the binary does): the figures with
    // an exporter on. Off by default.
    let _tracing = telemetry::trace::configured(|name| std::env::var(name).ok())
        .unwrap()
        .map(|transport| {
            tokio::task::block_in_place(|| telemetry::trace::init(transport)).unwrap()
        });

    let mut redis = Redis::start().await;
    let kafka = Kafka::start().await;
    kafka.create_topic("bench", 1).await;

    // The bare handler: the baseline, and the service the `http` target forwards to.
    let bare = bare_server();
    let dir = tempfile::tempdir().unwrap();
    let redis_conn: serde_json::Value = serde_json::from_str(&redis.connection()).unwrap();
    let kafka_conn: serde_json::Value = serde_json::from_str(&kafka.connection()).unwrap();
    let http_conn = json!({"type": "http", "base_url": format!("http://127.0.0.1:{bare}")});
    std::fs::write(
        dir.path().join("connections.json"),
        // `rs`, the same Redis, keeps the `fleet` channel: a connection that keeps channels is
        // the router's own, refused to webhooks.
        json!({"r": redis_conn, "rs": redis_conn, "k": kafka_conn, "svc": http_conn,
               "edge": {"type": "connect", "max_bytes": 8u64 << 30,
                        "token_sha256": [hex::encode(<sha2::Sha256 as sha2::Digest>::digest(RELAY_TOKEN))]},
               "fleet": {"type": "connect", "max_bytes": 8u64 << 30, "store": {"connection": "rs"},
                         "token_sha256": [hex::encode(<sha2::Sha256 as sha2::Digest>::digest(RELAY_TOKEN))]}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("webhooks.json"),
        json!({
            "log": {"module": "log"},
            "redis": {"module": "redis_stream", "connection": "r",
                      "module-config": {"stream": "bench", "maxlen": 10000}},
            "kafka": {"module": "kafka", "connection": "k", "module-config": {"topic": "bench"}},
            "http": {"module": "http", "connection": "svc", "module-config": {"path": "/hook"}},
            "spooled": {"module": "redis_stream", "connection": "r", "spool": "always",
                        "module-config": {"stream": "spooled", "maxlen": 10000}},
            "drain": {"module": "redis_stream", "connection": "r",
                      "module-config": {"stream": "drain"}},
            "relay": {"module": "connect", "connection": "edge"},
            "relay_redis": {"module": "connect", "connection": "fleet"},
        })
        .to_string(),
    )
    .unwrap();
    let verified = verify::schemes();
    {
        let mut webhooks: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("webhooks.json")).unwrap())
                .unwrap();
        for scheme in &verified {
            webhooks[scheme.name.as_str()] = scheme.entry.clone();
        }
        std::fs::write(dir.path().join("webhooks.json"), webhooks.to_string()).unwrap();
    }
    let mut settings = file_settings(dir.path());
    settings.http_workers = 1;
    // The bare receiver of the `http` target listens on loopback.
    settings.http_allowed_networks = "127.0.0.0/8".parse().unwrap();
    settings.max_in_flight = 4096;
    // The spool on, as by default (every target is `on_failure` but `spooled`).
    settings.spool_dir = dir.path().join("spool");
    settings.spool_max_bytes = 4 << 30;
    let app = Application::build(&settings).unwrap();
    let port = app.port();
    let spool = app.handle().spool.expect("the spool is on");
    let channels = app
        .handle()
        .pool
        .channels()
        .cloned()
        .expect("channels with the spool");
    tokio::spawn(app.run_until_stopped(std::future::pending()));

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
    // A broker or Redis that has just started may refuse the first connections: each target
    // gets a few seconds to answer.
    for path in TARGETS {
        let url = format!("http://127.0.0.1:{port}/webhook/{path}");
        let answered = (0..10).any(|_| wrk(&url, &script, 1).rps > 0.0);
        assert!(answered, "{path} answered nothing in 10 s");
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
    for path in TARGETS {
        if only.as_deref().is_some_and(|o| o != path) {
            continue;
        }
        let url = format!("http://127.0.0.1:{port}/webhook/{path}");
        let bare_url = format!("http://127.0.0.1:{bare}/");
        let runs = paired(&bare_url, &url, &script, seconds, rounds);
        print_row(&format!("switchyard {path}"), &runs);
    }

    if only.as_deref().is_none_or(|o| o == "verify") {
        println!();
        println!(
            "Verification: each scheme's webhook against the unverified `log` webhook, {rounds} \
             paired rounds, medians"
        );
        println!();
        println!(
            "| scheme | req/s | p99 ms | non-2xx | unverified req/s | vs unverified | CPU µs/req | \
             unverified CPU µs/req | vs unverified (CPU) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let log_url = format!("http://127.0.0.1:{port}/webhook/log");
        // `BENCH_SCHEME=<part of a name>` measures the matching rows only.
        let wanted = std::env::var("BENCH_SCHEME").unwrap_or_default();
        for scheme in verified.iter().filter(|s| s.name.contains(&wanted)) {
            let script = dir.path().join(format!("{}.lua", scheme.name));
            std::fs::write(&script, scheme.script(&payload)).unwrap();
            let url = format!("http://127.0.0.1:{port}/webhook/{}", scheme.name);
            let warm = wrk(&url, &script, 1);
            assert!(
                warm.rps > 0.0 && warm.non_2xx == 0,
                "{} is not accepted",
                scheme.name
            );
            let runs = paired(&log_url, &url, &script, seconds, rounds);
            // The CPU ratio is the unverified path's cost over the scheme's: the rate the
            // scheme would reach against the unverified one on the same, CPU-bound, cores.
            println!(
                "| {} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.2} |",
                scheme.name,
                median(runs.iter().map(|(_, t)| t.rps).collect()),
                median(runs.iter().map(|(_, t)| t.p99_ms).collect()),
                runs.iter().map(|(_, t)| t.non_2xx).sum::<u64>(),
                median(runs.iter().map(|(p, _)| p.rps).collect()),
                median(runs.iter().map(|(p, t)| t.rps / p.rps).collect()),
                median(runs.iter().map(|(_, t)| t.cpu_per_request()).collect()),
                median(runs.iter().map(|(p, _)| p.cpu_per_request()).collect()),
                median(
                    runs.iter()
                        .map(|(p, t)| p.cpu_per_request() / t.cpu_per_request())
                        .collect()
                ),
            );
        }
    }

    let drain: u64 = std::env::var("BENCH_DRAIN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut spool_rate = None;
    // The relay's drain is compared with the spool's, measured just before it.
    if drain > 0 && only.as_deref().is_none_or(|o| o == "drain" || o == "relay") {
        spool_rate = Some(drain_after_outage(port, &payload, drain, &mut redis, &spool).await);
    }
    if drain > 0 && only.as_deref().is_none_or(|o| o == "relay") {
        relay_drain(port, &payload, drain, &channels, spool_rate).await;
    }
    if only.as_deref().is_none_or(|o| o == "intake") {
        let bare_url = format!("http://127.0.0.1:{bare}/");
        intake_while_down(
            port, &bare_url, &script, seconds, rounds, &mut redis, &spool,
        )
        .await;
    }
}

/// The spool's intake alone: the `drain` webhook (`on_failure`) while Redis is down, so every
/// request is journaled and answered 202 while the forwarder only waits out its retry delay.
/// Paired with the bare handler like the table above; Redis is restarted and the backlog
/// drained afterwards.
async fn intake_while_down(
    port: u16,
    bare_url: &str,
    script: &std::path::Path,
    seconds: u64,
    rounds: usize,
    redis: &mut Redis,
    spool: &switchyard::spool::Spool,
) {
    redis.kill();
    let url = format!("http://127.0.0.1:{port}/webhook/drain");
    let runs = paired(bare_url, &url, script, seconds, rounds);
    println!();
    println!(
        "Spool intake while the destination is down (`on_failure`, every request journaled, \
         202), {rounds} rounds of (bare, target); medians"
    );
    println!();
    println!("| target | req/s | p50 ms | p99 ms | non-2xx | bare req/s | vs bare |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    print_row("switchyard spool intake", &runs);
    redis.restart().await;
    while spool.backlog() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resident memory of this process (the router runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Spools `total` requests while Redis is down (the `drain` webhook, `on_failure`), then
/// restarts Redis and times the forwarder until the backlog is gone.
async fn drain_after_outage(
    port: u16,
    payload: &str,
    total: u64,
    redis: &mut Redis,
    spool: &switchyard::spool::Spool,
) -> f64 {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    };
    // What the throughput runs spooled is forwarded first, so the backlog is this run's alone.
    while spool.backlog() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before = rss_mib();
    redis.kill();
    let url = format!("http://127.0.0.1:{port}/webhook/drain");
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let filling = std::time::Instant::now();
    // RSS at half depth: against the RSS at full depth, it shows whether memory follows depth.
    let half = {
        let spool = spool.clone();
        tokio::spawn(async move {
            while spool.backlog() < total / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rss_mib()
        })
    };
    let senders: Vec<_> = (0..32)
        .map(|_| {
            let (next, client, url, body) = (
                Arc::clone(&next),
                client.clone(),
                url.clone(),
                payload.to_owned(),
            );
            tokio::spawn(async move {
                let mut stored = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let status = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    stored += u64::from(status == 202);
                }
                stored
            })
        })
        .collect();
    let mut stored = 0;
    for sender in senders {
        stored += sender.await.unwrap_or(0);
    }
    let fill_secs = filling.elapsed().as_secs_f64();
    let rss_full = rss_mib();
    let rss_half = half.await.unwrap_or(f64::NAN);
    let depth = spool.backlog();
    redis.restart().await;
    let back = std::time::Instant::now();
    let mut first_delivery = None;
    while spool.backlog() > 0 {
        if first_delivery.is_none() && spool.backlog() < depth {
            first_delivery = Some(back.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = back.elapsed();
    let first = first_delivery.unwrap_or(drained);
    let forwarding = drained.saturating_sub(first).as_secs_f64();
    println!();
    println!(
        "Spool drain: {stored} of {total} requests answered 202 while Redis was down ({:.0} req/s into the spool, {} bytes each)",
        stored as f64 / fill_secs,
        payload.len()
    );
    println!();
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| backlog when Redis came back | {depth} |");
    println!(
        "| Redis back -> first forwarded record (retry backoff) | {:.1} s |",
        first.as_secs_f64()
    );
    println!("| first forwarded -> backlog empty | {forwarding:.1} s |");
    println!(
        "| forwarding rate | {:.0} records/s |",
        depth as f64 / forwarding.max(0.001)
    );
    println!("| RSS before the outage | {rss_before:.0} MiB |");
    println!(
        "| RSS with {} records spooled | {rss_half:.0} MiB |",
        total / 2
    );
    println!("| RSS with {depth} records spooled | {rss_full:.0} MiB |");
    println!("| RSS after the drain | {:.0} MiB |", rss_mib());
    depth as f64 / forwarding.max(0.001)
}

/// Connector mode: `total` messages wait in the channel `edge` (fsync on the public side),
/// then a connector starts (a second application in this process, its inbox fsynced too,
/// delivering to `log`); how long until it has handed every message over, against the spool's
/// own forwarding rate measured just before when there is one.
async fn relay_drain(
    port: u16,
    payload: &str,
    total: u64,
    channels: &switchyard::connect::Channels,
    spool_rate: Option<f64>,
) {
    let edge = channels.channel("edge");
    let url = format!("http://127.0.0.1:{port}/webhook/relay");
    let client = reqwest::Client::new();
    let filling = std::time::Instant::now();
    let before = edge.counts().depth;
    let senders: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, body, edge) = (
                client.clone(),
                url.clone(),
                payload.to_owned(),
                std::sync::Arc::clone(&edge),
            );
            tokio::spawn(async move {
                while edge.counts().depth < total {
                    let _ = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                }
            })
        })
        .collect();
    for sender in senders {
        let _ = sender.await;
    }
    let fill_secs = filling.elapsed().as_secs_f64();
    let counts = edge.counts();
    let private = tempfile::tempdir().unwrap();
    std::fs::write(private.path().join("connections.json"), "{}").unwrap();
    std::fs::write(
        private.path().join("webhooks.json"),
        json!({"relay": {"module": "log"}}).to_string(),
    )
    .unwrap();
    let mut settings = file_settings(private.path());
    settings.http_workers = 1;
    settings.spool_dir = private.path().join("spool");
    settings.connector_url = Some(format!("ws://127.0.0.1:{port}/connect/v1/edge"));
    settings.connector_token = Some(RELAY_TOKEN.to_owned());
    settings.connector_allow_insecure = true;
    let started = std::time::Instant::now();
    let app = Application::build(&settings).unwrap();
    let inbox = app
        .handle()
        .pool
        .channels()
        .expect("the connector's inbox")
        .channel("inbox:edge");
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let mut first = None;
    loop {
        let now = inbox.counts();
        if first.is_none() && now.head > 0 {
            first = Some(started.elapsed());
        }
        if now.head >= counts.head && now.depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    let rate = counts.depth as f64 / drained.max(0.001);
    println!();
    println!(
        "Connector relay: {} messages waiting in the channel ({} added at {:.0} msg/s, fsync per \
         commit), then a connector starts (inbox fsync per commit) and delivers them to `log`",
        counts.depth,
        counts.depth - before,
        (counts.depth - before) as f64 / fill_secs
    );
    println!();
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| connector start -> first message in its inbox | {:.2} s |",
        first.unwrap_or_default().as_secs_f64()
    );
    println!("| connector start -> every message handed over | {drained:.1} s |");
    println!("| relay rate | {rate:.0} msg/s |");
    if let Some(spool_rate) = spool_rate {
        println!("| spool forwarding rate (same run) | {spool_rate:.0} records/s |");
        println!("| relay vs spool forwarding | {:.2} |", rate / spool_rate);
    }
}

/// The verification schemes measured, each a `log` webhook whose requests carry valid
/// credentials for the benchmark's body (timestamps are taken at start: well within every
/// tolerance for a benchmark's length).
mod verify {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use sha2::Sha256;

    /// Request headers, given the body.
    type Headers = Box<dyn Fn(&str) -> Vec<(String, String)>>;

    pub struct Scheme {
        pub name: String,
        pub entry: Value,
        headers: Headers,
        /// The body this scheme's provider sends, made from the common payload (a signature or
        /// timestamp in the body).
        body: Box<dyn Fn(&str) -> String>,
    }

    impl Scheme {
        /// A wrk script posting `body` (as the scheme's provider writes it) with this scheme's
        /// headers.
        pub fn script(&self, body: &str) -> String {
            let body = &(self.body)(body);
            let mut lua = format!(
                "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
                serde_json::to_string(body).unwrap()
            );
            for (name, value) in (self.headers)(body) {
                lua.push_str(&format!(
                    "wrk.headers[{}] = {}\n",
                    serde_json::to_string(&name).unwrap(),
                    serde_json::to_string(&value).unwrap()
                ));
            }
            lua
        }
    }

    fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A PEM key pair made by `openssl` (`genpkey` arguments), as (private, public).
    fn keypair(args: &[&str]) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("key.pem");
        let ok = std::process::Command::new("openssl")
            .arg("genpkey")
            .stderr(std::process::Stdio::null())
            .args(args)
            .arg("-out")
            .arg(&private)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey");
        let public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .unwrap()
            .stdout;
        (
            std::fs::read_to_string(&private).unwrap(),
            String::from_utf8(public).unwrap(),
        )
    }

    fn scheme(
        name: &str,
        entry: Value,
        headers: impl Fn(&str) -> Vec<(String, String)> + 'static,
    ) -> Scheme {
        Scheme {
            name: name.into(),
            entry,
            headers: Box::new(headers),
            body: Box::new(str::to_owned),
        }
    }

    /// A scheme whose provider also writes into the body.
    fn with_body(mut scheme: Scheme, body: impl Fn(&str) -> String + 'static) -> Scheme {
        scheme.body = Box::new(body);
        scheme
    }

    /// The JSON payload with `member` added at its top.
    fn add_member(payload: &str, name: &str, value: Value) -> String {
        let mut object: Value = serde_json::from_str(payload).unwrap();
        object[name] = value;
        object.to_string()
    }

    fn h(name: &str, value: String) -> (String, String) {
        (name.to_owned(), value)
    }

    fn jwt(algorithm: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
        let claims = json!({"sub": "bench", "exp": now() + 3600, "iat": now()});
        jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, key).unwrap()
    }

    /// Every scheme's webhook. Timestamped ones get an hour's window: the requests are signed
    /// once, and a run of many rounds outlasts the default five minutes.
    pub fn schemes() -> Vec<Scheme> {
        let t = now();
        const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
        let whsec_key = b"a 24 byte key for tests!".to_vec();
        let whsec = format!("whsec_{}", B64.encode(&whsec_key));
        let (rsa_private, rsa_public) =
            keypair(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let (ec_private, ec_public) =
            keypair(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let hs = jwt(
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(b"jwt-secret"),
        );
        let rs = jwt(
            jsonwebtoken::Algorithm::RS256,
            &jsonwebtoken::EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap(),
        );
        let es = jwt(
            jsonwebtoken::Algorithm::ES256,
            &jsonwebtoken::EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
        );
        vec![
            scheme(
                "v-authorization",
                json!({"module": "log", "authorization": "Bearer t0k"}),
                |_| vec![h("Authorization", "Bearer t0k".into())],
            ),
            scheme(
                "v-basic",
                json!({"module": "log", "basic_auth": {"username": "u", "password": "p"}}),
                move |_| vec![h("Authorization", format!("Basic {}", B64.encode("u:p")))],
            ),
            scheme(
                "v-hmac",
                json!({"module": "log", "hmac": {"secret": "s"}}),
                |body| {
                    vec![h(
                        "X-HMAC-Signature",
                        hex::encode(mac(b"s", &[body.as_bytes()])),
                    )]
                },
            ),
            scheme(
                "v-github",
                json!({"module": "log", "hmac": {"provider": "github", "secret": "s"}}),
                |body| {
                    let sig = hex::encode(mac(b"s", &[body.as_bytes()]));
                    vec![h("X-Hub-Signature-256", format!("sha256={sig}"))]
                },
            ),
            scheme(
                "v-stripe",
                json!({"module": "log", "hmac": {"provider": "stripe", "secret": "s", "tolerance_seconds": 3600}}),
                move |body| {
                    let ts = t.to_string();
                    let sig = hex::encode(mac(b"s", &[ts.as_bytes(), b".", body.as_bytes()]));
                    vec![h("Stripe-Signature", format!("t={t},v1={sig}"))]
                },
            ),
            scheme(
                "v-slack",
                json!({"module": "log", "hmac": {"provider": "slack", "secret": "s", "tolerance_seconds": 3600}}),
                move |body| {
                    let ts = t.to_string();
                    let sig =
                        hex::encode(mac(b"s", &[b"v0:", ts.as_bytes(), b":", body.as_bytes()]));
                    vec![
                        h("X-Slack-Request-Timestamp", ts),
                        h("X-Slack-Signature", format!("v0={sig}")),
                    ]
                },
            ),
            scheme(
                "v-standard",
                json!({"module": "log", "hmac": {"provider": "standard_webhooks", "secret": whsec, "tolerance_seconds": 3600}}),
                move |body| {
                    let ts = t.to_string();
                    let sig = B64.encode(mac(
                        &whsec_key,
                        &[b"msg_1.", ts.as_bytes(), b".", body.as_bytes()],
                    ));
                    vec![
                        h("webhook-id", "msg_1".into()),
                        h("webhook-timestamp", ts),
                        h("webhook-signature", format!("v1,{sig}")),
                    ]
                },
            ),
            scheme(
                "v-trello",
                json!({"module": "log", "hmac": {"provider": "trello", "secret": "s",
                                                 "url": "https://example.com/t"}}),
                |body| {
                    let mut m = Hmac::<sha1::Sha1>::new_from_slice(b"s").unwrap();
                    m.update(body.as_bytes());
                    m.update(b"https://example.com/t");
                    vec![h("X-Trello-Webhook", B64.encode(m.finalize().into_bytes()))]
                },
            ),
            with_body(
                scheme(
                    "v-linear",
                    // The bench runs for minutes: a window that outlasts it.
                    json!({"module": "log", "hmac": {"provider": "linear", "secret": "s",
                                                     "tolerance_seconds": 3600}}),
                    |body| {
                        vec![h(
                            "Linear-Signature",
                            hex::encode(mac(b"s", &[body.as_bytes()])),
                        )]
                    },
                ),
                move |payload| add_member(payload, "webhookTimestamp", json!(t * 1000)),
            ),
            with_body(
                scheme(
                    "v-mailgun",
                    json!({"module": "log", "hmac": {"provider": "mailgun", "secret": "s",
                                                     "tolerance_seconds": 3600}}),
                    |_| Vec::new(),
                ),
                move |payload| {
                    let (ts, token) = (
                        t.to_string(),
                        "5e0b5d6c1a9f84d7b8f2c3a1e0d9c8b7a6f5e4d3c2b1a0f9e8",
                    );
                    let signature = hex::encode(mac(b"s", &[ts.as_bytes(), token.as_bytes()]));
                    add_member(
                        payload,
                        "signature",
                        json!({"timestamp": ts, "token": token, "signature": signature}),
                    )
                },
            ),
            // Route by content: ten conditions, all evaluated (the request matches), on headers
            // and on the JSON body (parsed once).
            scheme(
                "v-filter10",
                json!({"module": "log", "filter": {"all": [
                    {"header": "X-GitHub-Event", "in": ["push", "release"]},
                    {"header": "X-GitHub-Event", "ne": "ping"},
                    {"header": "Content-Type", "prefix": "application/json"},
                    {"header": "X-Missing", "exists": false},
                    {"json_pointer": "/ref", "eq": "refs/heads/main"},
                    {"json_pointer": "/repository/id", "gt": 100},
                    {"json_pointer": "/repository/private", "eq": false},
                    {"json_pointer": "/pusher/email", "suffix": "@example.com"},
                    {"json_pointer": "/repository/full_name", "regex": "^acme/"},
                    {"any": [{"json_pointer": "/commits/0/message", "contains": "widget"}]},
                ]}}),
                |_| vec![h("X-GitHub-Event", "push".into())],
            ),
            scheme(
                "v-jwt-hs256",
                json!({"module": "log", "jwt": {"secret": "jwt-secret"}}),
                move |_| vec![h("Authorization", format!("Bearer {hs}"))],
            ),
            scheme(
                "v-jwt-rs256",
                json!({"module": "log", "jwt": {"algorithm": "RS256", "public_key": rsa_public}}),
                move |_| vec![h("Authorization", format!("Bearer {rs}"))],
            ),
            scheme(
                "v-jwt-es256",
                json!({"module": "log", "jwt": {"algorithm": "ES256", "public_key": ec_public}}),
                move |_| vec![h("Authorization", format!("Bearer {es}"))],
            ),
        ]
    }
}
