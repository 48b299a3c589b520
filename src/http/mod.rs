//! The HTTP surface (the only folder that imports actix-web): routes, state and error bodies.

mod body;
pub mod connect;
mod error;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod request_id;
pub mod spool;
pub mod status;
pub mod unread;
pub mod webhook;

use actix_web::{
    middleware::{from_fn, Condition},
    web, HttpResponse,
};
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use crate::{
    admission::BodyReaders,
    cache::ConfigCache,
    connections::ConnectionPool,
    keys::Namespace,
    metrics::Metrics,
    provider::{ProviderStats, ProviderStatus},
    shutdown::Phase,
    verify::ip::IpList,
};
use error::ApiError;

/// Shared handles, built once and cloned into every worker.
#[derive(Clone)]
pub struct AppState {
    pub cache: ConfigCache,
    pub status: watch::Receiver<ProviderStatus>,
    pub default_namespace: Namespace,
    pub max_body_bytes: u64,
    /// `MAX_BODY_BYTES_CEILING`: no body limit is above it (a preset's size is lowered to it).
    pub max_body_bytes_ceiling: u64,
    /// `BODY_MEMORY_BYTES`: the bytes of bodies held at once.
    pub body_memory: crate::admission::BodyMemory,
    /// One permit per delivery in flight (`MAX_IN_FLIGHT`); none left means 503 `overloaded`.
    pub in_flight: Arc<Semaphore>,
    /// Bodies being read (`MAX_BODY_READERS`, per client `MAX_BODY_READERS_PER_CLIENT`).
    pub body_readers: BodyReaders,
    /// `BODY_READ_TIMEOUT_MS`: the whole body must arrive within it (408 otherwise).
    pub body_read_timeout: std::time::Duration,
    /// Peers whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: IpList,
    /// `MAX_IN_FLIGHT`, to report deliveries in flight.
    pub max_in_flight: usize,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<ProviderStats>,
    pub pool: ConnectionPool,
    /// Serving, draining or stopping (SIGTERM).
    pub phase: watch::Receiver<Phase>,
    /// The spool, unless `SPOOL_DIR` is empty.
    pub spool: Option<crate::spool::Spool>,
    /// `SPOOL_HANDOFF_MS`.
    pub spool_handoff: std::time::Duration,
    /// Delivery ids seen (webhooks with `dedup`).
    pub dedup: Arc<crate::dedup::DedupStore>,
    /// Names the admin listener answers to besides IP addresses (`ADMIN_HOSTS`).
    pub admin_hosts: Arc<Vec<String>>,
    /// `SEAL_KEYS_FILE`: a secret a handshake hands over (Asana's) is logged sealed with it.
    pub seal_keys: Arc<crate::config::seal::Keyring>,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything on one port (no `ADMIN_PORT`); `/spool*` answers local peers only.
    All,
    /// Webhooks and `/health`; `/metrics` and `/status` answer 404 (they are on the admin port).
    Public,
    /// `/metrics`, `/status`, `/spool` (with replay and purge) and `/health` only (`ADMIN_PORT`).
    Admin,
}

/// Registers the routes of `surface`. `main` and the in-process tests both build the app with
/// this.
/// Every route but the webhook handler (which reads and holds its own body) is wrapped in
/// [`unread::hold_body`], so an unread body closes its connection instead of being drained; the
/// webhook path pays for no extra middleware.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AppState>, surface: Surface) {
    cfg.app_data(state);
    // A query string that does not parse (`?limit=-1`) is answered like every other error:
    // JSON, with its reason.
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|error, _| error::ApiError::InvalidRequest(error.to_string()).into()),
    );
    if surface != Surface::Admin {
        // A static prefix and a hand-split path: no regex on the hot path (see BENCHMARKS.md).
        cfg.service(web::scope("/webhook").default_service(web::to(webhook::post)));
        // Connectors pull their channels here (connector mode).
        cfg.service(
            web::resource("/connect/v1/{channel}")
                .route(web::get().to(connect::stream))
                .default_service(web::to(get_only)),
        )
        .service(
            web::resource("/connect/v1/{channel}/messages")
                .wrap(from_fn(unread::hold_body))
                .route(web::get().to(connect::messages))
                .default_service(web::to(get_only)),
        );
    }
    // Sharing the public port, the spool's endpoints answer only this host's own clients.
    let local = || Condition::new(surface == Surface::All, from_fn(guard::local_only));
    if surface != Surface::Public {
        cfg.service(
            web::resource("/metrics")
                .wrap(from_fn(unread::hold_body))
                .route(web::get().to(metrics::metrics))
                .default_service(web::to(get_only)),
        )
        .service(
            web::resource("/status")
                .wrap(from_fn(unread::hold_body))
                .route(web::get().to(status::status))
                .default_service(web::to(get_only)),
        )
        .service(
            web::resource("/spool")
                .wrap(from_fn(unread::hold_body))
                .wrap(local())
                .route(web::get().to(spool::status))
                .default_service(web::to(get_only)),
        )
        .service(
            web::resource("/spool/dead-letters")
                .wrap(from_fn(unread::hold_body))
                .wrap(local())
                .route(web::get().to(spool::dead_letters))
                .default_service(web::to(get_only)),
        );
        // Changes what will be delivered: local, unproxied clients only (see `spool`).
        cfg.service(
            // These read (or hold) their own bodies.
            web::resource("/spool/replay")
                .route(web::post().to(spool::replay))
                .default_service(web::to(post_only)),
        )
        .service(
            web::resource("/spool/purge")
                .route(web::post().to(spool::purge))
                .default_service(web::to(post_only)),
        );
    }
    cfg.service(
        web::resource("/health")
            .wrap(from_fn(unread::hold_body))
            .route(web::get().to(health::health))
            .route(web::head().to(health::health))
            .default_service(web::to(get_only)),
    )
    .default_service(web::to(not_found));
}

/// Wraps `configure` with the request-id middleware, as the server runs it.
pub fn app(
    state: web::Data<AppState>,
    surface: Surface,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .wrap(Condition::new(
            surface == Surface::Admin,
            from_fn(guard::admin),
        ))
        .wrap(from_fn(request_id::middleware))
        .configure(|cfg| configure(cfg, state, surface))
}

async fn get_only() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        allowed: "GET, HEAD",
    })
}

async fn post_only() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed { allowed: "POST" })
}

/// Any other path: 404, holding the request body (see `unread`).
async fn not_found(payload: web::Payload) -> HttpResponse {
    use actix_web::ResponseError as _;
    unread::hold(ApiError::NotFound.error_response(), payload)
}
