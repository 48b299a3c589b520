//! Names of things: `Namespace`, `WebhookId`, `ConnectionName`, and the etcd key grammar.
//!
//! Every name is parsed once at the edge (an etcd key, a file entry, a request path) into one of
//! these types, so the rest of the crate never sees an unvalidated string.

use std::{fmt, sync::Arc};

/// The hasher of maps keyed by webhook keys (the cache, metric labels): randomly keyed per
/// process (keys come from tenants' config and lookups from the internet, so hash flooding must
/// not be predictable), and several times faster than the standard SipHash on these short keys
/// (a 250k-webhook load spent ~15% of its time hashing; see BENCHMARKS.md).
pub type KeyHasher = ahash::RandomState;

/// The namespace reserved for global entries (connections); never a webhook namespace.
pub const GLOBAL_NAMESPACE: &str = "global";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long; at most {max} are allowed")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} contains {found:?}; allowed are {allowed}")]
    BadChar {
        kind: &'static str,
        found: char,
        allowed: &'static str,
    },
    #[error("`global` is reserved for connections and cannot be a webhook namespace")]
    Reserved,
}

fn check(
    value: &str,
    kind: &'static str,
    max: usize,
    allowed: &'static str,
    ok: fn(char) -> bool,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            kind,
            len: value.chars().count(),
            max,
        });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(found) => Err(NameError::BadChar {
            kind,
            found,
            allowed,
        }),
        None => Ok(()),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The validated name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

name_type!(
    /// A webhook namespace: 1-64 characters of `[a-zA-Z0-9_-]`, never `global`.
    Namespace
);
name_type!(
    /// A webhook id: 1-128 characters of `[A-Za-z0-9_.-]`.
    WebhookId
);
name_type!(
    /// A global connection's name: 1-128 characters of `[A-Za-z0-9_.-]`.
    ConnectionName
);

fn namespace_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

impl Namespace {
    /// Parses a namespace, refusing the reserved `global`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check(value, "namespace", 64, "[a-zA-Z0-9_-]", namespace_char)?;
        if value == GLOBAL_NAMESPACE {
            return Err(NameError::Reserved);
        }
        Ok(Self(value.into()))
    }
}

impl WebhookId {
    /// Parses a webhook id.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check(value, "webhook id", 128, "[A-Za-z0-9_.-]", id_char)?;
        Ok(Self(value.into()))
    }
}

impl ConnectionName {
    /// Parses a connection name.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check(value, "connection name", 128, "[A-Za-z0-9_.-]", id_char)?;
        Ok(Self(value.into()))
    }
}

/// A webhook's full address: its namespace and id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookKey {
    pub namespace: Namespace,
    pub id: WebhookId,
}

impl WebhookKey {
    pub fn new(namespace: Namespace, id: WebhookId) -> Self {
        Self { namespace, id }
    }
}

impl fmt::Display for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// What a key under the prefix addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigKey {
    Webhook(WebhookKey),
    Connection(ConnectionName),
}

/// The key relative to the prefix: `acme/webhooks/github`, `global/connections/kafka`.
impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Webhook(key) => write!(f, "{}/webhooks/{}", key.namespace, key.id),
            Self::Connection(name) => write!(f, "{GLOBAL_NAMESPACE}/connections/{name}"),
        }
    }
}

/// How a key under the prefix was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    /// A webhook or connection key with valid names.
    Valid(ConfigKey),
    /// Shaped like a webhook or connection key, but a name in it is invalid: worth a warning.
    Invalid(NameError),
    /// Not part of the layout (another tool's key, a stray folder): ignored quietly.
    Foreign,
}

