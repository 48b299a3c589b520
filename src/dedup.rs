//! Deduplication: a provider's delivery id seen again within the webhook's window is answered
//! `200 {"status":"duplicate"}` and not delivered again.
//!
//! A key is recorded only once its request was delivered (or stored in the spool), so a failed
//! first attempt never blocks the sender's retry; while a request with a key is being delivered,
//! a concurrent copy waits for its outcome instead of being delivered too. The store is this
//! process's memory, bounded (`DEDUP_MAX_KEYS`): with several instances, each keeps its own
//! window (a copy that reaches another instance is delivered there). With `"store":
//! {"connection": "<redis>"}` the window is shared through Redis (`SET NX PX`); if Redis cannot
//! be reached, requests are delivered without deduplication rather than refused.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Deserialize;
use tokio::{sync::Notify, time::Instant};

use crate::{
    config::ConfigError,
    connections::ConnectionPool,
    keys::{ConnectionName, WebhookKey},
};

/// Default window: a day (providers retry for hours; GitHub's manual redelivery comes later).
pub const DEFAULT_TTL_SECS: u64 = 86_400;
/// Longest window accepted: a week.
pub const MAX_TTL_SECS: u64 = 7 * 86_400;
/// Longest delivery id kept as written; a longer one is replaced by a digest of all of it.
const MAX_KEY_BYTES: usize = 1024;

/// Where a request's delivery id is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The first of these headers present.
    Headers(Vec<String>),
    /// A JSON pointer into the body (`/id`).
    JsonPointer(String),
}

/// `dedup` as written: `true` (the preset's delivery id) or the key and window.
#[derive(Debug, Clone)]
pub enum RawDedup {
    Preset(bool),
    Explicit(RawDedupConfig),
}

/// Chosen by the JSON type, so that an object's own error (an unknown field, named) reaches the
/// operator instead of serde's "did not match any variant".
impl<'de> Deserialize<'de> for RawDedup {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Choose;
        impl<'de> serde::de::Visitor<'de> for Choose {
            type Value = RawDedup;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or an object with `key`, `ttl_seconds` and `store`")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<RawDedup, E> {
                Ok(RawDedup::Preset(value))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawDedup, A::Error> {
                RawDedupConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawDedup::Explicit)
            }
        }
        deserializer.deserialize_any(Choose)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedupConfig {
    #[serde(default)]
    pub key: Option<RawKey>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// `{"connection": "<redis connection>"}`: a window shared by every instance.
    #[serde(default)]
    pub store: Option<RawStore>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub connection: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawKey {
    Header(String),
    JsonPointer(String),
}

/// A webhook's deduplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    pub key: KeySource,
    pub ttl: Duration,
    /// The Redis connection of a shared window; `None`: this process's memory.
    pub store: Option<ConnectionName>,
}

impl RawDedup {
    /// `preset_key`: the delivery id of the webhook's `hmac` preset, if it has one.
    pub fn compile(self, preset_key: Option<KeySource>) -> Result<Option<Dedup>, ConfigError> {
        let (key, ttl, store) = match self {
            RawDedup::Preset(false) => return Ok(None),
            RawDedup::Preset(true) => (None, None, None),
            RawDedup::Explicit(config) => (config.key, config.ttl_seconds, config.store),
        };
        let store = store
            .map(|s| {
                ConnectionName::parse(&s.connection)
                    .map_err(|e| ConfigError::Invalid(format!("`dedup.store.connection`: {e}")))
            })
            .transpose()?;
        let key = match key {
            Some(RawKey::Header(name)) if !name.trim().is_empty() => {
                KeySource::Headers(vec![name.trim().to_ascii_lowercase()])
            }
            Some(RawKey::JsonPointer(pointer)) if pointer.starts_with('/') => {
                KeySource::JsonPointer(pointer)
            }
            Some(_) => {
                return Err(ConfigError::Invalid(
                    "`dedup.key` is {\"header\": \"<name>\"} or {\"json_pointer\": \"/...\"}"
                        .into(),
                ))
            }
            None => preset_key.ok_or_else(|| {
                ConfigError::Invalid(
                    "`dedup` without a `key` needs an `hmac` preset whose provider sends a \
                     delivery id (github, stripe, shopify, slack, standard_webhooks, twitch, twilio, \
                     pagerduty, intercom, trello, linear, mailgun)"
                        .into(),
                )
            })?,
        };
        let ttl = ttl.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(ConfigError::Invalid(format!(
                "`dedup.ttl_seconds` is {ttl}; it must be between 1 and {MAX_TTL_SECS}"
            )));
        }
        Ok(Some(Dedup {
            key,
            ttl: Duration::from_secs(ttl),
            store,
        }))
    }
}

