//! How config *arrives*: each provider is a task that feeds webhooks to the [`ConfigCache`] and
//! connections to the [`ConnectionPool`].
//!
//! Both backends share [`Applier`], so an entry means the same thing whichever way it came.

pub mod backoff;
pub mod etcd;
pub mod file;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod strict;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;
use tokio::sync::watch;

use crate::{
    cache::{ConfigCache, Snapshot},
    config::{env_subst, seal::Keyring, ConfigError, Connection, Secrets},
    connections::ConnectionPool,
    dispatch::Route,
    keys::{ConfigKey, ConnectionName, WebhookKey},
    settings::{Backend, Settings},
    shutdown::Shutdown,
    webhook::Webhook,
};

/// The etcd link as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdState {
    /// Not connected yet since start.
    Connecting,
    /// Watching.
    Connected,
    /// Lost after having been connected; serving from cache and reconnecting.
    Disconnected,
}

impl EtcdState {
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdState::Connecting => "connecting",
            EtcdState::Connected => "healthy",
            EtcdState::Disconnected => "disconnected",
        }
    }
}

/// What the provider tells the rest of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    pub backend: Backend,
    /// The first full load has been applied: the instance may serve.
    pub loaded: bool,
    /// `None` for the file backend.
    pub etcd: Option<EtcdState>,
    /// The provider task ended (a panic, a bug) and is being restarted: config changes wait
    /// until it has loaded again; the cache keeps serving meanwhile.
    pub restarting: bool,
}

/// Counters and per-key state kept by providers (read by `/metrics`, `/status` and tests).
#[derive(Debug, Default)]
pub struct ProviderStats {
    /// Keys currently skipped as invalid, with the reason (no values, so no secrets).
    pub skipped: DashMap<String, String>,
    /// Unix milliseconds of the last applied change or full load.
    pub applied_at_ms: AtomicU64,
    /// Unix milliseconds of the last watch event or progress notification (etcd backend).
    pub heard_at_ms: AtomicU64,
    /// How long the last full load took, in microseconds (read, parse, build, swap).
    pub last_full_load_us: AtomicU64,
    pub full_loads: AtomicU64,
    pub events_applied: AtomicU64,
    pub invalid_entries: AtomicU64,
    pub reconnects: AtomicU64,
    /// Times the provider task ended unexpectedly and was started again.
    pub provider_restarts: AtomicU64,
    /// The etcd member in use and the newest revision seen (etcd backend).
    pub etcd: etcd::members::LinkState,
    /// Whole loads refused (a file that does not parse); the last good config kept serving.
    pub rejected_loads: AtomicU64,
    /// Config files of the file backend that do not exist (read as empty).
    pub missing_files: std::sync::Mutex<Vec<String>>,
}

impl ProviderStats {
    /// The config files found missing at the last load (file backend).
    pub fn missing_files(&self) -> Vec<String> {
        self.missing_files
            .lock()
            .map(|files| files.clone())
            .unwrap_or_default()
    }
}

impl ProviderStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn stamp(at: &AtomicU64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        at.store(now, Ordering::Relaxed);
    }

    /// Records that etcd was heard from (an event or a progress notification).
    pub fn heard(&self) {
        Self::stamp(&self.heard_at_ms);
    }
}

/// A running provider's outputs.
#[derive(Clone)]
pub struct ProviderHandle {
    pub status: watch::Receiver<ProviderStatus>,
    pub stats: Arc<ProviderStats>,
}

/// Starts the provider chosen in `settings` as a tracked task.
pub fn spawn(
    settings: &Settings,
    cache: ConfigCache,
    pool: ConnectionPool,
    keys: Arc<Keyring>,
    shutdown: &Shutdown,
) -> ProviderHandle {
    let backend = settings.config_backend;
    let (tx, rx) = watch::channel(ProviderStatus {
        backend,
        loaded: false,
        etcd: (backend == Backend::Etcd).then_some(EtcdState::Connecting),
        restarting: false,
    });
    let stats = Arc::new(ProviderStats::default());
    let applier = Applier {
        cache,
        pool,
        stats: Arc::clone(&stats),
        env: Arc::new(env_subst::process_env),
        keys,
        rules: Rules::from_settings(settings),
    };
    let token = shutdown.token.child_token();
    // What starts the backend's task, once and again after every unexpected end.
    type Run = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let start: Box<dyn Fn() -> Run + Send> = {
        let (tx, token) = (tx.clone(), token.clone());
        match backend {
            Backend::File => {
                let files = file::Files::from_settings(settings);
                Box::new(move || {
                    Box::pin(file::run(
                        files.clone(),
                        applier.clone(),
                        tx.clone(),
                        token.clone(),
                    ))
                })
            }
            Backend::Etcd => {
                let source = etcd::EtcdSource::from_settings(settings);
                Box::new(move || {
                    Box::pin(etcd::run(
                        source.clone(),
                        applier.clone(),
                        tx.clone(),
                        token.clone(),
                    ))
                })
            }
        }
    };
    let tasks = shutdown.tasks.clone();
    shutdown
        .tasks
        .spawn(supervise(start, tasks, tx, Arc::clone(&stats), token));
    ProviderHandle { status: rx, stats }
}

