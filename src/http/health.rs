//! `GET /health`: 200 once config is loaded (etcd being down does not make it unhealthy), 503 before.

use actix_web::{http::header, web, HttpResponse};

use super::{error::RETRY_AFTER_SECS, AppState};
use crate::shutdown::Phase;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let status = state.status.borrow().clone();
    let draining = *state.phase.borrow() != Phase::Serving;
    let (word, mut response) = if draining {
        // Load balancers take the instance out; requests are still served meanwhile.
        let mut r = HttpResponse::ServiceUnavailable();
        r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        ("draining", r)
    } else if status.loaded {
        ("healthy", HttpResponse::Ok())
    } else {
        let mut r = HttpResponse::ServiceUnavailable();
        r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        ("starting", r)
    };
    let mut components = serde_json::Map::new();
    let config_word = match (status.loaded, state.stats.missing_files().is_empty()) {
        (false, _) => "starting",
        (true, true) => "healthy",
        (true, false) => "no config file",
    };
    components.insert("config_manager".into(), config_word.into());
    if let Some(etcd) = status.etcd {
        components.insert("etcd".into(), etcd.as_str().into());
    }
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    response.json(serde_json::json!({
        "status": word,
        "components": components,
        "config": {
            "backend": status.backend.as_str(),
            "revision": state.cache.revision(),
            "webhooks": state.cache.webhook_count(),
            "connections": state.pool.len(),
        }
    }))
}
