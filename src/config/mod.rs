//! What a config entry *means*: parsing and validating webhook and connection entries.
//!
//! Nothing here does I/O; providers hand raw bytes in and get validated values (or a reason) out.

pub mod connection;
pub mod env_subst;
pub mod ip_list;
pub mod seal;
pub mod secret;

pub use connection::Connection;

use serde_json::Value;

/// Why an entry was refused. The provider logs it with the key and keeps the last good value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("value is not valid JSON: {0}")]
    Json(String),
    #[error("value must be a JSON object")]
    NotAnObject,
    #[error(transparent)]
    MissingVar(#[from] env_subst::MissingVar),
    #[error(transparent)]
    NotSubstitutable(#[from] env_subst::NotSubstitutable),
    #[error(transparent)]
    Sealed(#[from] env_subst::SealedField),
    #[error(transparent)]
    NotSealable(#[from] env_subst::NotSealable),
    #[error("{0}")]
    Invalid(String),
    /// Parsing or building the entry panicked (a library met a value nobody bounded yet): the
    /// entry is refused and everything else is applied. The panic itself is in the log.
    #[error("internal error while building this entry (see the log); the entry is skipped")]
    Internal,
}

/// Runs one entry's parse or build so that a panic inside makes that entry invalid
/// ([`ConfigError::Internal`]) instead of ending the task that applies every other entry.
pub fn contained<T>(work: impl FnOnce() -> Result<T, ConfigError>) -> Result<T, ConfigError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        tracing::error!(
            panic = %panic_text(&*payload),
            "Building a config entry panicked; the entry is skipped."
        );
        Err(ConfigError::Internal)
    })
}

/// The message a panic carried (empty when it was not text).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Variable lookup used for `{$VAR}` substitution.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What an entry's credential fields are resolved with: `{$VAR}` from the environment, sealed
/// values with the keys, bound to the entry they are read from.
#[derive(Clone, Copy)]
pub struct Secrets<'a> {
    pub env: EnvLookup<'a>,
    pub keys: &'a seal::Keyring,
    /// The entry being read: a sealed value opens only in its own entry, named relative to the
    /// prefix (`acme/webhooks/github`) so that the same value opens from etcd and from files.
    pub entry: Option<&'a crate::keys::ConfigKey>,
}

impl<'a> Secrets<'a> {
    /// `{$VAR}` from `env`, and no keys: a sealed value is refused, saying so.
    pub fn env_only(env: EnvLookup<'a>) -> Self {
        static NO_KEYS: seal::Keyring = seal::Keyring::empty();
        Self {
            env,
            keys: &NO_KEYS,
            entry: None,
        }
    }

    /// Resolves the credential fields of `entry` with `env` and `keys`.
    pub fn new(
        env: EnvLookup<'a>,
        keys: &'a seal::Keyring,
        entry: &'a crate::keys::ConfigKey,
    ) -> Self {
        Self {
            env,
            keys,
            entry: Some(entry),
        }
    }

    fn open(&self, field: &str, value: &str) -> Result<String, seal::OpenError> {
        let entry = self.entry.map(ToString::to_string).unwrap_or_default();
        self.keys.open(&entry, field, value)
    }
}

impl From<env_subst::SubstError> for ConfigError {
    fn from(e: env_subst::SubstError) -> Self {
        match e {
            env_subst::SubstError::Missing(e) => e.into(),
            env_subst::SubstError::NotSubstitutable(e) => e.into(),
            env_subst::SubstError::Sealed(e) => e.into(),
            env_subst::SubstError::NotSealable(e) => e.into(),
        }
    }
}

impl ConfigError {
    /// The same error with every substituted value masked.
    fn scrubbed(self, substituted: &env_subst::Substituted) -> Self {
        match self {
            ConfigError::Json(m) => ConfigError::Json(substituted.scrub(&m)),
            ConfigError::Invalid(m) => ConfigError::Invalid(substituted.scrub(&m)),
            other => other,
        }
    }
}

/// Parses an entry's raw bytes into a JSON object, substitutes environment references and opens
/// sealed values at `paths`, and validates it with `build`; errors never carry a substituted or
/// opened value.
///
/// Bytes that cannot hold a reference or a sealed value (no `{$`, no `sealed:`, and no `\u`
/// escape that could spell either) are
/// first read straight into their typed form `R` and validated with `build_raw`: one pass, no
/// JSON tree, which is most of a 250,000-entry load. When that read fails (or the bytes could
/// hold a reference) the general path runs, so an entry is refused with the same words either
/// way.
pub fn parse_entry_direct<R: serde::de::DeserializeOwned, T>(
    bytes: &[u8],
    secrets: &Secrets<'_>,
    paths: &[env_subst::FieldPath],
    build_raw: impl FnOnce(R) -> Result<T, ConfigError>,
    build: impl FnOnce(Value) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    use std::sync::LazyLock;
    static REFERENCE: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"{$"));
    static ESCAPE: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));
    static SEALED: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(seal::PREFIX.as_bytes()));
    let may_refer = REFERENCE.find(bytes).is_some()
        || ESCAPE.find(bytes).is_some()
        || SEALED.find(bytes).is_some();
    if !may_refer {
        if let Ok(raw) = serde_json::from_slice::<R>(bytes) {
            return build_raw(raw);
        }
    }
    parse_entry(bytes, secrets, paths, build)
}

pub fn parse_entry<T>(
    bytes: &[u8],
    secrets: &Secrets<'_>,
    paths: &[env_subst::FieldPath],
    build: impl FnOnce(Value) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ConfigError::NotAnObject);
    }
    let open = |field: &str, value: &str| secrets.open(field, value);
    let substituted = env_subst::substitute_fields(&mut value, paths, secrets.env, &open)?;
    build(value).map_err(|e| e.scrubbed(&substituted))
}

impl Connection {
    /// Parses a connection entry's raw bytes.
    pub fn from_bytes(bytes: &[u8], secrets: &Secrets<'_>) -> Result<Self, ConfigError> {
        parse_entry(bytes, secrets, connection::SUBSTITUTED, Self::from_value)
    }
}