/// Runs the provider task that `start` makes, and starts a new one whenever it ends before
/// `token` is cancelled (a panic, or a bug that returns): config changes must never stop for
/// good while the process keeps serving. Meanwhile `/health` shows the provider restarting; the
/// new task clears that once it has loaded (a provider that restarts finds the cache loaded, so
/// it reloads in place and never empties it). Restarts wait out the reconnect backoff.
pub async fn supervise<F, Fut>(
    start: F,
    tasks: tokio_util::task::TaskTracker,
    status: watch::Sender<ProviderStatus>,
    stats: Arc<ProviderStats>,
    token: tokio_util::sync::CancellationToken,
) where
    F: Fn() -> Fut + Send,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = backoff::ReconnectBackoff::new();
    loop {
        let ended = tasks.spawn(start()).await;
        if token.is_cancelled() {
            return;
        }
        let reason = match ended {
            Ok(()) => "it returned".to_owned(),
            Err(error) if error.is_panic() => format!(
                "it panicked: {}",
                crate::config::panic_text(&*error.into_panic())
            ),
            Err(error) => error.to_string(),
        };
        ProviderStats::bump(&stats.provider_restarts);
        status.send_if_modified(|s| !std::mem::replace(&mut s.restarting, true));
        let delay = backoff.next().unwrap_or(backoff::MAX_DELAY);
        tracing::error!(
            %reason,
            restart_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "The config provider stopped; restarting it. Config changes wait until it is back; \
             the last applied config keeps serving."
        );
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The `{$VAR}` lookup, shared across threads.
pub type SharedEnv = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What this process accepts beyond an entry's own validity (from its settings).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `MAX_BODY_BYTES_CEILING`: the largest `max_body_bytes` a webhook may set.
    pub max_body_bytes_ceiling: u64,
    /// `MAX_CHAIN_LENGTH`: the most destinations one webhook may have.
    pub max_chain_length: usize,
}

impl Rules {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_body_bytes_ceiling: settings.max_body_bytes_ceiling,
            max_chain_length: settings.max_chain_length,
        }
    }
}

/// A webhook entry exactly as the server accepts it: valid on its own and within `rules`.
/// The one parser shared by the providers and `switchyard check`.
pub fn parse_webhook(
    value: &[u8],
    secrets: &Secrets<'_>,
    rules: Rules,
) -> Result<Webhook, ConfigError> {
    crate::config::contained(|| parse_webhook_unguarded(value, secrets, rules))
}

/// [`parse_webhook`] without the panic guard: what the fuzz test drives, so that a panic is
/// found rather than contained.
fn parse_webhook_unguarded(
    value: &[u8],
    secrets: &Secrets<'_>,
    rules: Rules,
) -> Result<Webhook, ConfigError> {
    let webhook = Webhook::from_bytes(value, secrets)?;
    if webhook.destinations.len() > rules.max_chain_length {
        return Err(ConfigError::Invalid(format!(
            "`chain` has {} destinations; this instance's MAX_CHAIN_LENGTH is {}",
            webhook.destinations.len(),
            rules.max_chain_length
        )));
    }
    match webhook.checks.max_body_bytes {
        Some(max) if max > rules.max_body_bytes_ceiling => Err(ConfigError::Invalid(format!(
            "`max_body_bytes` is {max}, above this instance's MAX_BODY_BYTES_CEILING ({})",
            rules.max_body_bytes_ceiling
        ))),
        _ => Ok(webhook),
    }
}

