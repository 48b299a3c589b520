//! Prometheus metrics: per-request counters and histograms, plus gauges read from live state at
//! scrape time (so the request path pays only for what only it can count).
//!
//! Namespace/webhook labels are bounded: the first `METRICS_MAX_WEBHOOKS` webhooks seen get their
//! own labels, later ones share `namespace="_other",webhook="_other"`, so 25k webhooks cannot blow
//! up memory or scrape size.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use dashmap::DashSet;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::keys::{KeyHasher, WebhookKey};

/// The label pair used once the budget is spent.
pub const OTHER: &str = "_other";

/// Values that live elsewhere and are copied in at scrape time.
#[derive(Debug, Default, Clone)]
pub struct ScrapeState {
    pub webhooks: usize,
    pub connections: usize,
    pub in_flight: usize,
    pub body_reads: usize,
    /// Bytes of request bodies held in memory (`BODY_MEMORY_BYTES` is the bound).
    pub body_memory: u64,
    pub revision: i64,
    /// 1 connected, 0 not; `None` for the file backend.
    pub etcd_connected: Option<bool>,
    /// Whether the etcd member in use has a leader.
    pub etcd_has_leader: bool,
    /// Newest revision seen from etcd minus the applied one.
    pub etcd_revision_lag: i64,
    pub events_applied: u64,
    pub invalid_entries: u64,
    pub reconnects: u64,
    pub full_loads: u64,
    /// Seconds since the last watch event or progress notification.
    pub since_last_event: Option<f64>,
    pub skipped_now: usize,
    /// The spool, when it is on.
    pub spool: Option<crate::spool::SpoolReport>,
    /// The channels (connector mode).
    pub channels: Vec<crate::connect::ChannelReport>,
}

/// One set of series per channel (connector mode): channels are connection entries, so their
/// number is the operator's.
struct ChannelMetrics {
    head: IntGaugeVec,
    acked: IntGaugeVec,
    depth: IntGaugeVec,
    bytes: IntGaugeVec,
    oldest: prometheus::GaugeVec,
    dead_letters: IntGaugeVec,
    connected: IntGaugeVec,
}

impl ChannelMetrics {
    fn new(registry: &Registry) -> Self {
        let per =
            |name: &str, help: &str| must(IntGaugeVec::new(Opts::new(name, help), &["channel"]));
        let metrics = Self {
            head: per(
                "switchyard_channel_head",
                "The highest sequence number a channel has given.",
            ),
            acked: per(
                "switchyard_channel_acked",
                "The highest sequence number a connector acknowledged.",
            ),
            depth: per(
                "switchyard_channel_depth",
                "Messages waiting in a channel for its connector.",
            ),
            bytes: per("switchyard_channel_bytes", "Bytes waiting in a channel."),
            oldest: must(prometheus::GaugeVec::new(
                Opts::new(
                    "switchyard_channel_oldest_age_seconds",
                    "Age of the oldest message waiting in a channel.",
                ),
                &["channel"],
            )),
            dead_letters: per(
                "switchyard_channel_dead_letters",
                "Messages past a channel's retention, never acknowledged.",
            ),
            connected: per(
                "switchyard_channel_connected",
                "1 while a connector holds the channel's lease.",
            ),
        };
        for c in [
            Box::new(metrics.head.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.acked.clone()),
            Box::new(metrics.depth.clone()),
            Box::new(metrics.bytes.clone()),
            Box::new(metrics.oldest.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.connected.clone()),
        ] {
            must(registry.register(c));
        }
        metrics
    }