impl Dedup {
    /// The request's delivery id, if it carries one (a request without one is not deduplicated).
    pub fn key_of<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let value = match &self.key {
            KeySource::Headers(names) => names.iter().find_map(|n| header(n))?.as_bytes().to_vec(),
            KeySource::JsonPointer(pointer) => {
                let value: serde_json::Value = serde_json::from_slice(body).ok()?;
                match value.pointer(pointer)? {
                    serde_json::Value::String(s) => s.as_bytes().to_vec(),
                    serde_json::Value::Null => return None,
                    other => other.to_string().into_bytes(),
                }
            }
        };
        if value.is_empty() {
            return None;
        }
        if value.len() > MAX_KEY_BYTES {
            // A digest of the whole id: two long ids that share a prefix stay two ids.
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(&value);
            return Some(format!("sha256:{}", hex::encode(digest)).into_bytes());
        }
        Some(value)
    }
}

/// A key in the store: the webhook and a digest of its delivery id (fixed size whatever the
/// sender wrote).
type StoreKey = [u8; 32];

fn store_key(webhook: &WebhookKey, id: &[u8]) -> StoreKey {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(webhook.namespace.as_str().as_bytes());
    hash.update([0]);
    hash.update(webhook.id.as_str().as_bytes());
    hash.update([0]);
    hash.update(id);
    hash.finalize().into()
}

enum Slot {
    /// Being delivered; copies wait on this.
    InFlight(Arc<Notify>),
    /// Delivered; a copy before this instant is a duplicate.
    Done(Instant),
}

#[derive(Default)]
struct Inner {
    slots: HashMap<StoreKey, Slot>,
    /// Recorded keys in the order they were recorded, with their expiry (for pruning).
    order: VecDeque<(Instant, StoreKey)>,
}

/// The process's deduplication store, bounded to `max_keys` recorded keys (the oldest go first
/// when it is full: the window then shortens rather than memory growing).
pub struct DedupStore {
    inner: Mutex<Inner>,
    max_keys: usize,
}

/// What a request's key found.
pub enum Claim {
    /// Seen and delivered within the window.
    Duplicate,
    /// This request delivers; record the outcome with [`Claimed::delivered`] (dropping it
    /// unrecorded lets copies through).
    Claimed(Claimed),
    /// A copy is still being delivered after the wait: the sender should retry.
    Busy,
}

/// A key this request is delivering.
pub enum Claimed {
    Memory(MemoryClaim),
    Redis(RedisClaim),
    /// The shared store could not be reached: delivered without deduplication.
    Unchecked,
}

impl Claimed {
    /// The request was delivered (or stored): copies within the window are duplicates.
    pub async fn delivered(self) {
        match self {
            Claimed::Memory(claim) => claim.delivered(),
            Claimed::Redis(claim) => claim.delivered().await,
            Claimed::Unchecked => {}
        }
    }
}

/// Claims `id` for a delivery to `webhook` in the store `dedup` names, waiting up to `wait` for
/// a copy in flight.
pub async fn claim(
    memory: &Arc<DedupStore>,
    pool: &ConnectionPool,
    webhook: &WebhookKey,
    dedup: &Dedup,
    id: &[u8],
    wait: Duration,
) -> Claim {
    match &dedup.store {
        None => memory.claim(webhook, id, dedup.ttl, wait).await,
        Some(connection) => claim_in_redis(pool, connection, webhook, dedup.ttl, id, wait).await,
    }
}

/// How often a copy polls Redis while the first is being delivered.
const POLL: Duration = Duration::from_millis(50);
/// A claim outlives the wait by this much, so an instance that died while delivering does not
/// hold the key for long.
const CLAIM_MARGIN: Duration = Duration::from_secs(10);

