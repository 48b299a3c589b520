//! `ConfigCache`: what is live. The request path reads it; providers write it.
//!
//! Lookups never wait on etcd: providers apply events here and the cache keeps serving whatever was
//! last applied, connected or not.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;

use crate::{
    dispatch::Route,
    keys::{KeyHasher, WebhookKey},
};

/// A shared handle to the live webhooks. Cloning is cheap. (Connections live in the
/// [`ConnectionPool`](crate::connections::ConnectionPool), their one owner.)
#[derive(Clone, Default)]
pub struct ConfigCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    webhooks: DashMap<WebhookKey, Arc<Route>, KeyHasher>,
    /// Keys that exist but hold an invalid entry with no last good value: answered 503
    /// `webhook_invalid` (retrying senders keep the event until the entry is fixed), not 404.
    invalid: DashMap<WebhookKey, (), KeyHasher>,
    revision: AtomicI64,
}

/// The complete set of webhooks, applied at once by [`ConfigCache::replace_all`].
#[derive(Default)]
pub struct Snapshot {
    pub webhooks: HashMap<WebhookKey, Arc<Route>, KeyHasher>,
    /// Keys present with an invalid entry.
    pub invalid: HashSet<WebhookKey, KeyHasher>,
}

/// What a [`ConfigCache::replace_all`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaceStats {
    pub removed: usize,
    pub stored: usize,
}

impl ConfigCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The route of a webhook; the guard is dropped before this returns.
    pub fn webhook(&self, key: &WebhookKey) -> Option<Arc<Route>> {
        self.inner
            .webhooks
            .get(key)
            .map(|entry| Arc::clone(entry.value()))
    }

    pub fn upsert_webhook(&self, route: Arc<Route>) {
        self.inner.invalid.remove(&route.key);
        self.inner.webhooks.insert(route.key.clone(), route);
    }

    /// Stores a route of a load that sets the invalid keys itself afterwards
    /// ([`ConfigCache::replace_invalid`]): nothing else to update per entry.
    pub fn store_loaded(&self, route: Arc<Route>) {
        self.inner.webhooks.insert(route.key.clone(), route);
    }

    /// Returns whether the key was present.
    pub fn remove_webhook(&self, key: &WebhookKey) -> bool {
        self.inner.invalid.remove(key);
        self.inner.webhooks.remove(key).is_some()
    }

    /// Records that `key` holds an invalid entry (its last good route, if any, keeps serving).
    pub fn mark_invalid(&self, key: WebhookKey) {
        self.inner.invalid.insert(key, ());
    }

    /// Whether `key` exists with an invalid entry.
    pub fn is_invalid(&self, key: &WebhookKey) -> bool {
        self.inner.invalid.contains_key(key)
    }

    /// Makes `snapshot` the whole set of webhooks: entries missing from it are removed.
    pub fn replace_all(&self, snapshot: Snapshot) -> ReplaceStats {
        let before = self.webhook_count();
        self.inner
            .webhooks
            .retain(|key, _| snapshot.webhooks.contains_key(key));
        let kept = self.webhook_count();
        let stored = snapshot.webhooks.len();
        for (key, route) in snapshot.webhooks {
            self.inner.webhooks.insert(key, route);
        }
        self.replace_invalid(snapshot.invalid);
        ReplaceStats {
            removed: before - kept,
            stored,
        }
    }

    /// Makes `invalid` the whole set of keys present with an invalid entry.
    pub fn replace_invalid(&self, invalid: HashSet<WebhookKey, KeyHasher>) {
        self.inner.invalid.clear();
        for key in invalid {
            self.inner.invalid.insert(key, ());
        }
    }

    pub fn webhook_count(&self) -> usize {
        self.inner.webhooks.len()
    }

    /// The config revision last applied (etcd revision, or the file backend's load counter).
    pub fn revision(&self) -> i64 {
        self.inner.revision.load(Ordering::Acquire)
    }

    pub fn set_revision(&self, revision: i64) {
        self.inner.revision.store(revision, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        keys::{Namespace, WebhookId},
        webhook::Webhook,
    };

    fn route(ns: &str, id: &str) -> Arc<Route> {
        let key = WebhookKey::new(Namespace::parse(ns).unwrap(), WebhookId::parse(id).unwrap());
        let webhook = Webhook::from_value(serde_json::json!({"module": "log"})).unwrap();
        let pool = crate::connections::ConnectionPool::new(Default::default());
        Arc::new(Route::build(key, webhook, &pool))
    }

    #[test]
    fn replace_all_removes_missing_entries_and_stores_new_ones() {
        let cache = ConfigCache::new();
        cache.upsert_webhook(route("a", "old"));
        cache.upsert_webhook(route("a", "kept"));
        let mut snapshot = Snapshot::default();
        for r in [route("a", "kept"), route("b", "new")] {
            snapshot.webhooks.insert(r.key.clone(), r);
        }
        let stats = cache.replace_all(snapshot);
        assert_eq!(
            stats,
            ReplaceStats {
                removed: 1,
                stored: 2
            }
        );
        assert_eq!(cache.webhook_count(), 2);
        assert!(cache.webhook(&route("a", "old").key).is_none());
        assert!(cache.webhook(&route("b", "new").key).is_some());
    }

    #[test]
    fn namespaces_are_isolated() {
        let cache = ConfigCache::new();
        cache.upsert_webhook(route("a", "x"));
        assert!(cache.webhook(&route("a", "x").key).is_some());
        assert!(cache.webhook(&route("b", "x").key).is_none());
    }
}
