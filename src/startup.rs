//! `Application`: builds the whole service from `Settings`, bound and ready to run.

use std::{future::Future, net::TcpListener, time::Duration};

use actix_web::{dev::Server, http::KeepAlive, web, HttpServer};

use tokio::sync::Semaphore;

use crate::{
    admission::BodyReaders,
    cache::ConfigCache,
    connections::ConnectionPool,
    http::{self, AppState, Surface},
    metrics::Metrics,
    provider::{self, ProviderHandle},
    redelivery::Routes,
    settings::Settings,
    shutdown::{Phase, Shutdown},
    spool::Spool,
};

/// How long before the end of the grace period in-flight requests are answered, so the answer
/// is written before the connection is closed.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// A bound, configured Switchyard, not yet serving.
pub struct Application {
    server: Server,
    /// The admin listener (`ADMIN_PORT`), when set.
    admin: Option<Server>,
    port: u16,
    admin_port: Option<u16>,
    shutdown: Shutdown,
    handle: AppHandle,
    grace: Duration,
    /// `SHUTDOWN_DRAIN_SECONDS`.
    drain: Duration,
}

/// Read access to a running application's state (tests and, later, admin endpoints).
#[derive(Clone)]
pub struct AppHandle {
    pub cache: ConfigCache,
    pub provider: ProviderHandle,
    pub pool: ConnectionPool,
    pub spool: Option<Spool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The spool directory cannot be used (another instance holds it, a damaged file, the disk).
    #[error("cannot open the spool in {dir}: {source}")]
    Spool {
        dir: String,
        source: crate::spool::StoreError,
    },
    /// The channels' file (connector mode) cannot be used.
    #[error("cannot open the channels in {dir}: {source}")]
    Channels {
        dir: String,
        source: crate::connect::ChannelError,
    },
    /// Connector mode's settings cannot be used (a CA file that does not read, ...).
    #[error("connector: {0}")]
    Connector(#[source] crate::connector::ConnectorError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    /// `SEAL_KEYS_FILE` is set but cannot be read or holds no valid key (checked with the
    /// settings; this is the file changing in between).
    #[error("SEAL_KEYS_FILE: {0}")]
    SealKeys(#[from] crate::config::seal::KeyFileError),
}

/// The keys of `SEAL_KEYS_FILE` (none when it is not set). A file other users may read gets a
/// warning: it opens every sealed secret.
fn seal_keys(settings: &Settings) -> Result<crate::config::seal::Keyring, StartupError> {
    let keys = crate::config::seal::Keyring::from_setting(settings.seal_keys_file.as_deref())?;
    let Some(path) = &settings.seal_keys_file else {
        return Ok(keys);
    };
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "SEAL_KEYS_FILE may be read by other users; it opens every sealed secret \
                 (chmod 600)."
            );
        }
    }
    tracing::info!(
        key_ids = ?keys.ids().collect::<Vec<_>>(),
        "Sealed secrets open with these keys."
    );
    Ok(keys)
}

/// Binds `host:port`; returns the listener and the port it got.
fn bind(host: &str, port: u16) -> Result<(TcpListener, String, u16), StartupError> {
    let address = format!("{host}:{port}");
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
    Ok((listener, address, port))
}

/// Serves `surface` on `listener` with the connection limits of `settings`.
fn serve(
    settings: &Settings,
    state: &web::Data<AppState>,
    surface: Surface,
    listener: TcpListener,
    address: String,
    workers: usize,
) -> Result<Server, StartupError> {
    let state = state.clone();
    let keep_alive = match settings.keep_alive_seconds {
        0 => KeepAlive::Disabled,
        secs => KeepAlive::Timeout(Duration::from_secs(secs)),
    };
    // actix counts connections per worker.
    let per_worker = (settings.max_connections as usize).div_ceil(workers).max(1);
    Ok(HttpServer::new(move || http::app(state.clone(), surface))
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace().as_secs())
        .workers(workers)
        .keep_alive(keep_alive)
        .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
        .client_disconnect_timeout(Duration::from_millis(settings.client_disconnect_timeout_ms))
        .max_connections(per_worker)
        .listen(listener)
        .map_err(|source| StartupError::Bind { address, source })?
        .run())
}

