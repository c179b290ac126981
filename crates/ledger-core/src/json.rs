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

/// The text of a serde error without the value it quotes.
///
/// serde names the offending value (`invalid type: string "…", expected
/// …`), and that value may be a secret sent where it does not belong (an
/// `accessToken` as a number, a whole body that is one string). Errors go
/// into replies, logs and audit reports, so they keep the kind of value
/// and what was expected, never the value itself.
pub fn error_text(e: &serde_json::Error) -> String {
    redact(&e.to_string())
}

/// [`error_text`] of any serde message.
pub fn redact(text: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(rest) = text.strip_prefix(prefix) else {
            continue;
        };
        // serde writes the value first and what it expected last, so the
        // last ", expected" is serde's own, whatever the value holds.
        let (value, tail) = rest
            .rfind(", expected")
            .map_or((rest, ""), |at| rest.split_at(at));
        let Some(quote) = value.find(['"', '`', '\'']) else {
            // A kind without a value (`map`, `sequence`).
            return text.to_owned();
        };
        let kind = value[..quote].trim_end();
        let head = prefix.trim_end();
        return if kind.is_empty() {
            format!("{head}{tail}")
        } else {
            format!("{head} {kind}{tail}")
        };
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn errors_name_the_kind_of_value_never_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            secret: String,
            kind: Kind,
            n: u8,
        }
        #[derive(Debug, serde::Deserialize)]
        enum Kind {
            A,
        }
        let secret = "ya29.s3cret, expected `x`";
        for (text, kept) in [
            (
                json!(secret).to_string(),
                "invalid type: string, expected struct Body",
            ),
            (
                json!({"secret": 5150_u64, "kind": "A", "n": 1}).to_string(),
                "invalid type: integer, expected a string",
            ),
            (
                json!({"secret": "s", "kind": secret, "n": 1}).to_string(),
                "unknown variant, expected `A`",
            ),
            (
                json!({"secret": "s", "kind": "A", "n": 5150}).to_string(),
                "invalid value: integer, expected u8",
            ),
            (
                json!({"secret": true, "kind": "A", "n": 1}).to_string(),
                "invalid type: boolean, expected a string",
            ),
            (
                json!({"secret": 51.5, "kind": "A", "n": 1}).to_string(),
                "invalid type: floating point, expected a string",
            ),
        ] {
            let e = serde_json::from_str::<Body>(&text).unwrap_err();
            let shown = error_text(&e);
            assert!(shown.starts_with(kept), "{text}: {shown} (serde: {e})");
            for leak in ["ya29", "5150", "51.5", "true"] {
                assert!(!shown.contains(leak), "{text}: {shown}");
            }
        }
        // Messages that quote no value are left as they are.
        let e = serde_json::from_str::<Body>("[]").unwrap_err();
        assert_eq!(error_text(&e), e.to_string());
        let e = serde_json::from_str::<Body>("{\"secret\": {}}").unwrap_err();
        assert_eq!(error_text(&e), e.to_string());
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
