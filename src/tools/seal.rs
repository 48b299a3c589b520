//! `switchyard seal`: turns a secret read from stdin into the `sealed:v1:...` value of one field
//! of one entry, to paste into that entry.

use std::io::Read as _;

use crate::{
    config::{connection, env_subst::FieldPath, seal::Keyring},
    keys::{ConfigKey, KeyLayout, KeyMatch},
    settings::Settings,
};

/// The longest secret read from stdin.
const MAX_INPUT: u64 = 64 * 1024;

/// Seals the secret on `input` for `field` of `entry` with key `key_id` (the first key of
/// SEAL_KEYS_FILE when `None`). `entry` is an etcd key under ETCD_PREFIX
/// (`/cwm/acme/webhooks/github`) or the same without the prefix.
pub fn run(
    settings: &Settings,
    key_id: Option<&str>,
    entry: &str,
    field: &str,
    input: impl std::io::Read,
) -> Result<String, String> {
    let Some(path) = &settings.seal_keys_file else {
        return Err("SEAL_KEYS_FILE is not set: it holds the keys to seal with".to_owned());
    };
    let keys = Keyring::load(path).map_err(|e| e.to_string())?;
    let key = entry_key(&settings.etcd_prefix, entry)?;
    check_field(&key, field)?;
    let secret = read_secret(input)?;
    keys.seal(key_id, &key.to_string(), field, &secret)
        .map_err(|e| format!("cannot seal: {e}"))
}

/// The entry `entry` names, with or without the prefix.
fn entry_key(prefix: &str, entry: &str) -> Result<ConfigKey, String> {
    let layout = KeyLayout::new(prefix);
    let relative = format!("/{}", entry.trim_start_matches('/'));
    for (layout, key) in [
        (layout.clone(), entry),
        (KeyLayout::new("/"), relative.as_str()),
    ] {
        match layout.parse(key.as_bytes()) {
            KeyMatch::Valid(key) => return Ok(key),
            KeyMatch::Invalid(e) => return Err(format!("--entry {entry}: {e}")),
            KeyMatch::Foreign => {}
        }
    }
    Err(format!(
        "--entry {entry}: not a webhook or connection key (`{}<namespace>/webhooks/<id>` or \
         `{}global/connections/<name>`, with or without the prefix)",
        layout.prefix(),
        layout.prefix()
    ))
}

/// Refuses a field that is not a credential field of `key`'s kind: a value sealed there would
/// never be opened.
fn check_field(key: &ConfigKey, field: &str) -> Result<(), String> {
    let paths = match key {
        ConfigKey::Webhook(_) => crate::webhook::SUBSTITUTED,
        ConfigKey::Connection(_) => connection::SUBSTITUTED,
    };
    if paths.iter().any(|path| field_matches(path, field)) {
        return Ok(());
    }
    let known = paths
        .iter()
        .map(|path| path.join("."))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "--field {field}: not a credential field of this entry (`*` is a name or an index): \
         {known}"
    ))
}

/// Whether the dotted `field` is `path`; a `*` stands for one name or index, and the last one
/// for the rest (a header name may hold dots).
fn field_matches(path: FieldPath, field: &str) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (segment, remainder) = if rest.is_empty() {
        (field, None)
    } else {
        match field.split_once('.') {
            Some((segment, remainder)) => (segment, Some(remainder)),
            None => return false,
        }
    };
    let segment_ok = !segment.is_empty() && (*first == "*" || *first == segment);
    match remainder {
        None => segment_ok,
        Some(remainder) => segment_ok && field_matches(rest, remainder),
    }
}

/// The secret on `input`, without one trailing line end (what `echo` and a heredoc add).
fn read_secret(input: impl std::io::Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the secret from stdin: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(format!(
            "the secret on stdin is longer than {MAX_INPUT} bytes"
        ));
    }
    let mut secret =
        String::from_utf8(bytes).map_err(|_| "the secret on stdin is not UTF-8 text".to_owned())?;
    if secret.ends_with('\n') {
        secret.pop();
        if secret.ends_with('\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(
            "no secret on stdin (pipe it in: `printf %s \"$SECRET\" | switchyard seal ...`)"
                .to_owned(),
        );
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_or_without_the_prefix() {
        for entry in [
            "/cwm/acme/webhooks/github",
            "acme/webhooks/github",
            "/acme/webhooks/github",
        ] {
            assert_eq!(
                entry_key("/cwm/", entry).unwrap().to_string(),
                "acme/webhooks/github",
                "{entry}"
            );
        }
        assert_eq!(
            entry_key("/cwm/", "global/connections/svc")
                .unwrap()
                .to_string(),
            "global/connections/svc"
        );
        let err = entry_key("/cwm/", "/cwm/acme/hooks/github").unwrap_err();
        assert!(err.contains("not a webhook or connection key"), "{err}");
        let err = entry_key("/cwm/", "acme/webhooks/bad id").unwrap_err();
        assert!(err.starts_with("--entry acme/webhooks/bad id:"), "{err}");
    }

    #[test]
    fn only_credential_fields_of_the_entry_kind() {
        let webhook = entry_key("/cwm/", "acme/webhooks/github").unwrap();
        let connection = entry_key("/cwm/", "global/connections/svc").unwrap();
        for field in [
            "hmac.secret",
            "hmac.secret.1",
            "basic_auth.password",
            "chain.2.module-config.sign.secret",
        ] {
            assert!(check_field(&webhook, field).is_ok(), "{field}");
        }
        for field in [
            "headers.X-Api-Key",
            "headers.x.dotted",
            "password",
            "base_url",
        ] {
            assert!(check_field(&connection, field).is_ok(), "{field}");
        }
        for (key, field) in [
            (&webhook, "data_type"),
            (&webhook, "hmac"),
            (&webhook, "hmac.secret."),
            (&webhook, "password"),
            (&connection, "hmac.secret"),
            (&connection, "headers"),
            (&connection, "headers."),
        ] {
            let err = check_field(key, field).unwrap_err();
            assert!(err.contains("not a credential field"), "{field}: {err}");
        }
    }

    #[test]
    fn the_secret_loses_one_line_end_only() {
        assert_eq!(read_secret(&b"abc\n"[..]).unwrap(), "abc");
        assert_eq!(read_secret(&b"abc\r\n"[..]).unwrap(), "abc");
        assert_eq!(read_secret(&b"abc\n\n"[..]).unwrap(), "abc\n");
        assert_eq!(read_secret(&b" a b "[..]).unwrap(), " a b ");
        assert!(read_secret(&b"\n"[..]).unwrap_err().contains("no secret"));
        assert!(read_secret(&b"\xff"[..]).unwrap_err().contains("UTF-8"));
        let long = vec![b'a'; 64 * 1024 + 1];
        assert!(read_secret(&long[..]).unwrap_err().contains("longer than"));
    }
}
