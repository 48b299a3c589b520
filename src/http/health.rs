//! `GET /health`: 200 once config is loaded (etcd being down does not make it unhealthy), 503 before.

use actix_web::{http::header, web, HttpResponse};

use super::{error::RETRY_AFTER_SECS, AppState};
use crate::shutdown::Phase;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let status = state.status.borrow().clone();
    let draining = *state.phase.borrow() != Phase::Serving;
    // Why the spool's disk is slow, if it is: the instance then says `degraded`.
    let spool_degraded = state.spool.as_ref().and_then(crate::spool::Spool::degraded);
    // Why the spool's disk fails writes, if it does: requests that need the spool get 503
    // until a probe succeeds; the others are served, so the instance says `degraded`.
    let spool_unavailable = state
        .spool
        .as_ref()
        .and_then(crate::spool::Spool::unavailable);
    // A spool that can no longer store anything cannot keep what a failed delivery needs kept:
    // the balancer should send elsewhere (it does not come back until a restart).
    let spool_failed = state.spool.as_ref().is_some_and(|s| !s.is_writing());
    let (word, mut response) = if draining {
        // Load balancers take the instance out; requests are still served meanwhile.
        let mut r = HttpResponse::ServiceUnavailable();
        r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        ("draining", r)
    } else if spool_failed {
        let mut r = HttpResponse::ServiceUnavailable();
        r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        ("unhealthy", r)
    } else if status.loaded
        && (status.restarting || spool_degraded.is_some() || spool_unavailable.is_some())
    {
        // Serving the last applied config while the provider comes back, or with a slow spool
        // disk: taking every instance out of the balancer for either would turn one bad config
        // entry or one slow volume type into an outage.
        ("degraded", HttpResponse::Ok())
    } else if status.loaded {
        ("healthy", HttpResponse::Ok())
    } else {
        let mut r = HttpResponse::ServiceUnavailable();
        r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        ("starting", r)
    };
    let mut components = serde_json::Map::new();
    let config_word = match (status.loaded, state.stats.missing_files().is_empty()) {
        _ if status.restarting => "restarting",
        (false, _) => "starting",
        (true, true) => "healthy",
        (true, false) => "no config file",
    };
    components.insert("config_manager".into(), config_word.into());
    if let Some(etcd) = status.etcd {
        components.insert("etcd".into(), etcd.as_str().into());
    }
    // Serving from the spool is healthy (requests are kept); it says so, and how much is left.
    let spool = state.spool.as_ref().map(|spool| {
        let (used, max) = (spool.bytes_used(), spool.bytes_max());
        // Full: the largest request allowed might no longer fit.
        let degraded = spool_degraded.as_deref();
        let word = if !spool.is_writing() {
            "failed"
        } else if spool_unavailable.is_some() {
            "unavailable"
        } else if degraded.is_some() {
            // A slow disk: requests that need the spool may get 503, every other one is served,
            // so the instance stays in the balancer (every instance may share that disk type).
            "degraded"
        } else if max.saturating_sub(used) < state.max_body_bytes {
            "full"
        } else if spool.backlog() > 0 {
            "forwarding backlog"
        } else {
            "healthy"
        };
        components.insert("spool".into(), word.into());
        let mut body = serde_json::json!({
            "backlog": spool.backlog(),
            "bytes_used": used,
            "bytes_free": max.saturating_sub(used),
        });
        if let Some(reason) = degraded {
            body["degraded"] = reason.into();
        }
        if let Some(reason) = &spool_unavailable {
            body["unavailable"] = reason.as_str().into();
        }
        body
    });
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    let mut body = serde_json::json!({
        "status": word,
        "components": components,
        "config": {
            "backend": status.backend.as_str(),
            "revision": state.cache.revision(),
            "webhooks": state.cache.webhook_count(),
            "connections": state.pool.len(),
        },
    });
    if status.etcd.is_some() {
        let link = &state.stats.etcd;
        let member = link.member();
        body["etcd"] = serde_json::json!({
            "endpoint": member.endpoint,
            "has_leader": member.has_leader,
            "revision_lag": link.lag(state.cache.revision()),
        });
    }
    if let Some(spool) = spool {
        body["spool"] = spool;
    }
    response.json(body)
}
