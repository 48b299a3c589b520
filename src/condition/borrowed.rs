//! A JSON body read once for the conditions, borrowing from it: strings without escapes stay
//! slices of the body and objects are vectors of members, so reading one costs a parse and a
//! few allocations, not one per member (as `serde_json::Value` does).

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON value borrowed from the body.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in the order written; a name written twice counts as its last value (as
    /// `serde_json` reads it).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// The body as JSON (`None`: it is not JSON). Nesting is bounded by `serde_json`'s
    /// recursion limit.
    pub fn parse(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// The value at the unescaped reference tokens of a JSON pointer.
    pub fn at(&self, tokens: &[String]) -> Option<&Self> {
        let mut value = self;
        for token in tokens {
            value = match value {
                Json::Object(members) => members
                    .iter()
                    .rev()
                    .find(|(name, _)| name == token)
                    .map(|(_, v)| v)?,
                Json::Array(items) => items.get(array_index(token)?)?,
                _ => return None,
            };
        }
        Some(value)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// Equal to a JSON operand: numbers by value (`5` is `5.0`), objects whatever their
    /// members' order.
    pub fn equals(&self, operand: &Value) -> bool {
        match (self, operand) {
            (Json::Null, Value::Null) => true,
            (Json::Bool(a), Value::Bool(b)) => a == b,
            (Json::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Json::String(a), Value::String(b)) => a == b,
            (Json::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equals(y))
            }
            (Json::Object(_), Value::Object(b)) => {
                let names = self.distinct_names();
                names == b.len()
                    && b.iter().all(|(name, v)| {
                        self.at(std::slice::from_ref(name))
                            .is_some_and(|mine| mine.equals(v))
                    })
            }
            _ => false,
        }
    }

    fn distinct_names(&self) -> usize {
        match self {
            Json::Object(members) => members
                .iter()
                .enumerate()
                .filter(|(i, (name, _))| !members[i + 1..].iter().any(|(n, _)| n == name))
                .count(),
            _ => 0,
        }
    }

    /// As `serde_json` would write it (for `check --explain`).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// An array index as RFC 6901 writes it: `0`, or digits without a leading zero.
pub(super) fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// A member name, borrowed when it has no escape.
pub struct Name<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Names)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                // JSON text has no NaN or infinity; `from_f64` is `None` only for those.
                Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Json::String(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Json::String(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(Name(name)) = map.next_key()? {
                    members.push((name, map.next_value()?));
                }
                Ok(Json::Object(members))
            }
        }
        deserializer.deserialize_any(Values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn it_reads_as_serde_json_reads() {
        let body = br#"{"a":{"b":[1,"x\"y",{"c":null}]},"n":5,"n":6,"t":true,"e":"caf\u00e9"}"#;
        let mine = Json::parse(body).unwrap();
        let theirs: Value = serde_json::from_slice(body).unwrap();
        for pointer in [
            "", "/a", "/a/b", "/a/b/0", "/a/b/1", "/a/b/2/c", "/n", "/t", "/e",
        ] {
            let tokens: Vec<String> = pointer.split('/').skip(1).map(str::to_owned).collect();
            let expected = theirs.pointer(pointer).unwrap();
            let found = mine.at(&tokens).unwrap();
            assert!(found.equals(expected), "{pointer}: {found:?} vs {expected}");
            assert_eq!(&found.to_value(), expected, "{pointer}");
        }
        assert!(matches!(
            mine.at(&["a".into(), "b".into(), "1".into()]),
            Some(Json::String(Cow::Owned(_)))
        ));
        assert!(matches!(mine.at(&["t".into()]), Some(Json::Bool(true))));
        assert!(mine.at(&["a".into(), "b".into(), "01".into()]).is_none());
        assert!(Json::parse(b"{").is_none());
        assert!(Json::parse(b"[1]").unwrap().equals(&json!([1.0])));
        assert!(Json::parse(br#"{"x":1,"y":2}"#)
            .unwrap()
            .equals(&json!({"y": 2, "x": 1})));
        assert!(!Json::parse(br#"{"x":1}"#)
            .unwrap()
            .equals(&json!({"x": 1, "y": 2})));
    }
}