async fn claim_in_redis(
    pool: &ConnectionPool,
    connection: &ConnectionName,
    webhook: &WebhookKey,
    ttl: Duration,
    id: &[u8],
    wait: Duration,
) -> Claim {
    let unchecked = |error: &dyn std::fmt::Display| {
        tracing::warn!(webhook = %webhook, %error, "Deduplication store unreachable; delivering without it.");
        Claim::Claimed(Claimed::Unchecked)
    };
    let user = crate::connections::Use {
        namespace: webhook.namespace.as_str(),
        target: None,
    };
    let client = match pool.redis(connection, "dedup", user) {
        Ok(client) => client,
        Err(error) => return unchecked(&error),
    };
    let key = format!("switchyard:dedup:{}", hex::encode(store_key(webhook, id)));
    let token = format!("inflight:{}", uuid::Uuid::new_v4().simple());
    let deadline = Instant::now() + wait;
    loop {
        match client.set_new(&key, &token, wait + CLAIM_MARGIN).await {
            Ok(true) => {
                return Claim::Claimed(Claimed::Redis(RedisClaim {
                    client,
                    key,
                    token,
                    ttl,
                    recorded: false,
                }))
            }
            Ok(false) => {}
            Err(error) => return unchecked(&error),
        }
        match client.get(&key).await {
            Ok(Some(value)) if value == "done" => return Claim::Duplicate,
            // Gone meanwhile (the first attempt failed): claim again at once.
            Ok(None) => continue,
            Ok(Some(_)) => {}
            Err(error) => return unchecked(&error),
        }
        if Instant::now() + POLL > deadline {
            return Claim::Busy;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A key this request claimed in Redis.
pub struct RedisClaim {
    client: crate::connections::redis::RedisClient,
    key: String,
    token: String,
    ttl: Duration,
    recorded: bool,
}

impl RedisClaim {
    async fn delivered(mut self) {
        self.recorded = true;
        if let Err(error) = self.client.set_for(&self.key, "done", self.ttl).await {
            tracing::warn!(%error, "Could not record a delivery id in the deduplication store.");
        }
    }
}

impl Drop for RedisClaim {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        // Not delivered: free the key for the sender's retry (only while it is still ours).
        let (client, key, token) = (self.client.clone(), self.key.clone(), self.token.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.delete_if(&key, &token).await;
            });
        }
    }
}

/// A key this request claimed in this process's memory.
pub struct MemoryClaim {
    store: Arc<DedupStore>,
    key: StoreKey,
    ttl: Duration,
    notify: Arc<Notify>,
    recorded: bool,
}

impl MemoryClaim {
    fn delivered(mut self) {
        self.recorded = true;
        self.store.record(self.key, self.ttl);
        self.notify.notify_waiters();
    }
}

impl Drop for MemoryClaim {
    fn drop(&mut self) {
        if !self.recorded {
            if let Ok(mut inner) = self.store.inner.lock() {
                if matches!(inner.slots.get(&self.key), Some(Slot::InFlight(_))) {
                    inner.slots.remove(&self.key);
                }
            }
            self.notify.notify_waiters();
        }
    }
}

