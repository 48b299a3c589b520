//! `GET /metrics`: Prometheus text exposition.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::{metrics::ScrapeState, provider::EtcdState};

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The spool's report reads its file: off the async threads.
    let spool = match state.spool.clone() {
        Some(spool) => web::block(move || spool.report()).await.ok(),
        None => None,
    };
    let status = state.status.borrow().clone();
    let stats = &state.stats;
    let heard = stats.heard_at_ms.load(Ordering::Relaxed);
    let scrape = ScrapeState {
        webhooks: state.cache.webhook_count(),
        connections: state.pool.len(),
        in_flight: state
            .max_in_flight
            .saturating_sub(state.in_flight.available_permits()),
        body_reads: state.body_readers.reading(),
        body_memory: state.body_memory.used(),
        revision: state.cache.revision(),
        etcd_connected: status.etcd.map(|e| e == EtcdState::Connected),
        etcd_has_leader: stats.etcd.member().has_leader,
        etcd_revision_lag: stats.etcd.lag(state.cache.revision()),
        events_applied: stats.events_applied.load(Ordering::Relaxed),
        invalid_entries: stats.invalid_entries.load(Ordering::Relaxed),
        reconnects: stats.reconnects.load(Ordering::Relaxed),
        full_loads: stats.full_loads.load(Ordering::Relaxed),
        since_last_event: (heard > 0)
            .then(|| crate::clock::now_ms().saturating_sub(heard) as f64 / 1_000.0),
        skipped_now: stats.skipped.len(),
        spool,
        channels: super::connect::reports(&state).await,
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&scrape))
}