impl Application {
    /// Binds the listener and starts the config provider. Must run inside a Tokio runtime.
    pub fn build(settings: &Settings) -> Result<Self, StartupError> {
        let keys = std::sync::Arc::new(seal_keys(settings)?);
        let (listener, address, port) = bind(&settings.host, settings.port)?;
        let admin_listener = settings
            .admin_port
            .map(|admin_port| bind(&settings.admin_host, admin_port))
            .transpose()?;

        let shutdown = Shutdown::new();
        let cache = ConfigCache::new();
        let pool = ConnectionPool::with_networks(
            shutdown.tasks.clone(),
            settings.http_allowed_networks.clone(),
        );
        let provider = provider::spawn(
            settings,
            cache.clone(),
            pool.clone(),
            std::sync::Arc::clone(&keys),
            &shutdown,
        );
        let metrics = std::sync::Arc::new(Metrics::new(settings.metrics_max_webhooks));
        let spool = open_spool(settings, &shutdown)?;
        let mut opened_channels = None;
        if let Some(dir) = settings.spool_dir() {
            let channels =
                crate::connect::Channels::open(dir).map_err(|source| StartupError::Channels {
                    dir: dir.display().to_string(),
                    source,
                })?;
            pool.use_channels(channels.clone());
            opened_channels = Some(channels.clone());
        }
        // Channels kept in Redis need no SPOOL_DIR: every configured channel is swept.
        shutdown
            .tasks
            .spawn(crate::connections::channel::expire_forever(
                pool.clone(),
                shutdown.token.clone(),
            ));
        if let Some(spool) = &spool {
            let target = Routes {
                cache: cache.clone(),
                metrics: std::sync::Arc::clone(&metrics),
            };
            shutdown.tasks.spawn(start_forwarding(
                spool.clone(),
                std::sync::Arc::new(target),
                provider.status.clone(),
                shutdown.token.clone(),
            ));
        }
        if let Some(channels) = opened_channels {
            crate::connector::spawn(
                settings,
                crate::connector::Parts {
                    channels,
                    cache: cache.clone(),
                    status: provider.status.clone(),
                    metrics: std::sync::Arc::clone(&metrics),
                    spool: spool.clone(),
                    handoff: settings.spool_handoff(),
                },
                &shutdown.tasks,
                shutdown.token.clone(),
            )
            .map_err(StartupError::Connector)?;
        }
        let state = web::Data::new(AppState {
            cache: cache.clone(),
            status: provider.status.clone(),
            default_namespace: settings.etcd_namespace.clone(),
            max_body_bytes: settings.max_body_bytes,
            max_body_bytes_ceiling: settings.max_body_bytes_ceiling,
            body_memory: crate::admission::BodyMemory::new(settings.body_memory_bytes),
            in_flight: std::sync::Arc::new(Semaphore::new(settings.max_in_flight as usize)),
            body_readers: BodyReaders::new(
                settings.max_body_readers as usize,
                settings.max_body_readers_per_client,
            ),
            body_read_timeout: settings.body_read_timeout(),
            trusted_proxies: settings.trusted_proxies.clone(),
            max_in_flight: settings.max_in_flight as usize,
            metrics,
            stats: std::sync::Arc::clone(&provider.stats),
            pool: pool.clone(),
            phase: shutdown.phase.subscribe(),
            spool,
            spool_handoff: settings.spool_handoff(),
            dedup: crate::dedup::DedupStore::new(
                usize::try_from(settings.dedup_max_keys).unwrap_or(usize::MAX),
            ),
            admin_hosts: std::sync::Arc::new(settings.admin_hosts.0.clone()),
            seal_keys: keys,
        });
        let grace = settings.shutdown_grace();
        let drain = Duration::from_secs(settings.shutdown_drain_seconds);
        let workers = match settings.http_workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let public = if admin_listener.is_some() {
            Surface::Public
        } else {
            Surface::All
        };
        let server = serve(settings, &state, public, listener, address, workers)?;
        let (admin, admin_port) = match admin_listener {
            Some((listener, address, admin_port)) => (
                Some(serve(
                    settings,
                    &state,
                    Surface::Admin,
                    listener,
                    address,
                    1,
                )?),
                Some(admin_port),
            ),
            None => (None, None),
        };
        tracing::info!(
            port,
            admin_port,
            backend = settings.config_backend.as_str(),
            "Listening."
        );
        Ok(Self {
            server,
            admin,
            port,
            admin_port,
            shutdown,
            handle: AppHandle {
                cache,
                provider,
                pool,
                spool: state.spool.clone(),
            },
            grace,
            drain,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port (`ADMIN_PORT`; 0 there picks a free port).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Serves until `stop` resolves (or the server fails), then shuts down in order: stop accepting
    /// and finish in-flight requests, then stop the background tasks within the grace period.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let server_handle = self.server.handle();
        let admin_handle = self.admin.as_ref().map(Server::handle);
        if let Some(admin) = self.admin {
            tokio::spawn(admin);
        }
        let mut server = tokio::spawn(self.server);
        // One grace period for everything after the drain: in-flight requests, background
        // tasks and producer flushes share it, so the whole stop fits drain + grace.
        let mut end = None;
        let result = tokio::select! {
            result = &mut server => flatten(result),
            () = stop => {
                tracing::info!(
                    drain_secs = self.drain.as_secs(),
                    "Draining: /health answers 503 while requests are still served."
                );
                self.shutdown.phase.send_replace(Phase::Draining);
                let drained = tokio::select! {
                    result = &mut server => Some(flatten(result)),
                    () = tokio::time::sleep(self.drain) => None,
                };
                match drained {
                    Some(result) => result,
                    None => {
                        // Answers go out before actix's own grace ends and cuts connections.
                        let now = tokio::time::Instant::now();
                        end = Some(now + self.grace);
                        let deadline = now + self.grace.saturating_sub(ANSWER_MARGIN);
                        self.shutdown.phase.send_replace(Phase::Stopping { deadline });
                        tracing::info!("Stopping: no new connections; finishing in-flight requests.");
                        server_handle.stop(true).await;
                        flatten(server.await)
                    }
                }
            }
        };
        if let Some(admin) = admin_handle {
            admin.stop(true).await;
        }
        let end = end.unwrap_or_else(|| tokio::time::Instant::now() + self.grace);
        let left = || end.saturating_duration_since(tokio::time::Instant::now());
        if !self.shutdown.stop_tasks(left()).await {
            tracing::warn!(
                grace_secs = self.grace.as_secs(),
                "Background tasks did not stop within the grace period."
            );
        }
        self.handle.pool.close(left()).await;
        tracing::info!("Stopped.");
        result
    }
}

/// Opens the spool of `SPOOL_DIR` (none when it is empty). Its writer and forwarders are
/// background tasks: on a stop they finish the record they are on and leave the rest on disk.
fn open_spool(settings: &Settings, shutdown: &Shutdown) -> Result<Option<Spool>, StartupError> {
    let Some(dir) = settings.spool_dir() else {
        tracing::info!("Spool off (SPOOL_DIR is empty): a destination that fails answers 503.");
        return Ok(None);
    };
    let spool = Spool::open(
        dir,
        // The file backend has one namespace: it may use the whole spool.
        crate::spool::Limits::new(
            settings.spool_max_bytes,
            match settings.config_backend {
                crate::settings::Backend::File => 100,
                crate::settings::Backend::Etcd => settings.spool_namespace_share,
            },
        )
        .with_forwards(settings.spool_max_forwards)
        .with_write_timeout(Duration::from_millis(settings.spool_write_timeout_ms))
        .with_on_damage(match settings.spool_on_damage {
            crate::settings::OnDamage::Refuse => crate::spool::damage::OnDamage::Refuse,
            crate::settings::OnDamage::Salvage => crate::spool::damage::OnDamage::Salvage,
        }),
        &shutdown.tasks,
        shutdown.token.child_token(),
    )
    .map_err(|source| StartupError::Spool {
        dir: dir.display().to_string(),
        source,
    })?;
    tracing::info!(
        dir = %dir.display(),
        backlog = spool.backlog(),
        max_bytes = settings.spool_max_bytes,
        "Spool open."
    );
    Ok(Some(spool))
}

/// Starts forwarding once the config is loaded, so records waiting from a previous run are
/// not failed against a cache that is still empty.
async fn start_forwarding(
    spool: Spool,
    target: std::sync::Arc<Routes>,
    mut status: tokio::sync::watch::Receiver<provider::ProviderStatus>,
    token: tokio_util::sync::CancellationToken,
) {
    tokio::select! {
        () = token.cancelled() => {}
        loaded = status.wait_for(|s| s.loaded) => {
            if loaded.is_ok() {
                spool.start(target);
            }
        }
    }
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    result.map_err(std::io::Error::other).and_then(|r| r)
}
