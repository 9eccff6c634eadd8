//! Human-readable durations: `250ms`, `3s`, `1m30s`, `30d`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A span of time written the way people write it: one or more `<integer><unit>` pairs,
/// units `ms`, `s`, `m`, `h`, `d` (e.g. `250ms`, `3s`, `1m30s`, `30d`).
///
/// ```
/// use tollgate::policy::Duration;
/// let d: Duration = "1m30s".parse().unwrap();
/// assert_eq!(d.get(), std::time::Duration::from_secs(90));
/// assert_eq!(d.to_string(), "1m30s");
/// assert!("90".parse::<Duration>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}; expected an integer and a unit (ms, s, m, h, d), e.g. `250ms`, `3s`, `1m30s`")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl Duration {
    /// Wraps a standard duration.
    pub const fn new(d: std::time::Duration) -> Self {
        Duration(d)
    }
    /// The standard duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
    /// Milliseconds from seconds, for builders and tests.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    /// A duration in milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        // No trimming: the JSON Schema's pattern rejects surrounding spaces, and so do we.
        let s = input;
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total_ms: u64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(err("a number must come before each unit"));
            }
            let n: u64 = s[start..i]
                .parse()
                .map_err(|_| err("the number is too large"))?;
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[ustart..i];
            if unit.is_empty() {
                return Err(err("a unit is missing"));
            }
            let mult = UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| err("the unit is not one of ms, s, m, h, d"))?;
            total_ms = n
                .checked_mul(mult)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(|| err("it is too large"))?;
        }
        Ok(Duration(std::time::Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u128: a sum of policy durations may exceed u64 milliseconds.
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, mult) in UNITS {
            let mult = u128::from(mult);
            if ms >= mult {
                write!(f, "{}{}", ms / mult, unit)?;
                ms %= mult;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"3s\" or \"1m30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "A duration: one or more <integer><unit> pairs, units ms, s, m, h, d (e.g. \"250ms\", \"3s\", \"1m30s\", \"30d\").",
            "examples": ["250ms", "3s", "1m30s", "30d"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_and_units() {
        for (s, ms) in [
            ("250ms", 250),
            ("3s", 3000),
            ("1m30s", 90_000),
            ("30d", 2_592_000_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                s.parse::<Duration>().unwrap().get().as_millis() as u64,
                ms,
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_garbage_with_reason() {
        for (s, reason) in [
            ("", "empty"),
            ("3", "unit is missing"),
            ("s", "number must come"),
            ("3x", "not one of"),
            ("99999999999999999999s", "too large"),
            ("-1s", "number must come"),
            (" 3s", "number must come"),
            ("3s ", "number must come"),
        ] {
            let e = s.parse::<Duration>().unwrap_err().to_string();
            assert!(e.contains(reason), "{s}: {e}");
        }
    }

    #[test]
    fn display_of_durations_beyond_u64_milliseconds() {
        let max = Duration::new(std::time::Duration::MAX);
        // u64::MAX seconds and 999,999,999 ns: 213,503,982,334,601 days and change.
        assert_eq!(max.to_string(), "213503982334601d7h15s999ms");
        let big = Duration::new(std::time::Duration::from_millis(u64::MAX) * 6);
        assert!(big.to_string().starts_with("1281023894007d"), "{big}");
    }

    #[test]
    fn the_largest_durations_parse_or_fail_with_a_reason() {
        let max = "18446744073709551615ms".parse::<Duration>().unwrap();
        assert_eq!(max.get(), std::time::Duration::from_millis(u64::MAX));
        assert_eq!(max.to_string().parse::<Duration>().unwrap(), max);
        for s in [
            "18446744073709551615s",
            "99999999999999d",
            "213503982335d",
            "18446744073709551615ms1ms",
        ] {
            let e = s.parse::<Duration>().unwrap_err().to_string();
            assert!(e.contains("too large"), "{s}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["250ms", "3s", "1m30s", "30d", "1h1m1s1ms", "0s"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
    }
}
