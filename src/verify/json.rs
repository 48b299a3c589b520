//! Strict JSON for `data_type: json`: what strict consumers accept, checked without building a
//! tree.
//!
//! serde_json skips strings it is told to ignore without decoding them, so invalid UTF-8 and
//! lone surrogate escapes (`"\ud800"`) pass an `IgnoredAny` parse, and consumers such as Kafka
//! Connect or Postgres `jsonb` then reject what Switchyard acknowledged. This walk asks for every
//! string and key as `str`, which makes serde_json decode and check it; strings without escapes
//! are borrowed, so the cost stays close to a plain skip.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// `Ok` when `body` is one JSON value in valid UTF-8 with no lone surrogates.
pub fn validate(body: &[u8]) -> Result<(), String> {
    // Invalid UTF-8 between tokens or inside strings is refused here in one pass.
    let text = std::str::from_utf8(body).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {} (JSON must be UTF-8)",
            e.valid_up_to()
        )
    })?;
    // Always the decoding parse: serde's skip parse has no nesting limit and no number range
    // check, and strings without escapes are borrowed, so this costs about the same.
    serde_json::from_str::<Strict>(text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A JSON value whose strings have all been decoded (and so checked).
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_key::<Strict>()?.is_some() {
            map.next_value::<Strict>()?;
        }
        Ok(Strict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_json_with_escapes_and_pairs() {
        for ok in [
            &br#"{"k":"v","n":[1,-2.5e3,true,null,{}]}"#[..],
            br#"{"emoji":"\ud83d\ude00","nl":"a\nb","u":"\u00e9"}"#,
            "{\"raw\":\"\u{e9}\u{1F600}\"}".as_bytes(),
            b"  [ ]  ",
        ] {
            assert!(validate(ok).is_ok(), "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn refuses_deep_nesting_and_numbers_out_of_range_with_or_without_escapes() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for bad in [deep.as_str(), r#"{"a":1e400}"#, r#"{"a":"\n","b":1e400}"#] {
            assert!(validate(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_invalid_utf8_and_lone_surrogates() {
        for bad in [
            &b"{\"k\":\"\xff\"}"[..],
            b"{\"\xc3\":1}",
            br#"{"k":"\ud800"}"#,
            br#"{"k":"\udc00x"}"#,
            br#"{"\ud800":1}"#,
            br#"["\ud800\u0041"]"#,
            b"{\"k\":1} trailing",
            b"",
        ] {
            let err = validate(bad).unwrap_err();
            assert!(!err.is_empty(), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let full = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
            prop_assert_eq!(validate(&bytes).is_ok(), full.is_some());
        }
    }
}