/// Whether a valid webhook of `namespace` fits the connections it names that exist: of the
/// type its modules need, and open to its namespace and targets (`namespaces`,
/// `target_prefix`), and none of them keeping channels (`keeps_channels`: the router's own
/// connections). A connection that does not exist yet is no refusal here (it may arrive
/// later; requests meanwhile get 503 `connection_missing`). The server applies this when an
/// entry arrives, `switchyard check` to the whole config, and the pool again on every delivery.
pub fn fits_connections(
    webhook: &Webhook,
    namespace: &str,
    lookup: impl Fn(&ConnectionName) -> Option<Arc<Connection>>,
    keeps_channels: impl Fn(&ConnectionName) -> bool,
) -> Result<(), ConfigError> {
    for (index, destination) in webhook.destinations.iter().enumerate() {
        let (Some(name), Some(expected)) =
            (destination.connection(), destination.connection_kind())
        else {
            continue;
        };
        let at = if webhook.destinations.len() > 1 {
            format!("chain[{index}]: ")
        } else {
            String::new()
        };
        if keeps_channels(name) {
            return Err(ConfigError::Invalid(format!(
                "{at}connection `{name}` keeps channels (a `connect` connection's `store`); no \
                 webhook may write to it"
            )));
        }
        let Some(connection) = lookup(name) else {
            continue;
        };
        if connection.kind() != expected {
            return Err(ConfigError::Invalid(format!(
                "{at}connection `{name}` is of type {}; module `{}` needs {expected}",
                connection.kind(),
                destination.name()
            )));
        }
        for target in destination.targets() {
            connection
                .access()
                .permits(namespace, target)
                .map_err(|reason| {
                    ConfigError::Invalid(format!("{at}connection `{name}`: {reason}"))
                })?;
        }
    }
    if let Some(name) = webhook.dedup.as_ref().and_then(|d| d.store.as_ref()) {
        if let Some(connection) = lookup(name) {
            connection
                .access()
                .permits(namespace, None)
                .map_err(|reason| {
                    ConfigError::Invalid(format!("`dedup.store` connection `{name}`: {reason}"))
                })?;
        }
    }
    Ok(())
}

/// A connection entry exactly as the server accepts it, including what only the client library
/// can tell (librdkafka's properties). No I/O.
pub fn parse_connection(value: &[u8], secrets: &Secrets<'_>) -> Result<Connection, ConfigError> {
    crate::config::contained(|| parse_connection_unguarded(value, secrets))
}

/// [`parse_connection`] without the panic guard (the fuzz test's entry point).
fn parse_connection_unguarded(
    value: &[u8],
    secrets: &Secrets<'_>,
) -> Result<Connection, ConfigError> {
    // Validated inside `parse_entry`, so a client library's message that quotes a value is
    // scrubbed of substituted values like every other error.
    crate::config::parse_entry(
        value,
        secrets,
        crate::config::connection::SUBSTITUTED,
        |v| {
            let connection = Connection::from_value(v)?;
            crate::connections::validate(&connection).map_err(ConfigError::Invalid)?;
            Ok(connection)
        },
    )
}

/// Turns raw entries into cache and pool changes, logging and skipping invalid ones.
#[derive(Clone)]
pub struct Applier {
    pub cache: ConfigCache,
    pub pool: ConnectionPool,
    pub stats: Arc<ProviderStats>,
    pub env: SharedEnv,
    /// `SEAL_KEYS_FILE`'s keys, which open sealed credentials.
    pub keys: Arc<Keyring>,
    pub rules: Rules,
}

/// Bound on a snapshot's size hint (the hint is etcd's count of the keys to read).
const MAX_EXPECTED: usize = 10_000_000;

/// A valid webhook entry, before its check against the connections it names and its build.
enum ParsedWebhook {
    /// The live route: the entry's bytes are those it was built from.
    Live(Arc<Route>),
    /// A new version, and the digest of the bytes it came from.
    New(Box<Webhook>, [u8; 32]),
}

impl ParsedWebhook {
    fn webhook(&self) -> &Webhook {
        match self {
            Self::Live(route) => &route.webhook,
            Self::New(webhook, _) => webhook,
        }
    }
}

impl Applier {
    /// How the credentials of `entry` are resolved.
    fn secrets<'a>(&'a self, entry: &'a ConfigKey) -> Secrets<'a> {
        Secrets::new(&*self.env, &self.keys, entry)
    }