impl DedupStore {
    pub fn new(max_keys: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            max_keys: max_keys.max(1),
        })
    }

    /// Claims `id` of `webhook` for delivery, waiting up to `wait` for a copy in flight.
    pub async fn claim(
        self: &Arc<Self>,
        webhook: &WebhookKey,
        id: &[u8],
        ttl: Duration,
        wait: Duration,
    ) -> Claim {
        let key = store_key(webhook, id);
        let deadline = Instant::now() + wait;
        loop {
            let waiting = {
                let Ok(mut inner) = self.inner.lock() else {
                    return Claim::Busy;
                };
                let now = Instant::now();
                match inner.slots.get(&key) {
                    Some(Slot::Done(until)) if *until > now => return Claim::Duplicate,
                    Some(Slot::InFlight(notify)) => {
                        let notify = Arc::clone(notify);
                        // Registered before the lock is released: no wake-up is missed.
                        let mut notified = Box::pin(notify.notified_owned());
                        notified.as_mut().enable();
                        notified
                    }
                    _ => {
                        let notify = Arc::new(Notify::new());
                        inner.slots.insert(key, Slot::InFlight(Arc::clone(&notify)));
                        return Claim::Claimed(Claimed::Memory(MemoryClaim {
                            store: Arc::clone(self),
                            key,
                            ttl,
                            notify,
                            recorded: false,
                        }));
                    }
                }
            };
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                return Claim::Busy;
            }
        }
    }

    fn record(&self, key: StoreKey, ttl: Duration) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        let until = now + ttl;
        inner.slots.insert(key, Slot::Done(until));
        inner.order.push_back((until, key));
        // Expired keys go first, then the oldest while over the bound.
        while let Some(&(expiry, oldest)) = inner.order.front() {
            let over = inner.order.len() > self.max_keys;
            if expiry > now && !over {
                break;
            }
            inner.order.pop_front();
            if matches!(inner.slots.get(&oldest), Some(Slot::Done(u)) if *u <= now || over) {
                inner.slots.remove(&oldest);
            }
        }
    }

    /// Keys recorded now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.order.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Namespace, WebhookId};

    fn webhook() -> WebhookKey {
        WebhookKey::new(
            Namespace::parse("a").unwrap(),
            WebhookId::parse("w").unwrap(),
        )
    }

    const TTL: Duration = Duration::from_secs(60);
    const WAIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_key_counts_once_delivered_and_a_failed_attempt_lets_the_retry_through() {
        let store = DedupStore::new(100);
        let Claim::Claimed(first) = store.claim(&webhook(), b"id-1", TTL, WAIT).await else {
            panic!("first claim");
        };
        drop(first); // failed: not recorded
        let Claim::Claimed(retry) = store.claim(&webhook(), b"id-1", TTL, WAIT).await else {
            panic!("the retry is not blocked");
        };
        retry.delivered().await;
        assert!(matches!(
            store.claim(&webhook(), b"id-1", TTL, WAIT).await,
            Claim::Duplicate
        ));
        assert!(matches!(
            store.claim(&webhook(), b"id-2", TTL, WAIT).await,
            Claim::Claimed(_)
        ));
    }

    #[tokio::test]
    async fn a_concurrent_copy_waits_for_the_first_and_is_then_a_duplicate() {
        let store = DedupStore::new(100);
        let Claim::Claimed(first) = store.claim(&webhook(), b"id", TTL, WAIT).await else {
            panic!("first claim");
        };
        let copy = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                matches!(
                    store
                        .claim(&webhook(), b"id", TTL, Duration::from_secs(5))
                        .await,
                    Claim::Duplicate
                )
            })
        };
        tokio::task::yield_now().await;
        first.delivered().await;
        assert!(copy.await.unwrap());
        // Still in flight after the wait: busy.
        let Claim::Claimed(_held) = store.claim(&webhook(), b"other", TTL, WAIT).await else {
            panic!("claim");
        };
        assert!(matches!(
            store.claim(&webhook(), b"other", TTL, WAIT).await,
            Claim::Busy
        ));
    }

    #[tokio::test]
    async fn the_store_stays_within_its_bound() {
        let store = DedupStore::new(3);
        for i in 0..10u8 {
            let Claim::Claimed(c) = store.claim(&webhook(), &[i], TTL, WAIT).await else {
                panic!("claim {i}");
            };
            c.delivered().await;
        }
        assert_eq!(store.len(), 3);
        assert!(matches!(
            store.claim(&webhook(), &[9], TTL, WAIT).await,
            Claim::Duplicate
        ));
        assert!(matches!(
            store.claim(&webhook(), &[0], TTL, WAIT).await,
            Claim::Claimed(_)
        ));
    }

    #[test]
    fn keys_come_from_headers_or_the_body() {
        let by_header = Dedup {
            key: KeySource::Headers(vec!["webhook-id".into(), "svix-id".into()]),
            ttl: TTL,
            store: None,
        };
        let headers = |n: &str| (n == "svix-id").then_some("msg_1");
        assert_eq!(by_header.key_of(headers, b""), Some(b"msg_1".to_vec()));
        let by_body = Dedup {
            key: KeySource::JsonPointer("/id".into()),
            ttl: TTL,
            store: None,
        };
        let none = |_: &str| None;
        assert_eq!(
            by_body.key_of(none, br#"{"id":"evt_1"}"#),
            Some(b"evt_1".to_vec())
        );
        assert_eq!(by_body.key_of(none, br#"{"id":7}"#), Some(b"7".to_vec()));
        assert_eq!(by_body.key_of(none, br#"{"other":1}"#), None);
        assert_eq!(by_body.key_of(none, b"not json"), None);
        // Two long ids that differ only after the first KiB stay different, and short.
        let long = |tail: &str| format!(r#"{{"id":"{}{tail}"}}"#, "x".repeat(2000));
        let (a, b) = (
            by_body.key_of(none, long("a").as_bytes()).unwrap(),
            by_body.key_of(none, long("b").as_bytes()).unwrap(),
        );
        assert_ne!(a, b);
        assert!(a.starts_with(b"sha256:") && a.len() == 71, "{a:?}");
        assert_eq!(a, by_body.key_of(none, long("a").as_bytes()).unwrap());
    }
}
