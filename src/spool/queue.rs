//! A destination's queue as the running process sees it: its typed name, its counts (owned by
//! `super::ledger`), its records in memory and its forwarder's state.

use std::sync::{
    atomic::{AtomicBool, AtomicU64},
    Arc,
};

use tokio::sync::Notify;

use super::{fresh::FreshQueue, ledger::Counts, store::destination_id};
use crate::keys::{Namespace, WebhookId, WebhookKey};

/// One destination of one webhook, identified by what it delivers to: the webhook, the module,
/// its connection and its target (topic, stream, key or channel), not its place in the chain,
/// so reordering a chain's destinations strands no records. Typed from end to end; the text
/// form ([`Destination::name`]) exists only where it is stored (the journal, the redb file) and
/// shown (`/spool`, metrics), and is parsed back once when a stored queue is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    name: Arc<str>,
    id: u64,
    /// `None` for a stored name that no longer parses (its records are kept and reported).
    parts: Option<Arc<Parts>>,
}

/// What a destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub webhook: WebhookKey,
    pub module: Box<str>,
    pub connection: Option<Box<str>>,
    pub place: Place,
}

/// Where a destination delivers, beside its webhook, module and connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Its module's target (`None` for a module without one, such as `log`).
    Target(Option<Box<str>>),
    /// Its position in the chain: how queues were named before targets were (records stored
    /// by an older version are still delivered to the module at that position).
    Position(usize),
}

impl Place {
    /// The place of a destination writing to `target`, as its name says it.
    pub fn of_target(target: Option<&str>) -> Self {
        Self::Target(target.map(|t| target_text(t).as_ref().into()))
    }
}

/// Longest target kept verbatim in a name; a longer one (or one with control characters) is
/// named by its digest.
const MAX_TARGET_IN_NAME: usize = 200;

/// A target as it appears in a name.
fn target_text(target: &str) -> std::borrow::Cow<'_, str> {
    if target.len() <= MAX_TARGET_IN_NAME && !target.chars().any(char::is_control) {
        return target.into();
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(target.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("~sha256:{hex}").into()
}

impl Destination {
    /// The queue of `module` on `connection` writing to `target`, for webhook `webhook`.
    pub fn new(
        webhook: &WebhookKey,
        module: &str,
        connection: Option<&str>,
        target: Option<&str>,
    ) -> Self {
        let target = target.map(target_text);
        let mut name = format!("{}/{}:{module}", webhook.namespace, webhook.id);
        if let Some(connection) = connection {
            name.push('@');
            name.push_str(connection);
        }
        if let Some(target) = &target {
            name.push('/');
            name.push_str(target);
        }
        let parts = Parts {
            webhook: webhook.clone(),
            module: module.into(),
            connection: connection.map(Into::into),
            place: Place::Target(target.map(|t| t.as_ref().into())),
        };
        Self {
            id: destination_id(&name),
            name: Arc::from(name),
            parts: Some(Arc::new(parts)),
        }
    }

    /// A destination by its stored name: `ns/webhook:module[@connection][/target]`, or the
    /// older `ns/webhook#index:module[@connection]`.
    pub fn named(name: &str) -> Self {
        Self {
            id: destination_id(name),
            name: Arc::from(name),
            parts: parse(name).map(Arc::new),
        }
    }

    /// The text form, where it is stored and shown.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn parts(&self) -> Option<&Parts> {
        self.parts.as_deref()
    }
}

/// A `log` destination of `namespace/webhook` told apart by `target` (tests).
#[cfg(test)]
pub fn test_destination(namespace: &str, webhook: &str, target: &str) -> Destination {
    let key = WebhookKey::new(
        Namespace::parse(namespace).expect("a valid namespace"),
        WebhookId::parse(webhook).expect("a valid webhook id"),
    );
    Destination::new(&key, "log", None, Some(target))
}

