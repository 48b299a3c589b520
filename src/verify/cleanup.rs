//! `credential_cleanup`: masks or removes credential fields of a JSON payload (at any depth) or
//! of a form-encoded one, before any module sees it.

use serde::Deserialize;
use serde_json::Value;

/// Field names cleaned when `fields` is not given (compared case-insensitively, `-` as `_`).
pub const DEFAULT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credit_card",
    "card_number",
    "cvv",
    "ssn",
];

pub const MASK: &str = "***";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace the value with `***` (default).
    #[default]
    Mask,
    /// Drop the field.
    Remove,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// A compiled cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    mode: Mode,
    fields: Vec<String>,
}

impl CleanupConfig {
    /// `None` when disabled.
    pub fn compile(self) -> Option<Cleanup> {
        if !self.enabled {
            return None;
        }
        let fields = match self.fields {
            Some(fields) => fields.iter().map(|f| normalise(f)).collect(),
            None => DEFAULT_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        };
        Some(Cleanup {
            mode: self.mode,
            fields,
        })
    }
}

impl Cleanup {
    /// Whether `name` is a listed field: compared case-insensitively, `-` as `_` (the fields
    /// are stored that way), without allocating: it runs for every key of every body.
    fn listed(&self, name: &str) -> bool {
        self.listed_bytes(name.as_bytes())
    }

    /// [`Cleanup::listed`] on a name's bytes (a key read in place needs no UTF-8 check: the
    /// listed names are ASCII, and the body was validated as UTF-8 before).
    fn listed_bytes(&self, name: &[u8]) -> bool {
        let fold = |b: u8| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_lowercase()
            }
        };
        self.fields.iter().any(|field| {
            field.len() == name.len() && field.bytes().zip(name).all(|(f, n)| f == fold(*n))
        })
    }

    /// Cleans a JSON body (already checked to be strict JSON). Returns the new bytes, or
    /// `Ok(None)` when no listed field occurs. Only the listed values (or members) change: every
    /// other byte, with key order, number spelling and spacing, is copied as it came.
    pub fn apply(&self, body: &[u8]) -> Result<Option<Vec<u8>>, NotJson> {
        let mut edits = Vec::new();
        let mut scan = Scan { b: body, i: 0 };
        scan.skip_ws();
        scan.value(self, &mut edits).ok_or(NotJson)?;
        if edits.is_empty() {
            return Ok(None);
        }
        edits.sort_by_key(|e| e.0);
        let mut out = Vec::with_capacity(body.len());
        let mut at = 0;
        for (start, end, replacement) in edits {
            out.extend_from_slice(body.get(at..start).ok_or(NotJson)?);
            out.extend_from_slice(replacement.as_bytes());
            at = end;
        }
        out.extend_from_slice(body.get(at..).ok_or(NotJson)?);
        Ok(Some(out))
    }

    /// Cleans a form-encoded body (`a=1&token=x`): a listed field's value becomes `***` (or the
    /// field is dropped); every other byte is copied as it came. `None` when nothing is listed.
    pub fn apply_form(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(body.len());
        let mut changed = false;
        let mut first = true;
        for pair in body.split(|b| *b == b'&') {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            let decoded = form_urlencoded::parse(name)
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            let listed = !pair.is_empty() && self.listed(&decoded);
            changed |= listed;
            if listed && self.mode == Mode::Remove {
                continue;
            }
            if !first {
                out.push(b'&');
            }
            first = false;
            if listed {
                out.extend_from_slice(name);
                out.push(b'=');
                out.extend_from_slice(MASK.as_bytes());
            } else if let Some(cleaned) = self.json_field(pair) {
                // A field holding JSON (Slack's `payload=`) is cleaned inside.
                changed = true;
                out.extend_from_slice(name);
                out.push(b'=');
                out.extend(form_urlencoded::byte_serialize(&cleaned).flat_map(str::bytes));
            } else {
                out.extend_from_slice(pair);
            }
        }
        changed.then_some(out)
    }

    /// A form field whose value is a JSON object or array, cleaned: `None` when the value is
    /// not JSON or holds nothing listed.
    fn json_field(&self, pair: &[u8]) -> Option<Vec<u8>> {
        let value = pair.splitn(2, |b| *b == b'=').nth(1)?;
        // `{` or `[`, raw or percent-encoded: anything else cannot be JSON worth a look.
        let opens = |v: &[u8]| {
            matches!(v.first(), Some(b'{' | b'['))
                || v.get(..3).is_some_and(|p| {
                    p.eq_ignore_ascii_case(b"%7B") || p.eq_ignore_ascii_case(b"%5B")
                })
        };
        if !opens(value) {
            return None;
        }
        let decoded: Vec<u8> = form_urlencoded::parse(pair)
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())?;
        super::json::validate(&decoded).ok()?;
        self.apply(&decoded).ok().flatten()
    }

    /// Cleans a parsed value in place; returns whether anything changed. (The reference the
    /// byte-level cleaner is tested against.)
    pub fn apply_value(&self, value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                let mut changed = false;
                let names: Vec<String> = map.keys().cloned().collect();
                for name in names {
                    if self.listed(&name) {
                        changed = true;
                        match self.mode {
                            Mode::Mask => {
                                map.insert(name, Value::String(MASK.into()));
                            }
                            Mode::Remove => {
                                map.remove(&name);
                            }
                        }
                    } else if let Some(child) = map.get_mut(&name) {
                        changed |= self.apply_value(child);
                    }
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, v| self.apply_value(v) | c),
            _ => false,
        }
    }
}

