//! `GET /health`: 200 once config is loaded (etcd being down does not make it unhealthy), 503 before.

use actix_web::{http::header, web, HttpResponse};

use super::{error::RETRY_AFTER_SECS, AppState};

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let status = state.status.borrow().clone();
    let (word, mut response) = if status.loaded {
        ("healthy", HttpResponse::Ok())
    } else {
        let mut r = HttpResponse::ServiceUnavailable();
        r.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        ("starting", r)
    };
    let mut components = serde_json::Map::new();
    components.insert("config_manager".into(), word.into());
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