    fn set(&self, reports: &[crate::connect::ChannelReport]) {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for vec in [
            &self.head,
            &self.acked,
            &self.depth,
            &self.bytes,
            &self.dead_letters,
            &self.connected,
        ] {
            vec.reset();
        }
        self.oldest.reset();
        for r in reports {
            let label = [r.channel.as_str()];
            self.head.with_label_values(&label).set(as_i64(r.head));
            self.acked.with_label_values(&label).set(as_i64(r.acked));
            self.depth.with_label_values(&label).set(as_i64(r.depth));
            self.bytes.with_label_values(&label).set(as_i64(r.bytes));
            self.dead_letters
                .with_label_values(&label)
                .set(as_i64(r.dead_letters));
            self.connected
                .with_label_values(&label)
                .set(i64::from(r.connected));
            if let Some(age) = r.oldest_age_seconds {
                self.oldest.with_label_values(&label).set(age);
            }
        }
    }
}

/// The spool's series: whole-spool gauges and one set per destination with records or dead
/// letters (at most `METRICS_MAX_WEBHOOKS` destinations, the deepest first).
struct SpoolMetrics {
    bytes_used: IntGauge,
    bytes_max: IntGauge,
    depth: IntGaugeVec,
    bytes: IntGaugeVec,
    oldest: prometheus::GaugeVec,
    dead_letters: IntGaugeVec,
    retries: IntCounterVec,
    delivered: IntCounterVec,
}

impl SpoolMetrics {
    fn new(registry: &Registry) -> Self {
        let per = |name: &str, help: &str| {
            must(IntGaugeVec::new(Opts::new(name, help), &["destination"]))
        };
        let counter = |name: &str, help: &str| {
            must(IntCounterVec::new(Opts::new(name, help), &["destination"]))
        };
        let metrics = Self {
            bytes_used: must(IntGauge::new(
                "switchyard_spool_bytes_used",
                "Bytes the spool holds (queued records and dead letters).",
            )),
            bytes_max: must(IntGauge::new(
                "switchyard_spool_bytes_max",
                "SPOOL_MAX_BYTES: the spool refuses new records past it (503).",
            )),
            depth: per(
                "switchyard_spool_depth",
                "Records waiting for a destination.",
            ),
            bytes: per(
                "switchyard_spool_queue_bytes",
                "Bytes waiting for a destination.",
            ),
            oldest: must(prometheus::GaugeVec::new(
                Opts::new(
                    "switchyard_spool_oldest_age_seconds",
                    "Age of the oldest record waiting for a destination.",
                ),
                &["destination"],
            )),
            dead_letters: per(
                "switchyard_spool_dead_letters",
                "Records that ran out of retries, kept until replayed or purged.",
            ),
            retries: counter(
                "switchyard_spool_retries_total",
                "Failed forwarding attempts.",
            ),
            delivered: counter(
                "switchyard_spool_delivered_total",
                "Spooled records a destination acknowledged.",
            ),
        };
        for c in [
            Box::new(metrics.bytes_used.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.bytes_max.clone()),
            Box::new(metrics.depth.clone()),
            Box::new(metrics.bytes.clone()),
            Box::new(metrics.oldest.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.delivered.clone()),
        ] {
            must(registry.register(c));
        }
        metrics
    }

