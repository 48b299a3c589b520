//! `ConnectionPool`: the one owner of connection configs and their clients.
//!
//! Providers call [`ConnectionPool::upsert`], [`ConnectionPool::remove`] and
//! [`ConnectionPool::replace_all`] as entries arrive; modules ask for a client by name on each
//! delivery, so a connection changed in etcd is picked up without rebuilding any webhook. A
//! client is built on first use (no I/O) and retired on the spot when its entry changes or goes;
//! a retired Kafka producer delivers what it has queued in a tracked task.

pub mod channel;
pub mod http;
pub mod kafka;
pub mod redis;

use std::{collections::HashMap, sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio_util::task::TaskTracker;

pub use self::redis::RedisClient;
pub use channel::ChannelQueue;
pub use http::{HttpClient, Networks};
pub use kafka::Producer;

use crate::{config::Connection, keys::ConnectionName};

/// How long a replaced or removed Kafka producer gets to deliver what it has queued.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Why no client can be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The webhook names a connection that does not exist (yet).
    #[error("connection `{name}` does not exist")]
    Missing { name: ConnectionName },
    /// The named connection is of another type than the module needs.
    #[error("connection `{name}` is of type {found}; module `{module}` needs {expected}")]
    Mismatch {
        name: ConnectionName,
        module: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// The connection's `namespaces` or `target_prefix` does not allow this use.
    #[error("connection `{name}`: {reason}")]
    NotAllowed {
        name: ConnectionName,
        reason: String,
    },
    /// The client could not be built from the connection's config.
    #[error("connection `{name}`: {reason}")]
    Unavailable {
        name: ConnectionName,
        reason: String,
    },
}

/// Why a client did not get a write through (Redis's reply, Kafka's delivery report), and
/// whether retrying can help. Each client file classifies its library's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    /// The destination refused this write for good: the same write fails the same way until
    /// someone changes the destination or the config.
    pub permanent: bool,
    pub message: String,
}

/// Who asks for a client, and what it will write to: what a connection's access rules judge.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    pub namespace: &'a str,
    /// The topic, stream, key or channel (`None`: no name of the webhook's, e.g. dedup keys).
    pub target: Option<&'a str>,
}

/// A built client.
#[derive(Clone)]
enum Client {
    Kafka(Producer),
    Redis(RedisClient),
    Http(HttpClient),
    Connect(ChannelClient),
}

/// A `connect` connection's client: its channel's queue.
#[derive(Clone, Debug)]
pub struct ChannelClient {
    pub queue: ChannelQueue,
    /// The channel's `max_bytes`.
    pub max_bytes: u64,
}

/// One connection: its config, and its client once built.
struct Slot {
    config: Arc<Connection>,
    client: Option<Client>,
}

/// Shared handle; cloning is cheap.
#[derive(Clone)]
pub struct ConnectionPool {
    inner: Arc<Inner>,
}

struct Inner {
    slots: DashMap<ConnectionName, Slot>,
    /// Where retired producers flush (the application's task tracker).
    tasks: TaskTracker,
    /// Where `http` connections may go (`HTTP_ALLOWED_NETWORKS`).
    networks: Arc<Networks>,
    /// The channels' store (`connect` connections), when `SPOOL_DIR` gives it a place.
    channels: std::sync::OnceLock<crate::connect::Channels>,
    /// The connections that keep channels (a `connect` connection's `store`): the router's
    /// own, never a webhook's, so no tenant can write into a channel's keys.
    stores: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("connections", &self.inner.slots.len())
            .finish()
    }
}

/// Checks what only the client library knows (librdkafka's property names and values). Pure:
/// runs when an entry is applied and in `switchyard check`.
pub fn validate(connection: &Connection) -> Result<(), String> {
    match connection {
        Connection::Kafka(k) => kafka::validate(k),
        Connection::Redis(r) => RedisClient::validate(r),
        Connection::Http(h) => HttpClient::validate(h),
        Connection::Connect(_) => Ok(()),
    }
}

/// What a [`ConnectionPool::replace_all`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolChanges {
    pub removed: usize,
    pub changed: usize,
}

impl ConnectionPool {
    pub fn new(tasks: TaskTracker) -> Self {
        Self::with_networks(tasks, Networks::default())
    }

