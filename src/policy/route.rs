//! `[[routes]]`: which requests go where. The first route whose `when` matches wins.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize};

use super::{Duration, Timeouts};

/// A route: a matcher, a strategy and its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in budgets, reroutes, metrics and errors.
    pub name: String,
    /// Which requests this route takes; none means all (a catch-all, which must come last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// How a target is chosen (default `failover`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Models to call: names, or `{ model = "...", weight = 1.0 }`.
    pub targets: Vec<Target>,
    /// Failure classes that may move a request to the next target once its retries on one
    /// target are spent (default `["connect", "timeout", "429", "5xx", "breaker_open", "limited",
    /// "context_length"]`). A bad request or a content refusal is not cured by another provider
    /// unless listed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_on: Option<Vec<String>>,
    /// Race a second attempt on the next target when the first is slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<Hedge>,
    /// Name of the `[retry.NAME]` policy for this route (default: `defaults.retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Name of a `[breakers.NAME]` policy replacing the upstreams' breakers for this route's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Timeouts for this route, overriding upstream and default timeouts field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Timeouts for streamed responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<Streaming>,
}

/// How a route picks among its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// In the order written; the next on failure.
    #[default]
    Failover,
    /// At random, in proportion to `weight`.
    Weighted,
    /// Lowest estimated cost first (needs a price on every target).
    Cheapest,
    /// Lowest recent latency (EWMA) first.
    LowestLatency,
    /// Fewest calls in flight first.
    LeastBusy,
}

impl Strategy {
    /// The name as written in a policy.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Failover => "failover",
            Strategy::Weighted => "weighted",
            Strategy::Cheapest => "cheapest",
            Strategy::LowestLatency => "lowest-latency",
            Strategy::LeastBusy => "least-busy",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A route target: a model name, optionally weighted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// Name of a `[models.NAME]`.
    pub model: String,
    /// Relative weight for `weighted` routes (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WeightedTarget")]
/// A model with a weight.
struct TargetTable {
    /// Name of a `[models.NAME]`.
    model: String,
    /// Relative weight for `weighted` routes (default 1.0); must be positive.
    #[serde(default)]
    weight: Option<f64>,
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model name or a table `{ model = \"...\", weight = 1.0 }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Target, E> {
                Ok(Target {
                    model: v.to_string(),
                    weight: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                let t = TargetTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Target {
                    model: t.model,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Target {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let table = g.subschema_for::<TargetTable>();
        schemars::json_schema!({
            "description": "A model name, or `{ model = \"...\", weight = 1.0 }`.",
            "anyOf": [{ "type": "string" }, table]
        })
    }
}

/// A matcher over request attributes.
///
/// Either a test of one attribute (`attr` plus exactly one of `eq`, `one_of`, `gt`, `gte`,
/// `lt`, `lte`, `contains_any`, `exists`), or a combination (`any`, `all`, `not`).
/// Attributes: `model`, `task`, `max_tokens`, `input_tokens`, `prompt`, `tags`, `caller`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The request attribute tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<String>,
    /// Equal to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Scalar>,
    /// Equal to one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Scalar>>,
    /// Numeric attribute greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Numeric attribute greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Numeric attribute less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Numeric attribute less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// Text attribute containing any of these words (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_any: Option<Vec<String>>,
    /// With `contains_any`: how many distinct words must be present (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_hits: Option<u32>,
    /// The attribute is present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// Matches when any of these match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<Condition>>,
    /// Matches when all of these match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<Condition>>,
    /// Matches when this does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<Condition>>,
}

/// A literal compared against an attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A string.
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Hedged requests: after `after`, up to `max_extra` more attempts race the first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hedge {
    /// Delay before each extra attempt starts.
    pub after: Duration,
    /// Most extra attempts racing the first (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_extra: Option<u32>,
}

/// Timeouts for streamed responses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Streaming {
    /// Longest wait for the first byte of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<Duration>,
    /// Longest gap between two chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_chunk: Option<Duration>,
}