    fn set(&self, report: &crate::spool::SpoolReport, budget: usize) {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.bytes_used.set(as_i64(report.bytes_used));
        self.bytes_max.set(as_i64(report.bytes_max));
        for vec in [&self.depth, &self.bytes, &self.dead_letters] {
            vec.reset();
        }
        self.oldest.reset();
        let mut queues: Vec<_> = report.queues.iter().collect();
        queues.sort_by_key(|q| std::cmp::Reverse(q.depth));
        for q in queues.into_iter().take(budget) {
            let label = [q.destination.as_str()];
            self.depth.with_label_values(&label).set(as_i64(q.depth));
            self.bytes.with_label_values(&label).set(as_i64(q.bytes));
            self.dead_letters
                .with_label_values(&label)
                .set(as_i64(q.dead_letters));
            if let Some(age) = q.oldest_age_seconds {
                self.oldest.with_label_values(&label).set(age);
            }
            catch_up(&self.retries.with_label_values(&label), q.retries);
            catch_up(&self.delivered.with_label_values(&label), q.delivered);
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// One scrape at a time: scrape-time copies (counters caught up to provider totals) must
    /// not interleave, or two scrapes would both add the same difference.
    rendering: std::sync::Mutex<()>,
    label_budget: usize,
    /// Checked on every request: hashed with the cache's hasher, not SipHash.
    admitted: DashSet<WebhookKey, KeyHasher>,
    admitted_count: AtomicUsize,
    requests: IntCounterVec,
    filtered: IntCounterVec,
    request_seconds: HistogramVec,
    delivery_seconds: HistogramVec,
    destination_errors: IntCounterVec,
    config_entries: IntGaugeVec,
    in_flight: IntGauge,
    body_reads: IntGauge,
    body_memory: IntGauge,
    revision: IntGauge,
    etcd_connected: IntGauge,
    etcd_has_leader: IntGauge,
    etcd_revision_lag: IntGauge,
    events_applied: IntCounter,
    invalid_entries: IntCounter,
    invalid_now: IntGauge,
    reconnects: IntCounter,
    full_loads: IntCounter,
    since_last_event: prometheus::Gauge,
    spool: SpoolMetrics,
    channels: ChannelMetrics,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn must<T>(result: prometheus::Result<T>) -> T {
    // Names and labels are constants of this file; a failure is a programming error caught by
    // the unit test below, never input-dependent.
    match result {
        Ok(value) => value,
        Err(e) => panic!("metric definition is invalid: {e}"),
    }
}

impl Metrics {
    pub fn new(label_budget: usize) -> Self {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new("switchyard_requests_total", "Webhook requests by outcome."),
            &["namespace", "webhook", "status"],
        ));
        let filtered = must(IntCounterVec::new(
            Opts::new(
                "switchyard_requests_filtered_total",
                "Requests answered `filtered` by the webhook's `filter` (not delivered).",
            ),
            &["namespace", "webhook"],
        ));
        let request_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "switchyard_request_duration_seconds",
                "Time from request to response, by status class.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["class"],
        ));
        let delivery_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "switchyard_delivery_duration_seconds",
                "Time a module took to acknowledge, by module and result.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["module", "result"],
        ));
        let destination_errors = must(IntCounterVec::new(
            Opts::new(
                "switchyard_destination_errors_total",
                "Deliveries a destination did not acknowledge, by connection and module.",
            ),
            &["connection", "module"],
        ));
        let config_entries = must(IntGaugeVec::new(
            Opts::new("switchyard_config_entries", "Live config entries by kind."),
            &["kind"],
        ));
        let gauge = |name: &str, help: &str| must(IntGauge::new(name, help));
        let in_flight = gauge(
            "switchyard_deliveries_in_flight",
            "Deliveries in flight now.",
        );
        let body_reads = gauge(
            "switchyard_body_reads_in_progress",
            "Request bodies being read now (bounded by MAX_BODY_READERS).",
        );
        let body_memory = gauge(
            "switchyard_body_memory_bytes",
            "Bytes of request bodies held in memory now (bounded by BODY_MEMORY_BYTES).",
        );
        // Counted by the providers; copied in at scrape time, typed as counters.
        let counter = |name: &str, help: &str| must(IntCounter::new(name, help));
        let revision = gauge("switchyard_config_revision", "Config revision applied.");
        let etcd_connected = gauge(
            "switchyard_etcd_connected",
            "1 while the etcd watch is established, 0 otherwise.",
        );
        let etcd_has_leader = gauge(
            "switchyard_etcd_has_leader",
            "1 while the etcd member in use has a leader, 0 otherwise.",
        );
        let etcd_revision_lag = gauge(
            "switchyard_etcd_revision_lag",
            "Newest revision seen from etcd minus the applied revision.",
        );
        let events_applied = counter(
            "switchyard_config_events_applied_total",
            "Config changes applied (watch events, file entries).",
        );
        let invalid_entries = counter(
            "switchyard_config_invalid_entries_total",
            "Invalid config entries skipped since start.",
        );
        let invalid_now = gauge(
            "switchyard_config_invalid_entries",
            "Config keys currently skipped as invalid.",
        );
        let reconnects = counter(
            "switchyard_etcd_reconnects_total",
            "etcd reconnect attempts.",
        );
        let full_loads = counter(
            "switchyard_config_full_loads_total",
            "Full config loads (start-up, compaction, restored cluster).",
        );
        let since_last_event = must(prometheus::Gauge::new(
            "switchyard_etcd_seconds_since_last_event",
            "Seconds since the last etcd watch event or progress notification.",
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(filtered.clone()),
            Box::new(request_seconds.clone()),
            Box::new(delivery_seconds.clone()),
            Box::new(destination_errors.clone()),
            Box::new(config_entries.clone()),
            Box::new(in_flight.clone()),
            Box::new(body_reads.clone()),
            Box::new(body_memory.clone()),
            Box::new(revision.clone()),
            Box::new(etcd_connected.clone()),
            Box::new(etcd_has_leader.clone()),
            Box::new(etcd_revision_lag.clone()),
            Box::new(events_applied.clone()),
            Box::new(invalid_entries.clone()),
            Box::new(invalid_now.clone()),
            Box::new(reconnects.clone()),
            Box::new(full_loads.clone()),
            Box::new(since_last_event.clone()),
        ] {
            must(registry.register(c));
        }
        let spool = SpoolMetrics::new(&registry);
        let channels = ChannelMetrics::new(&registry);
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // Not fatal: some sandboxes hide /proc details.
            let _ = registry.register(Box::new(process));
        }
        Self {
            registry,
            rendering: std::sync::Mutex::new(()),
            label_budget,
            admitted: DashSet::default(),
            admitted_count: AtomicUsize::new(0),
            requests,
            filtered,
            request_seconds,
            delivery_seconds,
            destination_errors,
            config_entries,
            in_flight,
            body_reads,
            body_memory,
            revision,
            etcd_connected,
            etcd_has_leader,
            etcd_revision_lag,
            events_applied,
            invalid_entries,
            invalid_now,
            reconnects,
            full_loads,
            since_last_event,
            spool,
            channels,
        }
    }

    /// Whether this webhook gets its own labels (the first `label_budget` seen do).
    fn labelled(&self, key: &WebhookKey) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if self.admitted_count.load(Ordering::Relaxed) >= self.label_budget {
            return false;
        }
        if self.admitted.insert(key.clone()) {
            self.admitted_count.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Counts one answered request. `key` is `None` when the path named no valid webhook.
    pub fn request(&self, key: Option<&WebhookKey>, status: u16, elapsed: Duration) {
        let status_label = status_label(status);
        match key {
            Some(key) if self.labelled(key) => self
                .requests
                .with_label_values(&[key.namespace.as_str(), key.id.as_str(), status_label])
                .inc(),
            _ => self
                .requests
                .with_label_values(&[OTHER, OTHER, status_label])
                .inc(),
        }
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.request_seconds
            .with_label_values(&[class])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one request the webhook's `filter` kept from its destinations.
    pub fn filtered(&self, key: &WebhookKey) {
        let (namespace, webhook) = if self.labelled(key) {
            (key.namespace.as_str(), key.id.as_str())
        } else {
            (OTHER, OTHER)
        };
        self.filtered.with_label_values(&[namespace, webhook]).inc();
    }

    /// Times one module's hand-over; errors are counted by connection.
    pub fn delivery(&self, module: &str, connection: Option<&str>, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.delivery_seconds
            .with_label_values(&[module, result])
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.destination_errors
                .with_label_values(&[connection.unwrap_or(""), module])
                .inc();
        }
    }

    /// The text exposition, with scrape-time values copied in first.
    pub fn render(&self, state: &ScrapeState) -> String {
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let as_i64_usize = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.config_entries
            .with_label_values(&["webhook"])
            .set(as_i64_usize(state.webhooks));
        self.config_entries
            .with_label_values(&["connection"])
            .set(as_i64_usize(state.connections));
        self.in_flight.set(as_i64_usize(state.in_flight));
        self.body_reads.set(as_i64_usize(state.body_reads));
        self.body_memory
            .set(i64::try_from(state.body_memory).unwrap_or(i64::MAX));
        self.revision.set(state.revision);
        self.etcd_connected
            .set(i64::from(state.etcd_connected.unwrap_or(false)));
        self.etcd_has_leader.set(i64::from(state.etcd_has_leader));
        self.etcd_revision_lag.set(state.etcd_revision_lag);
        catch_up(&self.events_applied, state.events_applied);
        catch_up(&self.invalid_entries, state.invalid_entries);
        self.invalid_now.set(as_i64_usize(state.skipped_now));
        catch_up(&self.reconnects, state.reconnects);
        catch_up(&self.full_loads, state.full_loads);
        self.since_last_event
            .set(state.since_last_event.unwrap_or(f64::NAN));
        if let Some(report) = &state.spool {
            self.spool.set(report, self.label_budget);
        }
        self.channels.set(&state.channels);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "Cannot encode metrics.");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Brings a counter up to a monotonic total counted elsewhere.
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Namespace, WebhookId};

    fn key(ns: &str, id: &str) -> WebhookKey {
        WebhookKey::new(Namespace::parse(ns).unwrap(), WebhookId::parse(id).unwrap())
    }

    #[test]
    fn every_total_is_a_counter() {
        let m = Metrics::new(1);
        let text = m.render(&ScrapeState {
            events_applied: 3,
            ..ScrapeState::default()
        });
        let totals: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter(|l| l.split(' ').next().is_some_and(|n| n.ends_with("_total")))
            .collect();
        assert!(totals.len() >= 4, "{totals:?}");
        for line in totals {
            assert!(line.ends_with(" counter"), "{line}");
        }
        assert!(text.contains("switchyard_config_events_applied_total 3"));
        let again = m.render(&ScrapeState {
            events_applied: 5,
            ..ScrapeState::default()
        });
        assert!(again.contains("switchyard_config_events_applied_total 5"));
    }

    #[test]
    fn labels_are_bounded_by_the_budget() {
        let m = Metrics::new(2);
        for i in 0..10 {
            m.request(
                Some(&key("ns", &format!("w{i}"))),
                200,
                Duration::from_millis(1),
            );
        }
        m.request(Some(&key("ns", "w0")), 503, Duration::from_millis(1));
        let text = m.render(&ScrapeState::default());
        assert!(
            text.contains(
                r#"switchyard_requests_total{namespace="ns",status="200",webhook="w0"} 1"#
            ),
            "{text}"
        );
        assert!(text
            .contains(r#"switchyard_requests_total{namespace="ns",status="503",webhook="w0"} 1"#));
        assert!(text.contains(
            r#"switchyard_requests_total{namespace="_other",status="200",webhook="_other"} 8"#
        ));
        assert!(!text.contains(r#"webhook="w5""#));
    }

    #[test]
    fn scrape_state_is_exposed() {
        let m = Metrics::new(10);
        m.delivery("kafka", Some("main"), false, Duration::from_millis(3));
        let text = m.render(&ScrapeState {
            webhooks: 25_000,
            revision: 42,
            etcd_connected: Some(true),
            ..ScrapeState::default()
        });
        assert!(
            text.contains(r#"switchyard_config_entries{kind="webhook"} 25000"#),
            "{text}"
        );
        assert!(text.contains("switchyard_config_revision 42"));
        assert!(text.contains("switchyard_etcd_connected 1"));
        assert!(text.contains(
            r#"switchyard_destination_errors_total{connection="main",module="kafka"} 1"#
        ));
    }
}