/// Checks that a body is form encoding: printable ASCII (form encoding escapes everything
/// else) and every `%` followed by two hex digits.
pub fn validate_form(body: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'%' => {
                let hex = body.get(i + 1..i + 3).unwrap_or_default();
                if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(format!("bad percent escape at byte {i}"));
                }
                i += 3;
            }
            0x21..=0x7e => i += 1,
            other => return Err(format!("byte 0x{other:02x} at {i} is not form encoding")),
        }
    }
    Ok(())
}

/// The body could not be walked as JSON (it is validated first, so this means a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// A byte range of the body and what replaces it.
type Edit = (usize, usize, &'static str);

/// A cursor over strict JSON. Every method returns `None` on input that is not JSON (never
/// reached after validation; then the caller refuses the request rather than guess).
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// After an element: `,` (then `false`, more follow) or `close` (then `true`).
    fn separator(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        let byte = self.peek()?;
        self.i += 1;
        if byte == close {
            return Some(true);
        }
        (byte == b',').then(|| self.skip_ws()).map(|()| false)
    }

    /// Skips a string; returns its raw span including the quotes.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        self.expect(b'"')?;
        // A byte loop: most strings of a payload are a few bytes long, where a vectorised
        // search costs more in set-up than it saves.
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some((start, self.i));
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    /// Walks one value, recording the edits for listed members inside it.
    fn value(&mut self, cleanup: &Cleanup, edits: &mut Vec<Edit>) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(cleanup, edits),
            b'[' => {
                self.i += 1;
                self.skip_ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(cleanup, edits)?;
                    if self.separator(b']')? {
                        return Some(());
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                // A number or literal: runs to the next delimiter.
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    fn object(&mut self, cleanup: &Cleanup, edits: &mut Vec<Edit>) -> Option<()> {
        self.expect(b'{')?;
        // (key start, value end, removed) of each member.
        let mut members: Vec<(usize, usize, bool)> = Vec::new();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let (key_start, key_end) = self.string()?;
            let raw = self.b.get(key_start + 1..key_end - 1)?;
            // Most keys hold no escape: read in place; an escaped one is decoded first.
            let listed = if raw.contains(&b'\\') {
                let name: String = serde_json::from_slice(self.b.get(key_start..key_end)?).ok()?;
                cleanup.listed(&name)
            } else {
                cleanup.listed_bytes(raw)
            };
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let value_start = self.i;
            if listed {
                // Skip the value without recording edits inside it: it goes as a whole.
                self.value(cleanup, &mut Vec::new())?;
                if cleanup.mode == Mode::Mask {
                    edits.push((value_start, self.i, "\"***\""));
                }
            } else {
                self.value(cleanup, edits)?;
            }
            // Only removals need the members' spans.
            if cleanup.mode == Mode::Remove {
                members.push((key_start, self.i, listed));
            }
            if self.separator(b'}')? {
                break;
            }
        }
        // A removed member goes with the separator after it, up to the next member's key;
        // removed members after the last kept one go with the separator before them.
        let last_kept = members.iter().rposition(|m| !m.2);
        for (index, member) in members.iter().enumerate() {
            if !member.2 {
                continue;
            }
            match (last_kept, members.get(index + 1)) {
                (Some(kept), Some(next)) if index < kept => edits.push((member.0, next.0, "")),
                _ => {}
            }
        }
        let tail_start = match last_kept {
            Some(kept) => members.get(kept).map(|m| m.1),
            None => members.first().map(|m| m.0),
        };
        if let (Some(start), Some(last)) = (tail_start, members.last()) {
            if last.2 {
                edits.push((start, last.1, ""));
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod form_tests {
    use super::*;

    fn cleanup(mode: Mode) -> Cleanup {
        CleanupConfig {
            enabled: true,
            mode,
            fields: None,
        }
        .compile()
        .unwrap()
    }

    #[test]
    fn form_fields_are_masked_or_removed_and_the_rest_is_kept() {
        let body = b"token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&text=94070%20hi&tok%65n=x";
        assert_eq!(
            cleanup(Mode::Mask).apply_form(body).unwrap(),
            b"token=***&team_id=T0001&text=94070%20hi&tok%65n=***".to_vec()
        );
        assert_eq!(
            cleanup(Mode::Remove).apply_form(body).unwrap(),
            b"team_id=T0001&text=94070%20hi".to_vec()
        );
        assert_eq!(cleanup(Mode::Mask).apply_form(b"a=1&&b=2"), None);
    }

    #[test]
    fn json_inside_a_form_field_is_cleaned_and_encoded_again() {
        // Slack interactivity: the whole event is JSON in `payload=`, its `token` inside.
        let payload =
            r#"{"type":"block_actions","token":"gIkuvaNzQIHg97ATvDxqgjtO","user":{"id":"U1"}}"#;
        let encoded: String = form_urlencoded::byte_serialize(payload.as_bytes()).collect();
        let body = format!("payload={encoded}&x=1");
        let cleaned = cleanup(Mode::Mask).apply_form(body.as_bytes()).unwrap();
        let fields: Vec<(String, String)> = form_urlencoded::parse(&cleaned)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(fields[0].0, "payload");
        assert_eq!(
            fields[0].1,
            r#"{"type":"block_actions","token":"***","user":{"id":"U1"}}"#
        );
        assert_eq!(fields[1], ("x".into(), "1".into()));
        assert!(validate_form(&cleaned).is_ok());
        // JSON with nothing listed, and text that only looks like JSON, are left alone.
        for untouched in ["payload=%7B%22a%22%3A1%7D", "q=%7Bnot+json", "q={x"] {
            assert_eq!(
                cleanup(Mode::Mask).apply_form(untouched.as_bytes()),
                None,
                "{untouched}"
            );
        }
    }

    #[test]
    fn form_encoding_is_printable_ascii_with_well_formed_escapes() {
        assert!(validate_form(b"a=1&b=%20x+y&c=").is_ok());
        assert!(validate_form(b"").is_ok());
        for bad in [&b"a=%2"[..], b"a=%zz", b"a=1 b", b"a=\xc3\xa9", b"a=\n"] {
            assert!(validate_form(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn masks_at_any_depth_case_insensitively() {
        let c = CleanupConfig {
            enabled: true,
            mode: Mode::Mask,
            fields: None,
        }
        .compile()
        .unwrap();
        let body = br#"{"user": {"Password": "p", "name": "n"},
            "items": [{"api-key": "k"}, {"x": 1}], "token": {"nested": 1}}"#;
        let cleaned = c.apply(body).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(cleaned).unwrap(),
            r#"{"user": {"Password": "***", "name": "n"},
            "items": [{"api-key": "***"}, {"x": 1}], "token": "***"}"#
        );
    }

    #[test]
    fn removes_listed_fields_only() {
        let c = CleanupConfig {
            enabled: true,
            mode: Mode::Remove,
            fields: Some(vec!["pin".into()]),
        }
        .compile()
        .unwrap();
        let cleaned = c
            .apply(br#"{"pin": 1, "password": "kept: not listed", "a": [{"PIN": 2}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(cleaned).unwrap(),
            r#"{"password": "kept: not listed", "a": [{}]}"#
        );
        assert_eq!(c.apply(br#"{"a": 1}"#), Ok(None));
    }

    fn remove(fields: &[&str]) -> Cleanup {
        CleanupConfig {
            enabled: true,
            mode: Mode::Remove,
            fields: Some(fields.iter().map(|f| (*f).to_owned()).collect()),
        }
        .compile()
        .unwrap()
    }

    #[test]
    fn removal_keeps_the_object_well_formed_wherever_the_member_is() {
        let c = remove(&["x"]);
        for (body, expected) in [
            (r#"{"x":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"a":2,"x":1}"#, r#"{"a":2}"#),
            (r#"{"a":2,"x":1,"b":3}"#, r#"{"a":2,"b":3}"#),
            (r#"{"x":1}"#, r#"{}"#),
            (r#"{ "x" : 1 , "x":2 }"#, r#"{  }"#),
            (r#"{"a":1,"x":1,"x":2}"#, r#"{"a":1}"#),
            (r#"{"x":1,"x":2,"a":1}"#, r#"{"a":1}"#),
        ] {
            let cleaned = String::from_utf8(c.apply(body.as_bytes()).unwrap().unwrap()).unwrap();
            assert_eq!(cleaned, expected, "{body}");
        }
    }

    #[test]
    fn order_numbers_and_spacing_outside_the_masked_values_are_kept() {
        let c = CleanupConfig {
            enabled: true,
            mode: Mode::Mask,
            fields: None,
        }
        .compile()
        .unwrap();
        let body = "{\"z\": 1, \"big\": 12345678901234567890123, \"f\": 1.50,\n \"token\": \"t\\\"x\", \"a\": [1e3]}";
        let cleaned = String::from_utf8(c.apply(body.as_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(
            cleaned,
            "{\"z\": 1, \"big\": 12345678901234567890123, \"f\": 1.50,\n \"token\": \"***\", \"a\": [1e3]}"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\ ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop_oneof![
                Just("token".to_owned()),
                Just("Password".to_owned()),
                "[a-z]{1,3}"
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((keys, inner), 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn byte_cleaning_means_the_same_as_cleaning_the_parsed_value(
            value in json_value(), remove_mode in any::<bool>(), pretty in any::<bool>()
        ) {
            let c = CleanupConfig {
                enabled: true,
                mode: if remove_mode { Mode::Remove } else { Mode::Mask },
                fields: None,
            }
            .compile()
            .unwrap();
            let body = if pretty {
                serde_json::to_vec_pretty(&value).unwrap()
            } else {
                serde_json::to_vec(&value).unwrap()
            };
            let mut expected = value.clone();
            let changed = c.apply_value(&mut expected);
            match c.apply(&body).unwrap() {
                Some(cleaned) => {
                    prop_assert!(changed);
                    let parsed: Value = serde_json::from_slice(&cleaned).unwrap();
                    prop_assert_eq!(parsed, expected);
                }
                None => prop_assert!(!changed),
            }
        }
    }

    #[test]
    fn disabled_is_none() {
        assert!(CleanupConfig {
            enabled: false,
            mode: Mode::Mask,
            fields: None
        }
        .compile()
        .is_none());
    }
}