    /// Parses one webhook entry. `keep_live`: an entry whose bytes equal its live route's keeps
    /// that route (and its rate-limit budget); the first load has no live routes to look up.
    fn parse_webhook_entry(
        &self,
        key: &WebhookKey,
        value: &[u8],
        keep_live: bool,
    ) -> Result<ParsedWebhook, ConfigError> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(value).into();
        if let Some(live) = keep_live.then(|| self.cache.webhook(key)).flatten() {
            if live.source == Some(digest) {
                return Ok(ParsedWebhook::Live(live));
            }
        }
        let entry = ConfigKey::Webhook(key.clone());
        let webhook = parse_webhook(value, &self.secrets(&entry), self.rules)?;
        Ok(ParsedWebhook::New(Box::new(webhook), digest))
    }

    /// Checks a parsed webhook against the connections `lookup` finds (and those that keep
    /// channels), then builds its route.
    fn finish(
        &self,
        key: &WebhookKey,
        parsed: ParsedWebhook,
        lookup: impl Fn(&ConnectionName) -> Option<Arc<Connection>>,
        keeps_channels: impl Fn(&ConnectionName) -> bool,
    ) -> Result<Arc<Route>, ConfigError> {
        fits_connections(
            parsed.webhook(),
            key.namespace.as_str(),
            lookup,
            keeps_channels,
        )?;
        match parsed {
            ParsedWebhook::Live(live) => Ok(live),
            ParsedWebhook::New(webhook, digest) => crate::config::contained(|| {
                Ok(Route::build(key.clone(), *webhook, &self.pool).from_source(digest))
            })
            .map(Arc::new),
        }
    }

    fn skipped(&self, source: &str, reason: &dyn std::fmt::Display, kept: bool) {
        ProviderStats::bump(&self.stats.invalid_entries);
        self.stats
            .skipped
            .insert(source.to_owned(), reason.to_string());
        tracing::warn!(
            key = source,
            %reason,
            last_good_kept = kept,
            "Skipping invalid config entry."
        );
    }

    /// Applies one put; an invalid value leaves the last good one in place.
    pub fn put(&self, key: &ConfigKey, source: &str, value: &[u8]) {
        ProviderStats::bump(&self.stats.events_applied);
        ProviderStats::stamp(&self.stats.applied_at_ms);
        let applied = match key {
            ConfigKey::Webhook(key) => self
                .parse_webhook_entry(key, value, true)
                .and_then(|parsed| {
                    self.finish(
                        key,
                        parsed,
                        |name| self.pool.config(name),
                        |name| self.pool.keeps_channels(name),
                    )
                })
                .map(|route| {
                    tracing::debug!(key = source, "Webhook updated.");
                    self.cache.upsert_webhook(route);
                }),
            ConfigKey::Connection(name) => {
                parse_connection(value, &self.secrets(key)).map(|connection| {
                    let changed = self.pool.upsert(name.clone(), Arc::new(connection));
                    tracing::debug!(key = source, changed, "Connection updated.");
                })
            }
        };
        match applied {
            Ok(()) => {
                self.stats.skipped.remove(source);
            }
            Err(reason) => {
                if let ConfigKey::Webhook(key) = key {
                    self.cache.mark_invalid(key.clone());
                }
                self.skipped(source, &reason, self.has(key));
            }
        }
    }

    /// Applies one delete.
    pub fn delete(&self, key: &ConfigKey, source: &str) {
        ProviderStats::bump(&self.stats.events_applied);
        ProviderStats::stamp(&self.stats.applied_at_ms);
        self.stats.skipped.remove(source);
        let removed = match key {
            ConfigKey::Webhook(key) => self.cache.remove_webhook(key),
            ConfigKey::Connection(name) => self.pool.remove(name),
        };
        tracing::debug!(key = source, removed, "Entry deleted.");
    }

    fn has(&self, key: &ConfigKey) -> bool {
        match key {
            ConfigKey::Webhook(key) => self.cache.webhook(key).is_some(),
            ConfigKey::Connection(name) => self.pool.config(name).is_some(),
        }
    }

    /// Starts a full load; entries are added one by one, then [`SnapshotBuilder::apply`] swaps.
    pub fn snapshot(&self) -> SnapshotBuilder<'_> {
        SnapshotBuilder {
            applier: self,
            snapshot: Snapshot::default(),
            connections: HashMap::new(),
            stores: std::collections::HashSet::new(),
            skipped: Vec::new(),
            direct: None,
            deferred: Vec::new(),
        }
    }

    /// The first load's builder: it writes webhooks straight into the cache, since nothing is
    /// served before the first load is applied (every request is `503 not_ready` until then).
    /// That saves a second table and a second pass at 250,000 webhooks. The cache is emptied
    /// first: a failed earlier attempt may have left part of a load in it.
    pub fn first_snapshot(&self) -> SnapshotBuilder<'_> {
        self.cache.replace_all(Snapshot::default());
        SnapshotBuilder {
            direct: Some(0),
            ..self.snapshot()
        }
    }
}

