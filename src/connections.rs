//! `ConnectionPool`: one live client per connection name, built on first use, rebuilt when the
//! connection's config changes, closed when it is removed.
//!
//! Modules hold the pool and a connection name, never a client: a connection changed in etcd is
//! picked up by the next delivery without rebuilding any webhook.

use std::{sync::Arc, time::Duration};

use dashmap::{mapref::entry::Entry, DashMap};
use tokio_util::sync::CancellationToken;

use crate::{
    cache::ConfigCache,
    config::Connection,
    keys::ConnectionName,
    modules::{kafka::Producer, redis::RedisClient, DeliveryError},
};

/// How long a replaced or removed Kafka producer gets to deliver what it has queued.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// A client together with the config it was built from.
#[derive(Clone)]
struct Live<C> {
    config: Arc<Connection>,
    client: C,
}

/// What happens to a client that is no longer current.
trait Retire: Clone + Send + 'static {
    fn retire(self);
}

impl Retire for Producer {
    fn retire(self) {
        // Outside a runtime (tests, shutdown) dropping is all there is to do.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.flush(DRAIN_GRACE));
        }
    }
}

impl Retire for RedisClient {
    fn retire(self) {
        // In-flight commands hold their own clone; the connection closes with the last one.
    }
}

struct Slots<C> {
    map: DashMap<ConnectionName, Live<C>>,
}

impl<C: Retire> Slots<C> {
    fn new() -> Self {
        Self {
            map: DashMap::new(),
        }
    }

    /// The client for `config`, building it (no I/O) when there is none or the config changed.
    fn get(
        &self,
        name: &ConnectionName,
        config: Arc<Connection>,
        build: impl FnOnce(&Connection) -> Result<C, String>,
    ) -> Result<C, String> {
        if let Some(live) = self.map.get(name) {
            if Arc::ptr_eq(&live.config, &config) {
                return Ok(live.client.clone());
            }
        }
        match self.map.entry(name.clone()) {
            Entry::Occupied(entry) if Arc::ptr_eq(&entry.get().config, &config) => {
                Ok(entry.get().client.clone())
            }
            Entry::Occupied(mut entry) => {
                let client = build(&config)?;
                let old = entry.insert(Live {
                    config,
                    client: client.clone(),
                });
                tracing::info!(connection = %name, "Connection changed; client rebuilt.");
                old.client.retire();
                Ok(client)
            }
            Entry::Vacant(entry) => {
                let client = build(&config)?;
                entry.insert(Live {
                    config,
                    client: client.clone(),
                });
                tracing::info!(connection = %name, "Connection client created.");
                Ok(client)
            }
        }
    }

    /// Retires clients whose connection is gone or changed.
    fn reconcile(&self, cache: &ConfigCache) {
        let stale: Vec<ConnectionName> = self
            .map
            .iter()
            .filter(|live| {
                cache
                    .connection(live.key())
                    .is_none_or(|current| !Arc::ptr_eq(&current, &live.config))
            })
            .map(|live| live.key().clone())
            .collect();
        for name in stale {
            if let Some((_, old)) = self.map.remove(&name) {
                tracing::info!(connection = %name, "Connection removed or changed; client closed.");
                old.client.retire();
            }
        }
    }

    fn is_current(&self, name: &ConnectionName, config: &Arc<Connection>) -> bool {
        self.map
            .get(name)
            .is_some_and(|live| Arc::ptr_eq(&live.config, config))
    }

    fn take_all(&self) -> Vec<C> {
        let names: Vec<_> = self.map.iter().map(|l| l.key().clone()).collect();
        names
            .into_iter()
            .filter_map(|n| self.map.remove(&n).map(|(_, l)| l.client))
            .collect()
    }
}

/// Shared handle; cloning is cheap.
#[derive(Clone)]
pub struct ConnectionPool {
    inner: Arc<Inner>,
}

struct Inner {
    cache: ConfigCache,
    kafka: Slots<Producer>,
    redis: Slots<RedisClient>,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("kafka", &self.inner.kafka.map.len())
            .field("redis", &self.inner.redis.map.len())
            .finish()
    }
}

impl ConnectionPool {
    pub fn new(cache: ConfigCache) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache,
                kafka: Slots::new(),
                redis: Slots::new(),
            }),
        }
    }

    fn config(&self, name: &ConnectionName) -> Result<Arc<Connection>, DeliveryError> {
        self.inner
            .cache
            .connection(name)
            .ok_or_else(|| DeliveryError::ConnectionMissing { name: name.clone() })
    }

    fn unavailable(module: &'static str, name: &ConnectionName, reason: String) -> DeliveryError {
        DeliveryError::Unavailable {
            module,
            reason: format!("connection `{name}`: {reason}"),
        }
    }

    /// The producer of a `kafka` connection.
    pub fn kafka(&self, name: &ConnectionName) -> Result<Producer, DeliveryError> {
        let config = self.config(name)?;
        if !matches!(*config, Connection::Kafka(_)) {
            return Err(DeliveryError::ConnectionMismatch {
                name: name.clone(),
                module: "kafka",
                expected: "kafka",
                found: config.kind(),
            });
        }
        self.inner
            .kafka
            .get(name, config, |c| match c {
                Connection::Kafka(k) => Producer::build(k),
                Connection::Redis(_) => Err("not a kafka connection".into()),
            })
            .map_err(|reason| Self::unavailable("kafka", name, reason))
    }

    /// The client of a `redis` connection.
    pub fn redis(&self, name: &ConnectionName) -> Result<RedisClient, DeliveryError> {
        let config = self.config(name)?;
        if !matches!(*config, Connection::Redis(_)) {
            return Err(DeliveryError::ConnectionMismatch {
                name: name.clone(),
                module: "redis",
                expected: "redis",
                found: config.kind(),
            });
        }
        self.inner
            .redis
            .get(name, config, |c| match c {
                Connection::Redis(r) => RedisClient::build(r),
                Connection::Kafka(_) => Err("not a redis connection".into()),
            })
            .map_err(|reason| Self::unavailable("redis", name, reason))
    }

    /// Every configured connection with its type and whether its client is built and current
    /// (no secrets).
    pub fn describe(&self) -> Vec<serde_json::Value> {
        let cache = &self.inner.cache;
        cache
            .connection_names()
            .into_iter()
            .filter_map(|name| {
                let config = cache.connection(&name)?;
                let live = match &*config {
                    Connection::Kafka(_) => self.inner.kafka.is_current(&name, &config),
                    Connection::Redis(_) => self.inner.redis.is_current(&name, &config),
                };
                Some(serde_json::json!({
                    "name": name.as_str(),
                    "type": config.kind(),
                    "client": if live { "ready" } else { "not_started" },
                }))
            })
            .collect()
    }

    /// Closes the clients of removed or changed connections.
    pub fn reconcile(&self) {
        self.inner.kafka.reconcile(&self.inner.cache);
        self.inner.redis.reconcile(&self.inner.cache);
    }

    /// Reconciles after every connection change until `token` is cancelled.
    pub async fn run_reaper(self, token: CancellationToken) {
        let mut changes = self.inner.cache.connection_changes();
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile();
                }
            }
        }
    }

    /// Flushes every Kafka producer (shutdown step 4), up to `grace` in all.
    pub async fn close(&self, grace: Duration) {
        let producers = self.inner.kafka.take_all();
        let flushes = producers.into_iter().map(|p| p.flush(grace));
        futures_util::future::join_all(flushes).await;
        drop(self.inner.redis.take_all());
    }
}
