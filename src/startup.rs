//! `Application`: builds the whole service from `Settings`, bound and ready to run.

use std::{future::Future, net::TcpListener, time::Duration};

use actix_web::{dev::Server, web, HttpServer};

use tokio::sync::Semaphore;

use crate::{
    cache::ConfigCache,
    connections::ConnectionPool,
    http::{self, AppState},
    metrics::Metrics,
    provider::{self, ProviderHandle},
    settings::Settings,
    shutdown::Shutdown,
};

/// A bound, configured Switchyard, not yet serving.
pub struct Application {
    server: Server,
    port: u16,
    shutdown: Shutdown,
    handle: AppHandle,
    grace: Duration,
}

/// Read access to a running application's state (tests and, later, admin endpoints).
#[derive(Clone)]
pub struct AppHandle {
    pub cache: ConfigCache,
    pub provider: ProviderHandle,
    pub pool: ConnectionPool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

impl Application {
    /// Binds the listener and starts the config provider. Must run inside a Tokio runtime.
    pub fn build(settings: &Settings) -> Result<Self, StartupError> {
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?
            .port();

        let shutdown = Shutdown::new();
        let cache = ConfigCache::new();
        let pool = ConnectionPool::new(cache.clone());
        shutdown
            .tasks
            .spawn(pool.clone().run_reaper(shutdown.token.child_token()));
        let provider = provider::spawn(settings, cache.clone(), pool.clone(), &shutdown);
        let state = web::Data::new(AppState {
            cache: cache.clone(),
            status: provider.status.clone(),
            default_namespace: settings.etcd_namespace.clone(),
            max_body_bytes: settings.max_body_bytes,
            in_flight: std::sync::Arc::new(Semaphore::new(settings.max_in_flight as usize)),
            trusted_proxies: settings.trusted_proxies.clone(),
            max_in_flight: settings.max_in_flight as usize,
            metrics: std::sync::Arc::new(Metrics::new(settings.metrics_max_webhooks)),
            stats: std::sync::Arc::clone(&provider.stats),
            pool: pool.clone(),
        });
        let grace = settings.shutdown_grace();
        let mut server = HttpServer::new(move || http::app(state.clone()))
            .disable_signals()
            .shutdown_timeout(grace.as_secs());
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind { address, source })?
            .run();
        tracing::info!(
            port,
            backend = settings.config_backend.as_str(),
            "Listening."
        );
        Ok(Self {
            server,
            port,
            shutdown,
            handle: AppHandle {
                cache,
                provider,
                pool,
            },
            grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Serves until `stop` resolves (or the server fails), then shuts down in order: stop accepting
    /// and finish in-flight requests, then stop the background tasks within the grace period.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let server_handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            result = &mut server => flatten(result),
            () = stop => {
                tracing::info!("Stopping: finishing in-flight requests.");
                server_handle.stop(true).await;
                flatten(server.await)
            }
        };
        if !self.shutdown.stop_tasks(self.grace).await {
            tracing::warn!(
                grace_secs = self.grace.as_secs(),
                "Background tasks did not stop within the grace period."
            );
        }
        self.handle.pool.close(self.grace).await;
        tracing::info!("Stopped.");
        result
    }
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    result.map_err(std::io::Error::other).and_then(|r| r)
}