/// The etcd key layout under one prefix, e.g. `/cwm/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// A layout under `prefix`; a missing trailing `/` is added.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The prefix every key starts with, always ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix><namespace>/webhooks/<id>`
    pub fn webhook_key(&self, key: &WebhookKey) -> String {
        format!("{}{}", self.prefix, ConfigKey::Webhook(key.clone()))
    }

    /// `<prefix>global/connections/<name>`
    pub fn connection_key(&self, name: &ConnectionName) -> String {
        format!("{}{}", self.prefix, ConfigKey::Connection(name.clone()))
    }

    /// `<prefix>global/connections/`, the folder of the connections.
    pub fn connections_prefix(&self) -> String {
        format!("{}{GLOBAL_NAMESPACE}/connections/", self.prefix)
    }

    /// `<prefix><namespace>/webhooks/`, the folder of one namespace's webhooks.
    pub fn namespace_prefix(&self, namespace: &Namespace) -> String {
        format!("{}{namespace}/webhooks/", self.prefix)
    }

    /// Reads a raw etcd key.
    pub fn parse(&self, key: &[u8]) -> KeyMatch {
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return KeyMatch::Foreign;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return KeyMatch::Foreign;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(first), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return KeyMatch::Foreign;
        };
        match (first, kind) {
            (GLOBAL_NAMESPACE, "connections") => match ConnectionName::parse(name) {
                Ok(name) => KeyMatch::Valid(ConfigKey::Connection(name)),
                Err(e) => KeyMatch::Invalid(e),
            },
            (namespace, "webhooks") => {
                let parsed = Namespace::parse(namespace)
                    .and_then(|ns| WebhookId::parse(name).map(|id| WebhookKey::new(ns, id)));
                match parsed {
                    Ok(key) => KeyMatch::Valid(ConfigKey::Webhook(key)),
                    Err(e) => KeyMatch::Invalid(e),
                }
            }
            _ => KeyMatch::Foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout() -> KeyLayout {
        KeyLayout::new("/cwm/")
    }

    #[test]
    fn webhook_key_round_trips() {
        let key = WebhookKey::new(
            Namespace::parse("acme").unwrap(),
            WebhookId::parse("gh.push-1").unwrap(),
        );
        let raw = layout().webhook_key(&key);
        assert_eq!(raw, "/cwm/acme/webhooks/gh.push-1");
        assert_eq!(
            layout().parse(raw.as_bytes()),
            KeyMatch::Valid(ConfigKey::Webhook(key))
        );
    }

    #[test]
    fn connection_key_round_trips() {
        let name = ConnectionName::parse("kafka-main").unwrap();
        let raw = layout().connection_key(&name);
        assert_eq!(raw, "/cwm/global/connections/kafka-main");
        assert_eq!(
            layout().parse(raw.as_bytes()),
            KeyMatch::Valid(ConfigKey::Connection(name))
        );
    }

    #[test]
    fn prefix_without_trailing_slash_gets_one() {
        assert_eq!(KeyLayout::new("/cwm").prefix(), "/cwm/");
    }

    #[test]
    fn global_webhooks_are_refused() {
        assert_eq!(
            layout().parse(b"/cwm/global/webhooks/x"),
            KeyMatch::Invalid(NameError::Reserved)
        );
    }

    #[test]
    fn keys_outside_the_layout_are_foreign() {
        for key in [
            "/other/acme/webhooks/x",
            "/cwm/acme",
            "/cwm/acme/webhooks",
            "/cwm/acme/settings/x",
            "/cwm/global/secrets/x",
        ] {
            assert_eq!(layout().parse(key.as_bytes()), KeyMatch::Foreign, "{key}");
        }
    }

    #[test]
    fn bad_names_in_layout_keys_are_invalid() {
        for key in [
            "/cwm/ac me/webhooks/x",
            "/cwm/acme/webhooks/",
            "/cwm/acme/webhooks/a/b",
            "/cwm/acme/webhooks/ü",
            "/cwm/global/connections/",
        ] {
            assert!(
                matches!(layout().parse(key.as_bytes()), KeyMatch::Invalid(_)),
                "{key}"
            );
        }
    }

    #[test]
    fn namespace_length_limit_is_64() {
        assert!(Namespace::parse(&"a".repeat(64)).is_ok());
        assert!(matches!(
            Namespace::parse(&"a".repeat(65)),
            Err(NameError::TooLong { max: 64, .. })
        ));
        assert!(WebhookId::parse(&"a".repeat(128)).is_ok());
        assert!(WebhookId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn dots_are_allowed_in_ids_but_not_namespaces() {
        assert!(WebhookId::parse("a.b").is_ok());
        assert!(Namespace::parse("a.b").is_err());
    }

    proptest! {
        #[test]
        fn valid_namespaces_parse(ns in "[a-zA-Z0-9_-]{1,64}") {
            prop_assume!(ns != GLOBAL_NAMESPACE);
            let parsed = Namespace::parse(&ns).unwrap();
            prop_assert_eq!(parsed.as_str(), ns.as_str());
        }

        #[test]
        fn valid_ids_parse(id in "[A-Za-z0-9_.-]{1,128}") {
            let parsed = WebhookId::parse(&id).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
        }

        #[test]
        fn any_string_is_parsed_without_panic(s in "\\PC{0,200}") {
            let _ = Namespace::parse(&s);
            let _ = WebhookId::parse(&s);
            let _ = layout().parse(s.as_bytes());
        }

        #[test]
        fn names_with_a_forbidden_char_are_refused(
            head in "[a-z]{0,10}", bad in "[^a-zA-Z0-9_.-]", tail in "[a-z]{0,10}"
        ) {
            let id = format!("{head}{bad}{tail}");
            prop_assert!(WebhookId::parse(&id).is_err());
            prop_assert!(Namespace::parse(&id).is_err());
        }
    }
}