    /// A pool whose `http` connections may reach only what `networks` permits.
    pub fn with_networks(tasks: TaskTracker, networks: Networks) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: DashMap::new(),
                tasks,
                networks: Arc::new(networks),
                channels: std::sync::OnceLock::new(),
                stores: std::sync::RwLock::default(),
            }),
        }
    }

    /// Gives `connect` connections their store (once, at startup).
    pub fn use_channels(&self, channels: crate::connect::Channels) {
        let _ = self.inner.channels.set(channels);
    }

    /// The channels' store, if there is one.
    pub fn channels(&self) -> Option<&crate::connect::Channels> {
        self.inner.channels.get()
    }

    /// Sets a connection's config. The same value keeps the live client; a new one retires it
    /// (the next delivery builds one from the new config). Returns whether anything changed.
    pub fn upsert(&self, name: ConnectionName, config: Arc<Connection>) -> bool {
        let old = {
            let mut slot = match self.inner.slots.get_mut(&name) {
                Some(slot) if *slot.config == *config => return false,
                Some(slot) => slot,
                None => {
                    self.inner.slots.insert(
                        name,
                        Slot {
                            config,
                            client: None,
                        },
                    );
                    self.note_stores();
                    return true;
                }
            };
            slot.config = config;
            slot.client.take()
        };
        if let Some(old) = old {
            tracing::info!(connection = %name, "Connection changed; client retired.");
            self.retire(old);
        }
        self.retire_kept_in(&name);
        self.note_stores();
        true
    }

    /// Whether connection `name` keeps channels (a `connect` connection's `store`): the
    /// router's own, refused to webhooks.
    pub fn keeps_channels(&self, name: &ConnectionName) -> bool {
        self.inner
            .stores
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(name.as_str())
    }

    /// Records which connections keep channels.
    fn note_stores(&self) {
        let stores = self
            .inner
            .slots
            .iter()
            .filter_map(|slot| match &*slot.config {
                Connection::Connect(c) => c.store.as_ref().map(|s| s.connection.clone()),
                _ => None,
            })
            .collect();
        *self
            .inner
            .stores
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stores;
    }

    /// Retires the clients of the channels kept in connection `store`: they hold its client.
    fn retire_kept_in(&self, store: &ConnectionName) {
        for mut slot in self.inner.slots.iter_mut() {
            let kept_here = matches!(
                &*slot.config,
                Connection::Connect(c) if c.store.as_ref().is_some_and(|s| s.connection == store.as_str())
            );
            if kept_here {
                slot.client = None;
            }
        }
    }

    /// Removes a connection and retires its client. Returns whether it existed.
    pub fn remove(&self, name: &ConnectionName) -> bool {
        match self.inner.slots.remove(name) {
            Some((_, slot)) => {
                if let Some(old) = slot.client {
                    tracing::info!(connection = %name, "Connection removed; client retired.");
                    self.retire(old);
                }
                self.retire_kept_in(name);
                self.note_stores();
                true
            }
            None => false,
        }
    }

    /// Makes `configs` the whole set: missing names are removed, changed ones retired, equal
    /// ones keep their clients.
    pub fn replace_all(&self, configs: HashMap<ConnectionName, Arc<Connection>>) -> PoolChanges {
        let gone: Vec<ConnectionName> = self
            .inner
            .slots
            .iter()
            .filter(|slot| !configs.contains_key(slot.key()))
            .map(|slot| slot.key().clone())
            .collect();
        let mut changes = PoolChanges::default();
        for name in gone {
            changes.removed += usize::from(self.remove(&name));
        }
        for (name, config) in configs {
            changes.changed += usize::from(self.upsert(name, config));
        }
        changes
    }

    /// The live config of a connection.
    pub fn config(&self, name: &ConnectionName) -> Option<Arc<Connection>> {
        self.inner
            .slots
            .get(name)
            .map(|slot| Arc::clone(&slot.config))
    }

    /// The names of the connections of `type` `kind` (`connect`: the channels).
    pub fn names_of(&self, kind: &str) -> Vec<ConnectionName> {
        self.inner
            .slots
            .iter()
            .filter(|slot| slot.config.kind() == kind)
            .map(|slot| slot.key().clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.slots.is_empty()
    }

    fn retire(&self, client: Client) {
        match client {
            Client::Kafka(producer) => {
                // Outside a runtime (unit tests) dropping is all there is to do.
                if tokio::runtime::Handle::try_current().is_ok() {
                    self.inner.tasks.spawn(producer.flush(DRAIN_GRACE));
                }
            }
            // In-flight commands hold their own clone; the connection closes with the last one.
            Client::Redis(_) | Client::Http(_) | Client::Connect(_) => {}
        }
    }

    /// The client of `name`, built from its config on first use, for a use the connection's
    /// access rules allow (checked on every call: a rule tightened in etcd applies at once;
    /// `None`: the router's own use, e.g. the Redis that keeps a channel).
    fn client(
        &self,
        name: &ConnectionName,
        module: &'static str,
        expected: &'static str,
        user: Option<Use<'_>>,
    ) -> Result<Client, PoolError> {
        let config = {
            let slot = self
                .inner
                .slots
                .get(name)
                .ok_or_else(|| PoolError::Missing { name: name.clone() })?;
            if let Some(user) = user {
                if self.keeps_channels(name) {
                    return Err(PoolError::NotAllowed {
                        name: name.clone(),
                        reason: "it keeps channels (a `connect` connection's `store`); no \
                                 webhook may write to it"
                            .into(),
                    });
                }
                slot.config
                    .access()
                    .permits(user.namespace, user.target)
                    .map_err(|reason| PoolError::NotAllowed {
                        name: name.clone(),
                        reason,
                    })?;
            }
            if let Some(client) = &slot.client {
                return Ok(client.clone());
            }
            Arc::clone(&slot.config)
        };
        if config.kind() != expected {
            return Err(PoolError::Mismatch {
                name: name.clone(),
                module,
                expected,
                found: config.kind(),
            });
        }
        // Built without holding the slot: a channel's client takes its store's.
        let built = self
            .build(name, &config)
            .map_err(|reason| PoolError::Unavailable {
                name: name.clone(),
                reason,
            })?;
        let Some(mut slot) = self.inner.slots.get_mut(name) else {
            return Ok(built);
        };
        if !Arc::ptr_eq(&slot.config, &config) {
            // Changed meanwhile: this client serves this call only.
            return Ok(built);
        }
        if let Some(first) = &slot.client {
            let first = first.clone();
            drop(slot);
            self.retire(built);
            return Ok(first);
        }
        slot.client = Some(built.clone());
        tracing::info!(connection = %name, "Connection client created.");
        Ok(built)
    }

    fn build(&self, name: &ConnectionName, config: &Connection) -> Result<Client, String> {
        match config {
            Connection::Kafka(k) => Producer::build(k).map(Client::Kafka),
            Connection::Redis(r) => RedisClient::build(r).map(Client::Redis),
            Connection::Http(h) => Ok(Client::Http(HttpClient::new(
                name.clone(),
                h,
                Arc::clone(&self.inner.networks),
            ))),
            Connection::Connect(c) => {
                let queue = match &c.store {
                    Some(store) => {
                        let store_name =
                            ConnectionName::parse(&store.connection).map_err(|e| e.to_string())?;
                        let redis = match self.client(&store_name, "connect", "redis", None) {
                            Ok(Client::Redis(redis)) => redis,
                            Ok(_) => {
                                return Err(format!(
                                    "its store `{store_name}` is not a redis connection"
                                ))
                            }
                            Err(error) => return Err(format!("its store: {error}")),
                        };
                        ChannelQueue::Shared(Arc::new(channel::Shared::new(
                            name.as_str(),
                            store_name.as_str(),
                            redis,
                        )))
                    }
                    None => match self.inner.channels.get() {
                        Some(channels) => ChannelQueue::Local {
                            channels: channels.clone(),
                            channel: channels.channel(name.as_str()),
                        },
                        None => {
                            return Err("a channel without a `store` needs SPOOL_DIR (its \
                                        messages are kept on disk)"
                                .into())
                        }
                    },
                };
                Ok(Client::Connect(ChannelClient {
                    queue,
                    max_bytes: c.max_bytes,
                }))
            }
        }
    }

    /// The producer of a `kafka` connection, for `module` used by `user`.
    pub fn kafka(
        &self,
        name: &ConnectionName,
        module: &'static str,
        user: Use<'_>,
    ) -> Result<Producer, PoolError> {
        match self.client(name, module, "kafka", Some(user))? {
            Client::Kafka(producer) => Ok(producer),
            _ => Err(self.mismatch(name, module, "kafka")),
        }
    }

    /// The client of a `redis` connection, for `module` used by `user`.
    pub fn redis(
        &self,
        name: &ConnectionName,
        module: &'static str,
        user: Use<'_>,
    ) -> Result<RedisClient, PoolError> {
        match self.client(name, module, "redis", Some(user))? {
            Client::Redis(client) => Ok(client),
            _ => Err(self.mismatch(name, module, "redis")),
        }
    }

    /// The client of `http` connection `name`, for `module` used as `user` says.
    pub fn http(
        &self,
        name: &ConnectionName,
        module: &'static str,
        user: Use<'_>,
    ) -> Result<HttpClient, PoolError> {
        match self.client(name, module, "http", Some(user))? {
            Client::Http(client) => Ok(client),
            _ => Err(self.mismatch(name, module, "http")),
        }
    }

    /// The channel of `connect` connection `name`, for `module` used as `user` says.
    pub fn channel(
        &self,
        name: &ConnectionName,
        module: &'static str,
        user: Use<'_>,
    ) -> Result<ChannelClient, PoolError> {
        match self.client(name, module, "connect", Some(user))? {
            Client::Connect(client) => Ok(client),
            _ => Err(self.mismatch(name, module, "connect")),
        }
    }

    /// The queue of channel `name`, for the router's own use (a connector's link, the long
    /// poll, the retention sweep, a replay): no namespace's rules apply.
    pub fn queue(&self, name: &ConnectionName) -> Result<ChannelQueue, PoolError> {
        match self.client(name, "connect", "connect", None)? {
            Client::Connect(client) => Ok(client.queue),
            _ => Err(self.mismatch(name, "connect", "connect")),
        }
    }

    fn mismatch(
        &self,
        name: &ConnectionName,
        module: &'static str,
        expected: &'static str,
    ) -> PoolError {
        PoolError::Mismatch {
            name: name.clone(),
            module,
            expected,
            found: self.config(name).map_or("unknown", |c| c.kind()),
        }
    }

    /// Every connection with its type and whether its client is built (no secrets).
    pub fn describe(&self) -> Vec<serde_json::Value> {
        let mut all: Vec<serde_json::Value> = self
            .inner
            .slots
            .iter()
            .map(|slot| {
                serde_json::json!({
                    "name": slot.key().as_str(),
                    "type": slot.config.kind(),
                    "client": if slot.client.is_some() { "ready" } else { "not_started" },
                })
            })
            .collect();
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        all
    }

    /// Flushes every Kafka producer (shutdown), up to `grace` in all.
    pub async fn close(&self, grace: Duration) {
        let clients: Vec<Client> = self
            .inner
            .slots
            .iter_mut()
            .filter_map(|mut slot| slot.client.take())
            .collect();
        let flushes = clients.into_iter().filter_map(|client| match client {
            Client::Kafka(producer) => Some(producer.flush(grace)),
            Client::Redis(_) | Client::Http(_) | Client::Connect(_) => None,
        });
        futures_util::future::join_all(flushes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::connection::RedisConnection;

    fn redis(host: &str) -> Arc<Connection> {
        Arc::new(Connection::Redis(RedisConnection {
            host: Some(host.into()),
            port: None,
            db: None,
            username: None,
            password: None,
            tls: false,
            url: None,
            namespaces: None,
            target_prefix: None,
        }))
    }

    fn name(s: &str) -> ConnectionName {
        ConnectionName::parse(s).unwrap()
    }

    const ANYONE: Use<'static> = Use {
        namespace: "acme",
        target: None,
    };

    #[tokio::test]
    async fn a_client_is_handed_out_only_for_uses_its_rules_allow() {
        let pool = ConnectionPool::new(TaskTracker::new());
        let shared = |namespaces: Option<Vec<String>>, prefix: Option<&str>| {
            let Connection::Redis(mut r) = (*redis("a")).clone() else {
                unreachable!()
            };
            r.namespaces = namespaces;
            r.target_prefix = prefix.map(Into::into);
            Arc::new(Connection::Redis(r))
        };
        let good = |target| Use {
            namespace: "good",
            target: Some(target),
        };
        let evil = |target| Use {
            namespace: "evil",
            target: Some(target),
        };
        pool.upsert(name("r"), shared(Some(vec!["good".into()]), None));
        assert!(pool
            .redis(&name("r"), "redis_stream", good("orders"))
            .is_ok());
        // Refused with the client already built, too.
        let refused = pool
            .redis(&name("r"), "redis_stream", evil("orders"))
            .unwrap_err();
        assert!(
            matches!(&refused, PoolError::NotAllowed { reason, .. } if reason.contains("`evil` may not use")),
            "{refused}"
        );
        pool.upsert(name("r"), shared(None, Some("{namespace}-")));
        assert!(pool
            .redis(&name("r"), "redis_stream", evil("evil-orders"))
            .is_ok());
        let refused = pool
            .redis(&name("r"), "redis_stream", evil("good-orders"))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("starting with \"evil-\""), "{refused}");
        // Names that are not the webhook's own (dedup keys) meet the namespace rule only.
        assert!(pool
            .redis(
                &name("r"),
                "dedup",
                Use {
                    namespace: "evil",
                    target: None
                }
            )
            .is_ok());
    }

    #[tokio::test]
    async fn a_channels_store_is_the_routers_own_and_follows_its_connection() {
        use crate::config::connection::{ChannelStore, ConnectConnection};
        let pool = ConnectionPool::new(TaskTracker::new());
        let channel = |store: &str| {
            Arc::new(Connection::Connect(ConnectConnection {
                token_sha256: vec!["0".repeat(64)],
                retention_seconds: 60,
                max_bytes: 1 << 20,
                namespaces: None,
                store: Some(ChannelStore {
                    connection: store.into(),
                }),
            }))
        };
        pool.upsert(name("q"), redis("a"));
        pool.upsert(name("r"), redis("a"));
        // Not kept anywhere yet: a webhook may use `q`.
        assert!(pool.redis(&name("q"), "redis_stream", ANYONE).is_ok());
        pool.upsert(name("edge"), channel("q"));
        let refused = pool
            .redis(&name("q"), "redis_stream", ANYONE)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("keeps channels"), "{refused}");
        assert!(pool.redis(&name("r"), "redis_stream", ANYONE).is_ok());
        assert!(matches!(
            pool.queue(&name("edge")).unwrap(),
            ChannelQueue::Shared(_)
        ));
        // A store that is not a redis connection, or none at all.
        pool.upsert(name("edge"), channel("edge"));
        let odd = pool.queue(&name("edge")).unwrap_err().to_string();
        assert!(
            odd.contains(
                "its store: connection `edge` is of type connect; module `connect` needs redis"
            ),
            "{odd}"
        );
        pool.upsert(name("edge"), channel("gone"));
        let gone = pool.queue(&name("edge")).unwrap_err().to_string();
        assert!(gone.contains("`gone` does not exist"), "{gone}");
        // The channel moved: `q` is free again.
        assert!(pool.redis(&name("q"), "redis_stream", ANYONE).is_ok());
    }

    #[tokio::test]
    async fn the_same_config_keeps_the_client_and_a_new_one_retires_it() {
        let pool = ConnectionPool::new(TaskTracker::new());
        assert!(pool.upsert(name("r"), redis("a")));
        pool.redis(&name("r"), "redis_stream", ANYONE).unwrap();
        assert_eq!(pool.describe()[0]["client"], "ready");
        assert!(
            !pool.upsert(name("r"), redis("a")),
            "same value: nothing to do"
        );
        assert_eq!(pool.describe()[0]["client"], "ready");
        assert!(pool.upsert(name("r"), redis("b")));
        assert_eq!(pool.describe()[0]["client"], "not_started");
    }

    #[tokio::test]
    async fn missing_and_mismatched_connections_are_named() {
        let pool = ConnectionPool::new(TaskTracker::new());
        assert_eq!(
            pool.kafka(&name("r"), "kafka", ANYONE).unwrap_err(),
            PoolError::Missing { name: name("r") }
        );
        pool.upsert(name("r"), redis("a"));
        assert_eq!(
            pool.kafka(&name("r"), "kafka", ANYONE).unwrap_err(),
            PoolError::Mismatch {
                name: name("r"),
                module: "kafka",
                expected: "kafka",
                found: "redis"
            }
        );
    }

    #[tokio::test]
    async fn replace_all_removes_missing_and_counts_changes() {
        let pool = ConnectionPool::new(TaskTracker::new());
        pool.upsert(name("a"), redis("a"));
        pool.upsert(name("b"), redis("b"));
        let changes = pool.replace_all(HashMap::from([
            (name("b"), redis("b")),
            (name("c"), redis("c")),
        ]));
        assert_eq!(
            changes,
            PoolChanges {
                removed: 1,
                changed: 1
            }
        );
        assert!(pool.config(&name("a")).is_none());
        assert_eq!(pool.len(), 2);
    }
}
