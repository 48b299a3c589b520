//! `GET /status`: "did my change take effect?" in one call: the applied revision and when, the
//! keys currently skipped (key and reason, never values), and the connections with their clients.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::AppState;

fn rfc3339_ms(ms: u64) -> Option<String> {
    (ms > 0).then(|| {
        crate::modules::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
    })
}

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    // The spool's report reads its file: off the async threads.
    let spool = match state.spool.clone() {
        Some(spool) => web::block(move || spool.report()).await.ok(),
        None => None,
    };
    let status = state.status.borrow().clone();
    let stats = &state.stats;
    let mut skipped: Vec<_> = stats
        .skipped
        .iter()
        .map(|e| serde_json::json!({"key": e.key(), "reason": e.value()}))
        .collect();
    skipped.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    let etcd_link = status.etcd.map(|_| {
        let revision = state.cache.revision();
        serde_json::json!({
            "member": stats.etcd.member(),
            "applied_revision": revision,
            "newest_revision": stats.etcd.newest_revision(),
            "revision_lag": stats.etcd.lag(revision),
        })
    });
    let mut connections = state.pool.describe();
    connections.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "backend": status.backend.as_str(),
            "loaded": status.loaded,
            "etcd": status.etcd.map(|e| e.as_str()),
            "etcd_link": etcd_link,
            "revision": state.cache.revision(),
            "applied_at": rfc3339_ms(stats.applied_at_ms.load(Ordering::Relaxed)),
            "last_heard_from_etcd_at": rfc3339_ms(stats.heard_at_ms.load(Ordering::Relaxed)),
            "webhooks": state.cache.webhook_count(),
            "missing_files": state.stats.missing_files(),
            "skipped": skipped,
            "connections": connections,
            "spool": spool,
            "channels": super::connect::reports(&state).await,
            "counters": {
                "events_applied": stats.events_applied.load(Ordering::Relaxed),
                "invalid_entries": stats.invalid_entries.load(Ordering::Relaxed),
                "full_loads": stats.full_loads.load(Ordering::Relaxed),
                "reconnects": stats.reconnects.load(Ordering::Relaxed),
                "provider_restarts": stats.provider_restarts.load(Ordering::Relaxed),
                "last_full_load_ms": stats.last_full_load_us.load(Ordering::Relaxed) as f64 / 1_000.0,
            },
        }))
}
