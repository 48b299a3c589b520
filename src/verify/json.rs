//! Strict JSON for `data_type: json`: what strict consumers accept, checked without building a
//! tree.
//!
//! serde_json skips strings it is told to ignore without decoding them, so invalid UTF-8 and
//! lone surrogate escapes (`"\ud800"`) pass an `IgnoredAny` parse, and consumers such as Kafka
//! Connect or Postgres `jsonb` then reject what Switchyard acknowledged. This walk asks for every
//! string and key as `str`, which makes serde_json decode and check it; strings without escapes
//! are borrowed, so the cost stays close to a plain skip.

use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::condition::{Json, Name, Pointers};

/// `Ok` when `body` is one JSON value in valid UTF-8 with no lone surrogates.
pub fn validate(body: &[u8]) -> Result<(), String> {
    read(body, &Pointers::default()).map(drop)
}

/// [`validate`], keeping the parts of the body that `wanted` names (`None` when it names
/// none): the conditions then read them without a second parse. What is kept reads, at every
/// pointer of `wanted`, as the whole body read into a [`Json`] would.
pub fn read<'a>(body: &'a [u8], wanted: &Pointers) -> Result<Option<Json<'a>>, String> {
    // Invalid UTF-8 between tokens or inside strings is refused here in one pass.
    let text = std::str::from_utf8(body).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {} (JSON must be UTF-8)",
            e.valid_up_to()
        )
    })?;
    // Always the decoding parse: serde's skip parse has no nesting limit and no number range
    // check, and strings without escapes are borrowed, so this costs about the same.
    if wanted.is_empty() {
        return serde_json::from_str::<Strict>(text)
            .map(|_| None)
            .map_err(|e| e.to_string());
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let kept = Keep(wanted)
        .deserialize(&mut deserializer)
        .and_then(|kept| deserializer.end().map(|()| kept))
        .map_err(|e| e.to_string())?;
    Ok(Some(kept))
}

/// Reads a value strictly, keeping what its [`Pointers`] name: the whole value, or the named
/// members and elements (skipped elements before the last named one are kept as `null`, so
/// that indices still count).
struct Keep<'w>(&'w Pointers);

impl<'de> DeserializeSeed<'de> for Keep<'_> {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        if self.0.whole() {
            Json::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Keep<'_> {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // A scalar where members are named: no pointer finds anything below it.
    fn visit_bool<E>(self, _: bool) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let last = self.0.last_element();
        let mut items = Vec::new();
        for index in 0.. {
            let kept = match self.0.element(index) {
                Some(below) => seq.next_element_seed(Keep(below))?,
                None => seq.next_element::<Strict>()?.map(|Strict| Json::Null),
            };
            let Some(kept) = kept else { break };
            if last.is_some_and(|last| index <= last) {
                items.push(kept);
            }
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(Name(name)) = map.next_key()? {
            match self.0.member(&name) {
                Some(below) => {
                    let value = map.next_value_seed(Keep(below))?;
                    members.push((name, value));
                }
                None => {
                    map.next_value::<Strict>()?;
                }
            }
        }
        Ok(Json::Object(members))
    }
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

    /// Unescaped reference tokens of a pointer.
    fn tokens(pointer: &str) -> Vec<String> {
        pointer.split('/').skip(1).map(str::to_owned).collect()
    }

    /// Some JSON: nested objects and arrays over a few names, so pointers often hit.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-c\\n\"é]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec(("[a-c]", inner), 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn pointer() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["[a-c]", "[0-3]", Just("01".to_owned())], 0..4)
            .prop_map(|t| t.iter().map(|t| format!("/{t}")).collect())
    }

    #[test]
    fn keeps_what_is_named_and_refuses_what_validate_refuses() {
        let body = br#"{"a":{"b":[1,{"c":"x"},3],"skip":{"deep":[1,2]}},"n":5,"a":{"b":[9]}}"#;
        let mut wanted = Pointers::default();
        wanted.add(&tokens("/a/b/1/c"));
        wanted.add(&tokens("/n"));
        let kept = read(body, &wanted).unwrap().unwrap();
        let full = Json::parse(body).unwrap();
        for pointer in ["/a/b/1/c", "/n", "/a/b/1"] {
            assert_eq!(
                kept.at(&tokens(pointer)),
                full.at(&tokens(pointer)),
                "{pointer}"
            );
        }
        // Nothing else was kept: the skipped member is gone, the element after is not read.
        assert_eq!(kept.at(&tokens("/a/skip")), None);
        assert_eq!(read(b"{}", &Pointers::default()), Ok(None));
        for bad in [
            &br#"{"a":1e400}"#[..],
            br#"{"n":"\ud800"}"#,
            b"{\"n\":1} x",
            b"[1,",
        ] {
            assert!(
                read(bad, &wanted).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn what_is_kept_reads_as_the_whole_body_at_every_named_pointer(
            value in json(),
            pointers in proptest::collection::vec(pointer(), 1..5),
            probes in proptest::collection::vec(pointer(), 0..5),
        ) {
            let body = value.to_string();
            let mut wanted = Pointers::default();
            for p in &pointers {
                wanted.add(&tokens(p));
            }
            let kept = read(body.as_bytes(), &wanted).unwrap().unwrap();
            let full = Json::parse(body.as_bytes()).unwrap();
            for p in &pointers {
                prop_assert_eq!(kept.at(&tokens(p)), full.at(&tokens(p)), "{}", p);
            }
            // A pointer not named may read nothing, or a container kept in part, but never
            // another scalar.
            for p in &probes {
                if let Some(found) = kept.at(&tokens(p)) {
                    if !matches!(found, Json::Null | Json::Array(_) | Json::Object(_)) {
                        prop_assert_eq!(Some(found), full.at(&tokens(p)), "{}", p);
                    }
                }
            }
        }

        #[test]
        fn keeping_refuses_exactly_what_validate_refuses(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            pointers in proptest::collection::vec(pointer(), 1..3),
        ) {
            let mut wanted = Pointers::default();
            for p in &pointers {
                wanted.add(&tokens(p));
            }
            prop_assert_eq!(read(&bytes, &wanted).is_ok(), validate(&bytes).is_ok());
        }

        #[test]
        fn agrees_with_a_full_parse_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let full = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
            prop_assert_eq!(validate(&bytes).is_ok(), full.is_some());
        }
    }
}
