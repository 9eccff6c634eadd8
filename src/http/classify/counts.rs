//! A body's `usage` read into its four counts, with no `Value` built: the map, its keys
//! and its numbers were about a third of the fast read's work (callgrind).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::body::Skip;
use super::tokens;
use crate::exec::Usage;

/// `usage`'s counts as [`usage_of`](super::usage_of) sees them in a `Value`: `None` for
/// a member that is absent, `Some(None)` for one present but not a `u64` (`"7"`, `-1`,
/// `1.5`), which still hides the other name of its count, as
/// `u.get(a).or_else(|| u.get(b))` does there. A repeated member keeps its last value.
#[derive(Debug, Default)]
pub(super) struct Counts {
    prompt: Option<Option<u64>>,
    completion: Option<Option<u64>>,
    input: Option<Option<u64>>,
    output: Option<Option<u64>>,
}

impl Counts {
    /// The usage they make: the OpenAI name first, else Anthropic's.
    pub fn usage(&self) -> Option<Usage> {
        tokens(
            self.prompt.or(self.input).flatten(),
            self.completion.or(self.output).flatten(),
        )
    }
}

/// A `usage` value of any JSON type: `Some` for an object, `None` for anything else
/// (`null`, an array…), which gives no usage, as `Value::get` on it gives nothing.
pub(super) struct UsageValue(pub Option<Counts>);

impl<'de> Deserialize<'de> for UsageValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UsageVisitor)
    }
}

/// Accepts every JSON value (through [`Skip`] when it is not an object), so that only a
/// body a `Value` would reject fails.
struct UsageVisitor;

/// The visits of a value that is not the one wanted (integers aside: a count wants them),
/// checked by [`Skip`] when it has members, then `$none`.
macro_rules! other_values {
    ($none:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($none)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Skip.visit_seq(seq).map(|_| $none)
        }
    };
}

impl<'de> Visitor<'de> for UsageVisitor {
    type Value = UsageValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    other_values!(UsageValue(None));

    fn visit_i64<E>(self, _: i64) -> Result<UsageValue, E> {
        Ok(UsageValue(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<UsageValue, E> {
        Ok(UsageValue(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageValue, A::Error> {
        let mut c = Counts::default();
        while let Some(key) = map.next_key::<CountKey>()? {
            let slot = match key {
                CountKey::Prompt => &mut c.prompt,
                CountKey::Completion => &mut c.completion,
                CountKey::Input => &mut c.input,
                CountKey::Output => &mut c.output,
                CountKey::Other => {
                    map.next_value::<Skip>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Count>()?.0);
        }
        Ok(UsageValue(Some(c)))
    }
}

/// The name of a member of `usage`.
enum CountKey {
    Prompt,
    Completion,
    Input,
    Output,
    Other,
}

impl<'de> Deserialize<'de> for CountKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(CountKeyVisitor)
    }
}

struct CountKeyVisitor;

impl Visitor<'_> for CountKeyVisitor {
    type Value = CountKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<CountKey, E> {
        Ok(match s {
            "prompt_tokens" => CountKey::Prompt,
            "completion_tokens" => CountKey::Completion,
            "input_tokens" => CountKey::Input,
            "output_tokens" => CountKey::Output,
            _ => CountKey::Other,
        })
    }
}

/// A count's value as `Value::as_u64` reads it: a non-negative integer that fits a `u64`,
/// else `None` (serde_json gives a negative integer as an `i64` and an integer past
/// `u64::MAX` as an `f64`; a `Value` of a non-negative `i64` is a `u64` too).
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    other_values!(Count(None));

    fn visit_i64<E>(self, n: i64) -> Result<Count, E> {
        Ok(Count(u64::try_from(n).ok()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
        Ok(Count(Some(n)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Count, A::Error> {
        Skip.visit_map(map).map(|_| Count(None))
    }
}
