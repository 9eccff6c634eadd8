//! What classification reads of a body: whether it is a JSON object, its `usage` and its
//! `error`, and nothing else.
//!
//! An upstream's answer is mostly `choices` (the whole completion); parsing it into a
//! [`Value`] only to look at two small fields cost the relay about 12.7k instructions a
//! request (callgrind, issue 12). [`Read::of`] reads `usage` into its counts
//! ([`Counts`](super::counts::Counts)) and `error` (rare, small) into a `Value`, and
//! checks the rest without keeping it; any body the fast reader does not take goes
//! through the old `Value` parse ([`Read::by_value`]), so every outcome is what it was.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::counts::UsageValue;
use super::usage_of;
use crate::exec::Usage;

/// What kind of JSON a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A JSON object.
    Object,
    /// JSON, but not an object (a string, an array…).
    OtherJson,
    /// Not JSON at all (HTML, cut short, invalid UTF-8…).
    NotJson,
}

/// A body as classification sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Read {
    pub shape: Shape,
    /// `usage`'s tokens, when the object has any.
    pub usage: Option<Usage>,
    /// The object's `error`, when present and not `null`.
    pub error: Option<Value>,
}

impl Read {
    /// The body read by the fast reader when it can, else by [`Read::by_value`].
    pub fn of(body: &[u8]) -> Read {
        Read::fast(body).unwrap_or_else(|| Read::by_value(body))
    }

    /// The typed read: only bodies that start with `{` and are valid UTF-8 (invalid
    /// UTF-8 is never JSON, and the `Value` path says so), and `None` on any error so
    /// that the `Value` path decides.
    fn fast(body: &[u8]) -> Option<Read> {
        let start = body.iter().position(|b| !b" \t\n\r".contains(b))?;
        if body[start] != b'{' {
            return None;
        }
        let text = std::str::from_utf8(body).ok()?;
        let fields: Fields = serde_json::from_str(text).ok()?;
        Some(Read {
            shape: Shape::Object,
            usage: fields.usage.and_then(|u| u.0).and_then(|c| c.usage()),
            error: fields.error.filter(|e| !e.is_null()),
        })
    }

    /// The reference read: the whole body as a [`Value`].
    pub fn by_value(body: &[u8]) -> Read {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut m)) => Read {
                shape: Shape::Object,
                usage: m.get("usage").and_then(usage_of),
                error: m.remove("error").filter(|e| !e.is_null()),
            },
            Ok(_) => Read {
                shape: Shape::OtherJson,
                usage: None,
                error: None,
            },
            Err(_) => Read {
                shape: Shape::NotJson,
                usage: None,
                error: None,
            },
        }
    }
}

/// A JSON object's `usage` (as counts) and `error` (`null` reads as `None`), every other
/// member checked and dropped. A repeated key keeps its last value, as a `Value` map does.
struct Fields {
    usage: Option<UsageValue>,
    error: Option<Value>,
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields {
            usage: None,
            error: None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Usage => fields.usage = Some(map.next_value()?),
                Key::Error => fields.error = map.next_value()?,
                Key::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A member's name, compared without being kept.
enum Key {
    Usage,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match s {
            "usage" => Key::Usage,
            "error" => Key::Error,
            _ => Key::Other,
        })
    }
}

