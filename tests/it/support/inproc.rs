//! In-process app: `http::app` over a cache the test fills, with recording modules.

use std::sync::Arc;

use actix_web::{
    http::{header, StatusCode},
    test, web,
};
use serde_json::Value;
use switchyard::{
    admission::BodyReaders,
    cache::ConfigCache,
    dispatch::Route,
    http::{app, AppState, Surface},
    keys::{Namespace, WebhookId, WebhookKey},
    modules::Module,
    provider::ProviderStatus,
    settings::Backend,
    webhook::Webhook,
};
use tokio::sync::watch;

use super::recording::RecordingModule;

pub const LIMIT: u64 = 64;

pub struct Harness {
    pub cache: ConfigCache,
    _status: watch::Sender<ProviderStatus>,
    pub state: web::Data<AppState>,
}

pub fn harness(loaded: bool) -> Harness {
    harness_with(loaded, 1024)
}

/// A loaded app whose `TRUSTED_PROXIES` is `proxies`.
pub fn harness_trusting(proxies: &str) -> Harness {
    let mut h = harness(true);
    let mut state = (*h.state.clone().into_inner()).clone();
    state.trusted_proxies = proxies.parse().unwrap();
    h.state = web::Data::new(state);
    h
}

pub fn harness_with(loaded: bool, max_in_flight: usize) -> Harness {
    let (tx, rx) = watch::channel(ProviderStatus {
        backend: Backend::File,
        loaded,
        etcd: None,
        restarting: false,
    });
    let cache = ConfigCache::new();
    let state = web::Data::new(AppState {
        cache: cache.clone(),
        status: rx,
        default_namespace: Namespace::parse("default").unwrap(),
        max_body_bytes: LIMIT,
        max_body_bytes_ceiling: 32 << 20,
        body_memory: switchyard::admission::BodyMemory::new(256 << 20),
        in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
        body_readers: BodyReaders::new(1024, 256),
        body_read_timeout: std::time::Duration::from_secs(10),
        trusted_proxies: Default::default(),
        max_in_flight,
        metrics: Arc::new(switchyard::metrics::Metrics::new(100)),
        stats: Default::default(),
        pool: switchyard::connections::ConnectionPool::new(Default::default()),
        phase: tokio::sync::watch::channel(switchyard::shutdown::Phase::Serving).1,
        spool: None,
        spool_handoff: std::time::Duration::from_secs(2),
        dedup: switchyard::dedup::DedupStore::new(1000),
        admin_hosts: Arc::new(vec!["localhost".into()]),
        seal_keys: Arc::new(switchyard::config::seal::Keyring::empty()),
    });
    Harness {
        cache,
        _status: tx,
        state,
    }
}

pub fn add(cache: &ConfigCache, ns: &str, id: &str, entry: Value, module: &Arc<RecordingModule>) {
    let module: Arc<dyn Module> = Arc::clone(module) as Arc<dyn Module>;
    let key = WebhookKey::new(Namespace::parse(ns).unwrap(), WebhookId::parse(id).unwrap());
    let webhook = Webhook::from_value(entry).unwrap();
    cache.upsert_webhook(Arc::new(Route::with_modules(key, webhook, vec![module])));
}

/// One webhook `a/w` with `entry` and its recording module; room for providers' example bodies
/// (the harness's global body limit is tiny) unless the entry sets its own.
pub fn one_webhook(mut entry: Value) -> (Harness, Arc<RecordingModule>) {
    if entry.get("max_body_bytes").is_none() {
        entry["max_body_bytes"] = serde_json::json!(4096);
    }
    let h = harness(true);
    let module = RecordingModule::new();
    add(&h.cache, "a", "w", entry, &module);
    (h, module)
}

pub async fn call(h: &Harness, req: test::TestRequest) -> (StatusCode, header::HeaderMap, Value) {
    let (status, headers, body) = call_text(h, req).await;
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, headers, json)
}

/// As [`call`], with the body as text.
pub async fn call_text(
    h: &Harness,
    req: test::TestRequest,
) -> (StatusCode, header::HeaderMap, String) {
    let service = test::init_service(app(h.state.clone(), Surface::All)).await;
    let response = test::call_service(&service, req.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = test::read_body(response).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub fn post(path: &str, body: &'static str) -> test::TestRequest {
    test::TestRequest::post()
        .uri(path)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body)
}

/// A POST with an owned body and no content type.
pub fn post_bytes(path: &str, body: impl Into<Vec<u8>>) -> test::TestRequest {
    test::TestRequest::post().uri(path).set_payload(body.into())
}
