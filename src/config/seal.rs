//! Sealed secrets: a credential field may hold `sealed:v1:<key-id>:<base64>` instead of the
//! secret itself, so that reading the etcd prefix does not reveal it.
//!
//! The value is AES-256-GCM with a random 96-bit nonce (`base64(nonce ‖ ciphertext ‖ tag)`),
//! and the associated data binds it to its key id, its entry (`acme/webhooks/github`, relative
//! to the prefix) and its field (`hmac.secret`): a sealed value copied to another entry or field
//! does not open. Keys come from `SEAL_KEYS_FILE`, one `key-id=base64key` per line; the first
//! seals, every one opens (rotation). Key material is never printed: not in `Debug`, not in an
//! error. The only importer of `aes-gcm` (checked by `make lint`).

use std::{fmt, path::Path};

use aes_gcm::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};

/// What every sealed value starts with.
pub const PREFIX: &str = "sealed:";
/// The one format this version writes and reads.
const V1: &str = "sealed:v1:";
/// Bytes of a nonce and of a tag.
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The longest sealed value opened (a PEM public key fits many times over); longer is malformed.
const MAX_SEALED_LEN: usize = 64 * 1024;
/// Domain separation of the associated data, so no other use of a key can produce it.
const AAD_CONTEXT: &[u8] = b"switchyard.sealed.v1";

/// Whether `value` is meant as a sealed value (any version).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The keys that open sealed values; the first one seals.
#[derive(Default)]
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a key file (`SEAL_KEYS_FILE`) was refused; never quotes key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: &'static str,
    },
    #[error("{path} holds no key")]
    Empty { path: String },
}

/// Why a sealed value did not open (worded to follow "sealed value at `field` "). Never
/// quotes the value or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("is not of the form sealed:v1:<key-id>:<base64>")]
    Malformed,
    #[error("uses key `{0}`, but no SEAL_KEYS_FILE is configured")]
    NoKeys(String),
    #[error("uses key `{0}`, which is not in SEAL_KEYS_FILE")]
    UnknownKey(String),
    #[error(
        "does not open with key `{0}`: altered, or sealed for another entry or field (seal it \
         for this entry and field)"
    )]
    Rejected(String),
    #[error("opens, but the secret is not UTF-8 text")]
    NotText,
}

/// Why a value could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no key to seal with: SEAL_KEYS_FILE is not set or holds no key")]
    NoKeys,
    #[error("key `{0}` is not in SEAL_KEYS_FILE")]
    UnknownKey(String),
    #[error("the secret is empty")]
    Empty,
    #[error("the secret is too long to seal (at most {MAX_SECRET_LEN} bytes)")]
    TooLong,
    #[error("sealing failed")]
    Cipher,
}

/// The longest secret sealed: its sealed form must stay under [`MAX_SEALED_LEN`].
const MAX_SECRET_LEN: usize = (MAX_SEALED_LEN - 128) / 4 * 3 - NONCE_LEN - TAG_LEN;

fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Keyring {
    /// No keys: every sealed value is refused, naming the missing file.
    pub const fn empty() -> Self {
        Self { keys: Vec::new() }
    }

    /// The keys of `SEAL_KEYS_FILE`, or none when it is not set.
    pub fn from_setting(path: Option<&Path>) -> Result<Self, KeyFileError> {
        path.map_or_else(|| Ok(Self::empty()), Self::load)
    }

    /// Reads `path` (see [`Keyring::parse`]).
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// One `key-id=base64key` per line (32 bytes, standard base64); blank lines and lines
    /// starting with `#` are skipped. `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, KeyFileError> {
        let invalid = |line: usize, reason| KeyFileError::Invalid {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((id, key)) = line.split_once('=') else {
                return Err(invalid(number, "expected key-id=base64key"));
            };
            let (id, key) = (id.trim(), key.trim());
            if !valid_key_id(id) {
                return Err(invalid(
                    number,
                    "a key id is 1 to 64 of A-Z a-z 0-9 _ - . (it is written into every value \
                     it seals)",
                ));
            }
            if keys.iter().any(|(known, _)| known == id) {
                return Err(invalid(number, "this key id is already defined above"));
            }
            let bytes = STANDARD
                .decode(key)
                .map_err(|_| invalid(number, "the key is not standard base64"))?;
            if bytes.len() != 32 {
                return Err(invalid(
                    number,
                    "a key is 32 bytes (e.g. `head -c 32 /dev/urandom | base64`)",
                ));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| invalid(number, "a key is 32 bytes"))?;
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self { keys })
    }

    /// The key ids, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    fn key(&self, id: &str) -> Option<&Aes256Gcm> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, c)| c)
    }

    /// Seals `secret` for `field` of `entry` with key `key_id` (the first key when `None`).
    pub fn seal(
        &self,
        key_id: Option<&str>,
        entry: &str,
        field: &str,
        secret: &str,
    ) -> Result<String, SealError> {
        let (id, cipher) = match key_id {
            None => self.keys.first().ok_or(SealError::NoKeys)?,
            Some(id) => self
                .keys
                .iter()
                .find(|(k, _)| k == id)
                .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?,
        };
        if secret.is_empty() {
            return Err(SealError::Empty);
        }
        if secret.len() > MAX_SECRET_LEN {
            return Err(SealError::TooLong);
        }
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(id, entry, field);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Cipher)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!("{V1}{id}:{}", STANDARD.encode(blob)))
    }

    /// Opens `value`, sealed for `field` of `entry`.
    pub fn open(&self, entry: &str, field: &str, value: &str) -> Result<String, OpenError> {
        if value.len() > MAX_SEALED_LEN {
            return Err(OpenError::Malformed);
        }
        let rest = value.strip_prefix(V1).ok_or(OpenError::Malformed)?;
        let (id, encoded) = rest.split_once(':').ok_or(OpenError::Malformed)?;
        if !valid_key_id(id) {
            return Err(OpenError::Malformed);
        }
        let blob = STANDARD.decode(encoded).map_err(|_| OpenError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let cipher = self.key(id).ok_or_else(|| {
            if self.keys.is_empty() {
                OpenError::NoKeys(id.to_owned())
            } else {
                OpenError::UnknownKey(id.to_owned())
            }
        })?;
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let aad = associated_data(id, entry, field);
        let opened = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Rejected(id.to_owned()))?;
        String::from_utf8(opened).map_err(|_| OpenError::NotText)
    }
}

