//! Request bodies as JSON values, with duplicate keys refused.
//!
//! `serde_json` keeps the last of two equal keys. A body such as
//! `{"name": "a", "name": "MyToken"}` then means one thing to the ledger and
//! possibly another to a gateway or a log reader that keeps the first: a
//! parser differential. RFC 8259 leaves duplicates undefined, so a request
//! that has them is refused as malformed, at any depth.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parses `bytes` as one JSON value; a duplicate key in any object is an error.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = de.deserialize_any(StrictVisitor)?;
    de.end()?;
    Ok(value)
}

struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_json_reads_without_duplicates() {
        for text in [
            r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": "\u00e9"}"#,
            "[]",
            "0",
            r#""s""#,
            r#"{"n": 18446744073709551615, "m": -9223372036854775808}"#,
        ] {
            let strict = parse_strict(text.as_bytes()).unwrap();
            let loose: Value = serde_json::from_str(text).unwrap();
            assert_eq!(strict, loose, "{text}");
        }
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth_and_trailing_bytes() {
        for text in [
            r#"{"name": "a", "name": "b"}"#,
            r#"{"actor": {"agentId": "a", "agentId": "b"}}"#,
            r#"{"g": [{"id": 1, "id": 1}]}"#,
        ] {
            let err = parse_strict(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("duplicate key"), "{text}: {err}");
        }
        assert!(parse_strict(b"{} {}").is_err());
        assert!(parse_strict(b"{\"a\": 1,}").is_err());
    }
}