/// Collects a full configuration; invalid entries keep their last good value.
pub struct SnapshotBuilder<'a> {
    applier: &'a Applier,
    snapshot: Snapshot,
    connections: HashMap<ConnectionName, Arc<Connection>>,
    /// The connections this load's channels are kept in.
    stores: std::collections::HashSet<String>,
    /// Keys found invalid during this load; they replace the skipped set when it is applied.
    skipped: Vec<(String, String)>,
    /// First load: webhooks go straight into the cache; how many so far.
    direct: Option<usize>,
    /// Webhooks naming a connection this load has not read yet (keys arrive in order, and
    /// `global/` sorts between namespaces): checked against it once every entry is read.
    deferred: Vec<(WebhookKey, String, ParsedWebhook)>,
}

impl SnapshotBuilder<'_> {
    pub fn add(&mut self, key: &ConfigKey, source: &str, value: &[u8]) {
        match key {
            ConfigKey::Webhook(webhook_key) => {
                let keep_live = self.direct.is_none();
                match self
                    .applier
                    .parse_webhook_entry(webhook_key, value, keep_live)
                {
                    Ok(parsed) => {
                        let w = parsed.webhook();
                        let unread = w
                            .destinations
                            .iter()
                            .filter_map(|d| d.connection())
                            .chain(w.dedup.as_ref().and_then(|d| d.store.as_ref()))
                            .any(|name| !self.connections.contains_key(name));
                        if unread {
                            self.deferred
                                .push((webhook_key.clone(), source.to_owned(), parsed));
                        } else {
                            self.finish(webhook_key, source, parsed);
                        }
                    }
                    Err(reason) => self.refuse(key, source, &reason),
                }
            }
            ConfigKey::Connection(name) => {
                match parse_connection(value, &self.applier.secrets(key)) {
                    Ok(connection) => {
                        if let Connection::Connect(c) = &connection {
                            self.stores
                                .extend(c.store.as_ref().map(|s| s.connection.clone()));
                        }
                        self.connections.insert(name.clone(), Arc::new(connection));
                    }
                    Err(reason) => self.refuse(key, source, &reason),
                }
            }
        }
    }

    /// Checks a webhook against this load's connections, then stores its route.
    fn finish(&mut self, key: &WebhookKey, source: &str, parsed: ParsedWebhook) {
        let (connections, stores) = (&self.connections, &self.stores);
        let route = self.applier.finish(
            key,
            parsed,
            |name| connections.get(name).map(Arc::clone),
            |name| stores.contains(name.as_str()),
        );
        match route {
            Ok(route) => match &mut self.direct {
                Some(stored) => {
                    *stored += 1;
                    self.applier.cache.store_loaded(route);
                }
                None => {
                    self.snapshot.webhooks.insert(route.key.clone(), route);
                }
            },
            Err(reason) => self.refuse(&ConfigKey::Webhook(key.clone()), source, &reason),
        }
    }

    /// Records an invalid entry; its last good value (if any) stays in this load.
    fn refuse(&mut self, key: &ConfigKey, source: &str, reason: &ConfigError) {
        let kept = match key {
            ConfigKey::Webhook(key) => {
                self.snapshot.invalid.insert(key.clone());
                self.applier.cache.webhook(key).map(|old| {
                    self.snapshot.webhooks.insert(key.clone(), old);
                })
            }
            ConfigKey::Connection(name) => self.applier.pool.config(name).map(|old| {
                self.connections.insert(name.clone(), old);
            }),
        };
        self.applier.skipped(source, reason, kept.is_some());
        self.skipped.push((source.to_owned(), reason.to_string()));
    }

    /// Makes the collected entries the whole configuration, at `revision`.
    pub fn apply(mut self, revision: i64) -> crate::cache::ReplaceStats {
        for (key, source, parsed) in std::mem::take(&mut self.deferred) {
            self.finish(&key, &source, parsed);
        }
        let applier = self.applier;
        let mut stats = match self.direct {
            Some(stored) => {
                applier.cache.replace_invalid(self.snapshot.invalid);
                crate::cache::ReplaceStats { removed: 0, stored }
            }
            None => applier.cache.replace_all(self.snapshot),
        };
        stats.removed += applier.pool.replace_all(self.connections).removed;
        applier.cache.set_revision(revision);
        ProviderStats::bump(&applier.stats.full_loads);
        ProviderStats::stamp(&applier.stats.applied_at_ms);
        applier.stats.skipped.clear();
        for (key, reason) in self.skipped {
            applier.stats.skipped.insert(key, reason);
        }
        stats
    }

    /// Makes room for about `entries` more (a hint: a 250,000-entry load then never regrows its
    /// table).
    pub fn expect(&mut self, entries: usize) {
        if self.direct.is_none() {
            self.snapshot.webhooks.reserve(entries.min(MAX_EXPECTED));
        }
    }

    /// Records a key that could not be read at all (bad name) as skipped in this load.
    pub fn skip(&mut self, source: &str, reason: &dyn std::fmt::Display) {
        self.applier.skipped(source, reason, false);
        self.skipped.push((source.to_owned(), reason.to_string()));
    }
}