/// The associated data: a context string, then each part length-prefixed so that no two
/// (key id, entry, field) triples give the same bytes.
fn associated_data(key_id: &str, entry: &str, field: &str) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(AAD_CONTEXT.len() + 12 + key_id.len() + entry.len() + field.len());
    aad.extend_from_slice(AAD_CONTEXT);
    for part in [key_id, entry, field] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const ENTRY: &str = "acme/webhooks/github";

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text, "keys").unwrap()
    }

    #[test]
    fn round_trip_and_every_seal_differs() {
        let keys = ring(&format!("k1={K1}\n"));
        let a = keys.seal(None, ENTRY, "hmac.secret", "s3cret").unwrap();
        let b = keys.seal(None, ENTRY, "hmac.secret", "s3cret").unwrap();
        assert!(a.starts_with("sealed:v1:k1:"), "{a}");
        assert_ne!(a, b, "a random nonce per seal");
        assert!(!a.contains("s3cret"));
        assert_eq!(keys.open(ENTRY, "hmac.secret", &a).unwrap(), "s3cret");
        assert_eq!(keys.open(ENTRY, "hmac.secret", &b).unwrap(), "s3cret");
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let keys = ring(&format!("k1={K1}"));
        let sealed = keys.seal(None, ENTRY, "hmac.secret", "s3cret").unwrap();
        let (head, encoded) = sealed.rsplit_once(':').unwrap();
        let mut blob = STANDARD.decode(encoded).unwrap();
        for at in [0, NONCE_LEN, blob.len() - 1] {
            blob[at] ^= 1;
            let tampered = format!("{head}:{}", STANDARD.encode(&blob));
            assert_eq!(
                keys.open(ENTRY, "hmac.secret", &tampered),
                Err(OpenError::Rejected("k1".into())),
                "byte {at}"
            );
            blob[at] ^= 1;
        }
        // Cut short, or not base64: malformed.
        let short = format!(
            "{head}:{}",
            STANDARD.encode(&blob[..NONCE_LEN + TAG_LEN - 1])
        );
        assert_eq!(
            keys.open(ENTRY, "hmac.secret", &short),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            keys.open(ENTRY, "hmac.secret", &format!("{head}:not base64!")),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn a_value_moved_to_another_entry_or_field_does_not_open() {
        let keys = ring(&format!("k1={K1}"));
        let sealed = keys.seal(None, ENTRY, "hmac.secret", "s3cret").unwrap();
        for (entry, field) in [
            ("other/webhooks/github", "hmac.secret"),
            (ENTRY, "jwt.secret"),
            ("acme/webhooks/githu", "bhmac.secret"),
        ] {
            assert_eq!(
                keys.open(entry, field, &sealed),
                Err(OpenError::Rejected("k1".into())),
                "{entry} {field}"
            );
        }
        // Another key id written into the value: a key that is not its own.
        let keys2 = ring(&format!("k1={K1}\nk2={K1}"));
        let relabelled = sealed.replacen("sealed:v1:k1:", "sealed:v1:k2:", 1);
        assert_eq!(
            keys2.open(ENTRY, "hmac.secret", &relabelled),
            Err(OpenError::Rejected("k2".into()))
        );
    }

    #[test]
    fn unknown_key_and_no_keys_are_named() {
        let sealed = ring(&format!("k1={K1}"))
            .seal(None, ENTRY, "hmac.secret", "s3cret")
            .unwrap();
        assert_eq!(
            ring(&format!("k2={K2}")).open(ENTRY, "hmac.secret", &sealed),
            Err(OpenError::UnknownKey("k1".into()))
        );
        assert_eq!(
            Keyring::empty().open(ENTRY, "hmac.secret", &sealed),
            Err(OpenError::NoKeys("k1".into()))
        );
        assert_eq!(
            Keyring::empty().seal(None, ENTRY, "hmac.secret", "x"),
            Err(SealError::NoKeys)
        );
    }

    #[test]
    fn rotation_old_key_opens_new_key_seals() {
        let old = ring(&format!("old={K1}"));
        let before = old.seal(None, ENTRY, "hmac.secret", "s3cret").unwrap();
        let rotated = ring(&format!("# the first key seals\nnew={K2}\nold={K1}\n"));
        assert_eq!(
            rotated.open(ENTRY, "hmac.secret", &before).unwrap(),
            "s3cret"
        );
        let after = rotated.seal(None, ENTRY, "hmac.secret", "s3cret").unwrap();
        assert!(after.starts_with("sealed:v1:new:"), "{after}");
        let by_name = rotated
            .seal(Some("old"), ENTRY, "hmac.secret", "x")
            .unwrap();
        assert!(by_name.starts_with("sealed:v1:old:"));
        assert_eq!(
            rotated.seal(Some("gone"), ENTRY, "hmac.secret", "x"),
            Err(SealError::UnknownKey("gone".into()))
        );
        assert_eq!(rotated.ids().collect::<Vec<_>>(), ["new", "old"]);
    }

    #[test]
    fn key_files_are_checked_without_quoting_keys() {
        for (text, needle) in [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("k1", "line 1: expected key-id=base64key"),
            (&format!("k 1={K1}"), "line 1: a key id"),
            (
                &format!("k1={K1}\nk1={K2}"),
                "line 2: this key id is already defined",
            ),
            ("k1=not*base64", "line 1: the key is not standard base64"),
            ("k1=c2hvcnQ=", "line 1: a key is 32 bytes"),
        ] {
            let err = Keyring::parse(text, "/etc/sy/keys")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("/etc/sy/keys"), "{err}");
            assert!(!err.contains("c2hvcnQ") && !err.contains(K2), "{err}");
        }
        let err = Keyring::load(Path::new("/nonexistent/keys")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keys"), "{err}");
        let keys = ring(&format!("k1={K1}"));
        assert_eq!(format!("{keys:?}"), r#"Keyring { key_ids: ["k1"] }"#);
    }

    #[test]
    fn malformed_values_are_refused_never_panic() {
        let keys = ring(&format!("k1={K1}"));
        for value in [
            "sealed:",
            "sealed:v1:",
            "sealed:v1:k1",
            "sealed:v1::AAAA",
            "sealed:v2:k1:AAAA",
            "sealed:v1:k 1:AAAA",
            "sealed:v1:k1:",
            "plain",
        ] {
            assert_eq!(
                keys.open(ENTRY, "f", value),
                Err(OpenError::Malformed),
                "{value}"
            );
        }
        let huge = format!("sealed:v1:k1:{}", "A".repeat(MAX_SEALED_LEN));
        assert_eq!(keys.open(ENTRY, "f", &huge), Err(OpenError::Malformed));
        assert_eq!(keys.seal(None, ENTRY, "f", ""), Err(SealError::Empty));
        let longest = "x".repeat(MAX_SECRET_LEN);
        let sealed = keys.seal(None, ENTRY, "f", &longest).unwrap();
        assert!(sealed.len() <= MAX_SEALED_LEN);
        assert_eq!(keys.open(ENTRY, "f", &sealed).unwrap(), longest);
        assert_eq!(
            keys.seal(None, ENTRY, "f", &format!("{longest}x")),
            Err(SealError::TooLong)
        );
    }
}