/// The parts of a stored name (see [`Destination::named`]).
fn parse(name: &str) -> Option<Parts> {
    let (namespace, rest) = name.split_once('/')?;
    let namespace = Namespace::parse(namespace).ok()?;
    // The older form: the webhook id may itself hold `#`, the index follows the last one.
    if let Some((webhook, tail)) = rest.rsplit_once('#') {
        if let Some((index, target)) = tail.split_once(':') {
            if let (Ok(index), Ok(webhook)) = (index.parse(), WebhookId::parse(webhook)) {
                let (module, connection) = match target.split_once('@') {
                    Some((module, connection)) => (module, Some(connection)),
                    None => (target, None),
                };
                return Some(Parts {
                    webhook: WebhookKey::new(namespace, webhook),
                    module: module.into(),
                    connection: connection.map(Into::into),
                    place: Place::Position(index),
                });
            }
        }
    }
    let (webhook, rest) = rest.split_once(':')?;
    let webhook = WebhookId::parse(webhook).ok()?;
    let (head, target) = match rest.split_once('/') {
        Some((head, target)) => (head, Some(target)),
        None => (rest, None),
    };
    let (module, connection) = match head.split_once('@') {
        Some((module, connection)) => (module, Some(connection)),
        None => (head, None),
    };
    Some(Parts {
        webhook: WebhookKey::new(namespace, webhook),
        module: module.into(),
        connection: connection.map(Into::into),
        place: Place::Target(target.map(Into::into)),
    })
}

/// One destination's queue as the running process sees it: its counts (owned by the ledger),
/// its records in memory, and its forwarder's state.
#[derive(Debug)]
pub struct Queue {
    pub destination: Destination,
    /// Depth, bytes and dead letters: read here, changed only through the ledger's verbs.
    pub counts: Arc<Counts>,
    /// Failed forwarding attempts since start.
    pub retries: AtomicU64,
    /// Records forwarded since start.
    pub delivered: AtomicU64,
    /// Wakes the forwarder when a record is added.
    pub appended: Notify,
    /// A forwarder runs for this queue.
    pub running: AtomicBool,
    /// Its records not in the file (journaled, waiting in memory).
    pub fresh: FreshQueue,
    /// Not forwarded before this: the destination asked for a pause (HTTP 429 `Retry-After`)
    /// when the request was first tried.
    pub held_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Queue {
    pub fn new(destination: Destination, counts: Arc<Counts>) -> Self {
        Self {
            destination,
            counts,
            retries: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            appended: Notify::new(),
            running: AtomicBool::new(false),
            fresh: FreshQueue::default(),
            held_until: std::sync::Mutex::new(None),
        }
    }

    /// Records waiting (see [`Counts::depth`]).
    pub fn depth(&self) -> u64 {
        self.counts.depth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, webhook: &str) -> WebhookKey {
        WebhookKey::new(
            Namespace::parse(namespace).unwrap(),
            WebhookId::parse(webhook).unwrap(),
        )
    }

    #[test]
    fn a_destination_is_named_by_what_it_delivers_to_and_parsed_back() {
        let gh = key("team-a", "gh");
        let d = Destination::new(&gh, "redis_stream", Some("cache"), Some("events/gh:1"));
        assert_eq!(d.name(), "team-a/gh:redis_stream@cache/events/gh:1");
        let parsed = Destination::named(d.name());
        assert_eq!(parsed.parts(), d.parts());
        assert_eq!(parsed.id(), d.id());
        let log = Destination::new(&gh, "log", None, None);
        assert_eq!(log.name(), "team-a/gh:log");
        assert_eq!(Destination::named(log.name()).parts(), log.parts());
        // Another target is another queue; so is another connection.
        assert_ne!(
            d.id(),
            Destination::new(&gh, "redis_stream", Some("cache"), Some("other")).id()
        );
        assert_ne!(
            d.id(),
            Destination::new(&gh, "redis_stream", Some("cache2"), Some("events/gh:1")).id()
        );
        // A target too long or with control characters is named by its digest.
        let long = "k".repeat(5000);
        let hashed = Destination::new(&gh, "redis_list", Some("c"), Some(&long));
        assert!(hashed.name().len() < 300);
        assert_ne!(
            hashed.id(),
            Destination::new(&gh, "redis_list", Some("c"), Some("k\nx")).id()
        );
        assert_eq!(Destination::named("nonsense").parts(), None);
    }

    #[test]
    fn names_stored_by_an_older_version_keep_their_position() {
        let old = Destination::named("team-a/gh#2:redis_stream@cache");
        let parts = old.parts().unwrap();
        assert_eq!(parts.webhook, key("team-a", "gh"));
        assert_eq!(parts.place, Place::Position(2));
        assert_eq!(parts.connection.as_deref(), Some("cache"));
        let log = Destination::named("a/b#0:log");
        assert_eq!(log.parts().map(|p| &*p.module), Some("log"));
    }
}
