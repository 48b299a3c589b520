//! Config benchmarks against a real etcd: start-up load of 25,000 webhooks, put -> routable
//! latency, and recovery after an etcd restart. Each figure comes with a baseline measured in the
//! same run (raw etcd reads and acknowledged puts), since machines here are noisy.
//!
//! Then ten times the seed's scale: 250,000 webhooks in 50,000 namespaces, full load against a
//! one-shot range read of the same keys (what `etcdctl get --prefix` does), with RSS.
//!
//! Run with `make bench` (or `cargo bench --bench config_load`; `BENCH_SECTION=scale` runs the
//! 250k case alone).

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use etcd_client::GetOptions;
use support::{app::etcd_settings, Etcd, Proxy};
use switchyard::{
    keys::{Namespace, WebhookId, WebhookKey},
    provider::EtcdState,
    startup::{AppHandle, Application},
};
use tokio::sync::oneshot;

const NAMESPACES: usize = 5_000;
const PER_NAMESPACE: usize = 5;
const LOAD_RUNS: usize = 5;
const PUTS: usize = 1_000;
const RESTARTS: usize = 3;
const RELOADS: usize = 3;

struct Running {
    handle: AppHandle,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(endpoint: &str, prefix: &str) -> Running {
    let mut settings = etcd_settings(endpoint, prefix);
    settings.http_workers = 1;
    let app = Application::build(&settings).expect("application builds");
    let handle = app.handle();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Running { handle, stop, task }
}

impl Running {
    async fn wait<F: Fn(&AppHandle) -> bool>(&self, condition: F) {
        let mut status = self.handle.provider.status.clone();
        loop {
            if condition(&self.handle) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(1), status.changed()).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn raw_read_all(etcd: &Etcd, prefix: &str) -> (Duration, usize) {
    let mut kv = etcd.client().await.kv_client();
    let started = Instant::now();
    let end = {
        let mut e = prefix.as_bytes().to_vec();
        let last = e.pop().unwrap();
        e.push(last + 1);
        e
    };
    let mut start = prefix.as_bytes().to_vec();
    let mut count = 0;
    loop {
        let r = kv
            .get(
                start.clone(),
                Some(GetOptions::new().with_range(end.clone()).with_limit(2_000)),
            )
            .await
            .unwrap();
        count += r.kvs().len();
        match (r.more(), r.kvs().last()) {
            (true, Some(last)) => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    (started.elapsed(), count)
}

/// A one-shot read of every key under `prefix` (no limit: no per-page count), as etcdctl does.
async fn one_shot_read(etcd: &Etcd, prefix: &str) -> (Duration, usize) {
    let mut kv = etcd
        .client()
        .await
        .kv_client()
        .max_decoding_message_size(1 << 30);
    let started = Instant::now();
    let response = kv
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    (started.elapsed(), response.kvs().len())
}

/// `count` webhooks in `namespaces` namespaces under `prefix`, all `log` webhooks.
fn webhooks(prefix: &str, namespaces: usize) -> Vec<(String, String)> {
    (0..namespaces)
        .flat_map(|ns| {
            (0..PER_NAMESPACE).map(move |id| {
                (
                    format!("{prefix}ns{ns}/webhooks/hook{id}"),
                    r#"{"module":"log","module-config":{"pretty_print":false},"data_type":"json"}"#
                        .to_owned(),
                )
            })
        })
        .collect()
}

/// Medians of `runs` start-up loads of `total` webhooks and of the baseline read, and the RSS
/// before and with the cache loaded (KiB).
struct Loads {
    load: Duration,
    raw: Duration,
    /// The median of each run's load / read (the pair measured back to back, so a noisy
    /// machine moves both).
    paired: f64,
    rss_before: u64,
    rss_loaded: u64,
}

async fn measure_loads<F, Fut>(
    etcd: &Etcd,
    prefix: &str,
    total: usize,
    runs: usize,
    baseline: F,
) -> Loads
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Duration, usize)>,
{
    let (mut loads, mut raws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let rss_before = rss_kib();
    let mut rss_loaded = 0;
    for _ in 0..runs {
        let (raw, count) = baseline().await;
        assert_eq!(count, total);
        raws.push(raw);
        let started = Instant::now();
        let app = start(&etcd.endpoint(), prefix);
        app.wait(|h| h.provider.status.borrow().loaded).await;
        loads.push(started.elapsed());
        ratios.push(started.elapsed().as_secs_f64() / raw.as_secs_f64());
        assert_eq!(app.handle.cache.webhook_count(), total);
        rss_loaded = rss_loaded.max(rss_kib());
        app.stop().await;
    }
    loads.sort();
    raws.sort();
    ratios.sort_by(f64::total_cmp);
    Loads {
        load: percentile(&loads, 0.5),
        raw: percentile(&raws, 0.5),
        paired: ratios[ratios.len() / 2],
        rss_before,
        rss_loaded,
    }
}

impl Loads {
    fn print(&self, baseline: &str) {
        println!("  switchyard ready      {:>8.1} ms", ms(self.load));
        println!("  {baseline}");
        println!(
            "  ratio                 {:>8.2}x   (median of each run's ratio: {:.2}x)",
            self.load.as_secs_f64() / self.raw.as_secs_f64(),
            self.paired
        );
        println!(
            "  process RSS with the cache loaded: {:.1} MiB (before: {:.1} MiB)",
            self.rss_loaded as f64 / 1024.0,
            self.rss_before as f64 / 1024.0
        );
        println!();
    }
}

/// 250,000 webhooks: full load vs. a one-shot read of the same keys, and RSS while loaded.
async fn ten_times_the_scale(etcd: &Etcd) {
    const SCALE: usize = 10;
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let prefix = "/bench250k/";
    let entries = webhooks(prefix, NAMESPACES * SCALE);
    etcd.put_many(&entries).await;
    let total = entries.len();
    drop(entries);
    let loads = measure_loads(etcd, prefix, total, runs, || one_shot_read(etcd, prefix)).await;
    println!(
        "start-up load at ten times the scale: {total} webhooks in {} namespaces (median of {runs}):",
        NAMESPACES * SCALE
    );
    loads.print(&format!(
        "baseline one-shot read {:>7.1} ms   (one range request, no limit, no parsing)",
        ms(loads.raw)
    ));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut etcd = Etcd::start().await;
    if std::env::var("BENCH_SECTION").as_deref() == Ok("scale") {
        ten_times_the_scale(&etcd).await;
        return;
    }
    let prefix = "/bench/";
    let entries = webhooks(prefix, NAMESPACES);
    etcd.put_many(&entries).await;
    let total = entries.len();
    println!("switchyard config benchmarks ({total} webhooks in {NAMESPACES} namespaces)");
    println!();

    // 1. Start-up load vs. a raw paginated read of the same keys.
    let loads = measure_loads(&etcd, prefix, total, LOAD_RUNS, || {
        raw_read_all(&etcd, prefix)
    })
    .await;
    println!("start-up load of {total} webhooks (median of {LOAD_RUNS}):");
    loads.print(&format!(
        "baseline raw read     {:>8.1} ms   (etcd range pages, no parsing)",
        ms(loads.raw)
    ));

    // 2. put -> routable, vs. the put's own acknowledgement.
    let app = start(&etcd.endpoint(), prefix);
    app.wait(|h| h.provider.status.borrow().loaded).await;
    let mut client = etcd.client().await;
    let mut routable = Vec::with_capacity(PUTS);
    let mut acked = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let key = WebhookKey::new(
            Namespace::parse("latency").unwrap(),
            WebhookId::parse(&format!("hook{i}")).unwrap(),
        );
        let started = Instant::now();
        client
            .put(
                format!("{prefix}latency/webhooks/hook{i}"),
                r#"{"module":"log"}"#,
                None,
            )
            .await
            .unwrap();
        acked.push(started.elapsed());
        while app.handle.cache.webhook(&key).is_none() {
            tokio::task::yield_now().await;
        }
        routable.push(started.elapsed());
    }
    routable.sort();
    acked.sort();
    println!("etcd put -> routable over {PUTS} puts:");
    println!(
        "  routable              p50 {:>7.3} ms   p99 {:>7.3} ms",
        ms(percentile(&routable, 0.5)),
        ms(percentile(&routable, 0.99))
    );
    println!(
        "  baseline put ack      p50 {:>7.3} ms   p99 {:>7.3} ms",
        ms(percentile(&acked, 0.5)),
        ms(percentile(&acked, 0.99))
    );
    println!(
        "  ratio (p50)           {:>8.2}x",
        percentile(&routable, 0.5).as_secs_f64() / percentile(&acked, 0.5).as_secs_f64()
    );
    println!();

    // 3. Recovery after an etcd restart: from etcd answering again to watching and caught up.
    let mut recoveries = Vec::new();
    for i in 0..RESTARTS {
        etcd.kill();
        app.wait(|h| h.provider.status.borrow().etcd == Some(EtcdState::Disconnected))
            .await;
        etcd.restart().await;
        let answering = Instant::now();
        let revision = etcd
            .put(
                &format!("{prefix}recovery/webhooks/r{i}"),
                r#"{"module":"log"}"#,
            )
            .await;
        app.wait(|h| {
            h.provider.status.borrow().etcd == Some(EtcdState::Connected)
                && h.cache.revision() >= revision
        })
        .await;
        recoveries.push(answering.elapsed());
    }
    println!(
        "recovery after an etcd restart ({RESTARTS} restarts; includes the reconnect backoff):"
    );
    for (i, r) in recoveries.iter().enumerate() {
        println!(
            "  restart {}: caught up {:>8.1} ms after etcd answered",
            i + 1,
            ms(*r)
        );
    }
    app.stop().await;
    println!();

    // 4. Full reload of everything (what compaction or a restored cluster triggers), timed inside
    //    the provider, vs. the raw read of the same keys.
    let proxy = Proxy::start(etcd.client_port).await;
    let app = start(&proxy.endpoint(), prefix);
    app.wait(|h| h.provider.status.borrow().loaded).await;
    let mut reloads = Vec::new();
    for i in 0..RELOADS {
        let before = app.handle.provider.stats.full_loads.load(Ordering::Relaxed);
        proxy.block();
        app.wait(|h| h.provider.status.borrow().etcd == Some(EtcdState::Disconnected))
            .await;
        etcd.put(
            &format!("{prefix}reload/webhooks/r{i}"),
            r#"{"module":"log"}"#,
        )
        .await;
        etcd.compact().await;
        proxy.unblock();
        app.wait(|h| h.provider.stats.full_loads.load(Ordering::Relaxed) > before)
            .await;
        let us = app
            .handle
            .provider
            .stats
            .last_full_load_us
            .load(Ordering::Relaxed);
        reloads.push(Duration::from_micros(us));
    }
    reloads.sort();
    let (raw, _) = raw_read_all(&etcd, prefix).await;
    let reload = percentile(&reloads, 0.5);
    println!(
        "full reload after compaction ({} webhooks, median of {RELOADS}):",
        app.handle.cache.webhook_count()
    );
    println!(
        "  switchyard reload     {:>8.1} ms   (read + parse + build + swap, timed in the provider)",
        ms(reload)
    );
    println!("  baseline raw read     {:>8.1} ms", ms(raw));
    println!(
        "  ratio                 {:>8.2}x",
        reload.as_secs_f64() / raw.as_secs_f64()
    );
    app.stop().await;
    ten_times_the_scale(&etcd).await;
}