/// Flags `loaded` and the etcd state, notifying only on change.
fn set_status(tx: &watch::Sender<ProviderStatus>, loaded: Option<bool>, etcd: Option<EtcdState>) {
    tx.send_if_modified(|status| {
        let before = status.clone();
        if let Some(loaded) = loaded {
            status.loaded = loaded;
            // A load applied: a restarted provider is back.
            status.restarting &= !loaded;
        }
        if etcd.is_some() {
            status.etcd = etcd;
        }
        *status != before
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Namespace, WebhookId, WebhookKey};

    fn applier() -> Applier {
        Applier {
            cache: ConfigCache::new(),
            pool: ConnectionPool::new(Default::default()),
            stats: Arc::default(),
            env: Arc::new(|_| None),
            keys: Arc::default(),
            rules: Rules {
                max_body_bytes_ceiling: 1 << 20,
                max_chain_length: 16,
            },
        }
    }

    fn key(id: &str) -> ConfigKey {
        ConfigKey::Webhook(WebhookKey::new(
            Namespace::parse("acme").unwrap(),
            WebhookId::parse(id).unwrap(),
        ))
    }

    fn webhook_key(id: &str) -> WebhookKey {
        match key(id) {
            ConfigKey::Webhook(k) => k,
            ConfigKey::Connection(_) => unreachable!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_task_that_ends_is_restarted_and_reported_until_it_loads_again() {
        let (tx, mut rx) = watch::channel(ProviderStatus {
            backend: Backend::File,
            loaded: true,
            etcd: None,
            restarting: false,
        });
        let stats = Arc::new(ProviderStats::default());
        let token = tokio_util::sync::CancellationToken::new();
        let runs = Arc::new(AtomicU64::new(0));
        let start = {
            let (tx, token, runs) = (tx.clone(), token.clone(), Arc::clone(&runs));
            move || {
                let (tx, token) = (tx.clone(), token.clone());
                let run = runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    match run {
                        0 => panic!("a bug in the provider"),
                        // A provider that returns is restarted too.
                        1 => {}
                        _ => {
                            set_status(&tx, Some(true), None);
                            token.cancelled().await;
                        }
                    }
                }
            }
        };
        let supervisor = tokio::spawn(supervise(
            start,
            tokio_util::task::TaskTracker::new(),
            tx,
            Arc::clone(&stats),
            token.clone(),
        ));
        rx.wait_for(|s| s.restarting).await.unwrap();
        rx.wait_for(|s| !s.restarting).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(ProviderStats::get(&stats.provider_restarts), 2);
        assert!(rx.borrow().loaded, "the cache stayed loaded throughout");
        token.cancel();
        supervisor.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "a stop is no reason to restart"
        );
    }

    #[test]
    fn the_first_load_replaces_what_a_failed_attempt_left() {
        let applier = applier();
        // A first attempt stopped half-way: its entries are in the cache, not applied.
        let mut failed = applier.first_snapshot();
        failed.add(&key("stale"), "stale", br#"{"module":"log"}"#);
        drop(failed);
        assert_eq!(applier.cache.webhook_count(), 1);

        let mut first = applier.first_snapshot();
        first.add(&key("a"), "a", br#"{"module":"log"}"#);
        first.add(&key("b"), "b", br#"{"module":"nope"}"#);
        let stats = first.apply(7);
        assert_eq!(stats.stored, 1);
        assert!(applier.cache.webhook(&webhook_key("a")).is_some());
        assert!(applier.cache.webhook(&webhook_key("stale")).is_none());
        assert!(applier.cache.is_invalid(&webhook_key("b")));
        assert_eq!(applier.cache.revision(), 7);
        assert_eq!(applier.stats.skipped.len(), 1);
    }
}