/// Any JSON value, parsed as strictly as a [`Value`] is and kept nowhere.
///
/// Not [`serde::de::IgnoredAny`]: serde_json skips an ignored value without checking
/// it, so `1e400`, a lone `"\ud800"` or nesting past the 128-level limit would pass
/// there and fail as a `Value`, and the two reads would disagree. This goes through
/// `deserialize_any`, the call `Value` makes (same number parsing, escape checks and
/// depth limit); borrowed strings and numbers allocate nothing.
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Bodies both reads must agree on, the fast reader's refusals included.
    pub(in crate::http::classify) fn corpus() -> Vec<Vec<u8>> {
        let deep = |n: usize| format!(r#"{{"x":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        let mut bodies: Vec<Vec<u8>> = [
            r#"{"choices":[{"message":{"content":"hi \"there\" \u00e9"}}],"usage":{"prompt_tokens":12,"completion_tokens":30}}"#,
            r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#,
            r#"{"usage":{"prompt_tokens":4}}"#,
            r#"{"usage":{"prompt_tokens":"7","completion_tokens":-1}}"#,
            r#"{"usage":{"prompt_tokens":1.5}}"#,
            r#"{"usage":{"prompt_tokens":"7","input_tokens":3,"output_tokens":2}}"#,
            r#"{"usage":{"input_tokens":3,"prompt_tokens":null,"completion_tokens":{"a":1},"output_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":[1],"input_tokens":1,"completion_tokens":true}}"#,
            r#"{"usage":{"prompt_tokens":-0,"completion_tokens":0}}"#,
            r#"{"usage":{"prompt_tokens":5.0,"completion_tokens":1e2}}"#,
            r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551616}}"#,
            r#"{"usage":{"prompt_tokens":-9223372036854775808,"completion_tokens":-1e400}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":"x","output_tokens":4,"output_tokens":5}}"#,
            r#"{"usage":{"total_tokens":6,"details":{"cached_tokens":1,"x":[{}]}}}"#,
            r#"{"usage":{"prompt_tokens":1,"x":"\ud800"}}"#,
            r#"{"usage":{"prompt_tok\u0065ns":8}}"#,
            r#"{"usage":{}}"#,
            r#"{"usage":"lots"}"#,
            r#"{"usage":42}"#,
            r#"{"usage":true}"#,
            r#"{"usage":null}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":null}"#,
            r#"{"us\u0061ge":{"prompt_tokens":9}}"#,
            r#"{"error":null}"#,
            r#"{"error":"unavailable"}"#,
            r#"{"error":{"message":"boom","type":"server_error","code":null}}"#,
            r#"{"error":{"code":429,"retry_after":"2.5"}}"#,
            r#"{"error":{"message":"a"},"error":null}"#,
            r#"{"error":null,"error":{"message":"b"}}"#,
            r#"{"error":{"message":"x"},"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
            r#"{"x":{"y":[null,true,false,-0,1e10,{"z":"w"}]},"choices":[]}"#,
            r#"{"x":1e400}"#,
            r#"{"x":-1e400,"usage":{"prompt_tokens":1}}"#,
            r#"{"x":123456789012345678901234567890}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"x":"\ud83d\ude00"}"#,
            r#"{"\ud800":1}"#,
            r#"{"x":"\q"}"#,
            "{\"x\":\"tab\there\"}",
            r#"{"x":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} trailing"#,
            r#"{"a":1}{"b":2}"#,
            "  \n\t{\"usage\":{\"prompt_tokens\":2}}  \r\n",
            "\u{c}{}",
            r#"{"a":1"#,
            r#"{}"#,
            r#"{"#,
            r#"[]"#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
            r#""ok""#,
            "42",
            "null",
            "",
            "   ",
            "<html>Bad gateway</html>",
            "\u{FFFD}",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        bodies.push(b"{\"x\":\"\xff\"}".to_vec());
        bodies.push(b"{\"usage\":{\"prompt_tokens\":1},\"x\":\"\xc3\"}".to_vec());
        bodies.push(b"{\"x\":1}\xff".to_vec());
        bodies.push(b"\xef\xbb\xbf{}".to_vec());
        bodies.push(b"\x00\x01binary\xff".to_vec());
        for n in [100, 126, 127, 128, 200] {
            bodies.push(deep(n).into_bytes());
        }
        bodies
    }

    #[test]
    fn the_fast_read_agrees_with_the_value_read() {
        for body in corpus() {
            let name = String::from_utf8_lossy(&body);
            assert_eq!(Read::of(&body), Read::by_value(&body), "{name}");
        }
    }

    #[test]
    fn the_fast_read_takes_ordinary_answers() {
        let answer = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;
        let r = Read::fast(answer).expect("an ordinary answer is read fast");
        assert_eq!(
            r.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((2, 3))
        );
        assert_eq!(r.error, None);
        let odd = [
            r#"{"usage":{"prompt_tokens":"7","input_tokens":3},"usage":null}"#,
            r#"{"usage":[1],"error":null,"x":{"y":[1.5,-2,"z"]}}"#,
            r#"{"error":"unavailable","error":{"code":1}}"#,
        ];
        for body in odd {
            assert!(Read::fast(body.as_bytes()).is_some(), "{body}");
        }
        assert_eq!(Read::fast(b"[]"), None);
        assert_eq!(Read::fast(br#"{"x":1e400}"#), None);
        assert_eq!(Read::fast(b"{\"x\":\"\xff\"}"), None);
    }

    #[test]
    fn ignored_any_would_be_too_lenient() {
        // Why `Skip` exists: serde_json's `IgnoredAny` accepts what a `Value` rejects.
        for body in [r#"{"x":1e400}"#, r#"{"x":"\ud800"}"#] {
            assert!(
                serde_json::from_str::<de::IgnoredAny>(body).is_ok(),
                "{body}"
            );
            assert!(serde_json::from_str::<Value>(body).is_err(), "{body}");
            assert!(serde_json::from_str::<Skip>(body).is_err(), "{body}");
        }
    }
}
