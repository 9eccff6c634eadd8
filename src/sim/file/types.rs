//! The scenario file's shape: serde + schemars types, every table denying unknown keys.
//! `docs/scenario.md` documents each key (`tests/docs.rs` keeps the two in step) and
//! `schemas/scenario.schema.json` is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{Duration, Price};

/// A scenario: what a day (or a month) looks like to a policy, run by `tollgate simulate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tollgate scenario")]
pub struct ScenarioFile {
    /// How long the traffic runs, in simulated time (e.g. `2h`, `30d`).
    pub duration: Duration,
    /// Seed every random choice derives from (`--seed` overrides it); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Width of one interval of the report's time series; default: the duration / 120,
    /// at least `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Duration>,
    /// A model of the policy whose prices the savings are computed against (default: the
    /// policy's own `baseline_model`, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_model: Option<String>,
    /// Who calls, when, with what.
    #[serde(default)]
    pub traffic: TrafficFile,
    /// How upstreams of the policy behave, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstreams: BTreeMap<String, Script>,
    /// How models of the policy behave, by name (a model's script wins over its
    /// upstream's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Script>,
    /// Things that happen at a time: reloads, price changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventFile>,
    /// Gates: `tollgate simulate` exits 1 when one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// Arrivals (rates add up) and the mix of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficFile {
    /// A constant arrival rate over the whole duration, requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Rates going linearly from `start` to `end` over `[from, to)`, added to the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramps: Vec<Ramp>,
    /// A daily curve, added to the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Daily>,
    /// Requests arriving all at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bursts: Vec<BurstFile>,
    /// Kinds of requests, each drawn by its weight; none: requests with no attributes
    /// and 1–200 prompt words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestTemplate>,
}

/// A linear ramp of the arrival rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// Start of the ramp.
    pub from: Duration,
    /// End of the ramp.
    pub to: Duration,
    /// Rate at `from`, requests per second.
    pub start: f64,
    /// Rate at `to`, requests per second.
    pub end: f64,
}

/// A rate following the day: `min` at the trough, `max` at `peak`, a cosine between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Daily {
    /// Rate at the trough, requests per second.
    pub min: f64,
    /// Rate at the peak, requests per second.
    pub max: f64,
    /// Time of day of the peak (from the start of the run, modulo a day); default `14h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<Duration>,
}

/// Requests arriving together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstFile {
    /// When.
    pub at: Duration,
    /// How many.
    pub count: u32,
}

/// One kind of request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTemplate {
    /// Relative weight; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The `model` the request asks for (a model, a route, or a name a route's `when`
    /// tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its `task` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Its caller: a `[callers.NAME]` of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// Words every prompt contains (what `prompt` conditions match on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Filler words added to the prompt, uniform in `[low, high]`; default `[1, 200]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_words: Option<[u32; 2]>,
    /// `max_tokens`, uniform in `[low, high]`; default: not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<[u64; 2]>,
    /// Counted input tokens, uniform in `[low, high]`; default: estimated from the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<[u64; 2]>,
    /// Share of these requests that are streamed, 0–1; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<f64>,
}

/// Latency of an answer (a stream: of its first byte), log-normal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile (at least `p50`).
    pub p99: Duration,
}

/// Shares of calls failing in each way, 0–1, summing to at most 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failures {
    /// Connection refused.
    #[serde(default)]
    pub connect: f64,
    /// No answer: the call hangs past the per-try timeout.
    #[serde(default)]
    pub timeout: f64,
    /// 500, 502 or 503.
    #[serde(default)]
    pub server_error: f64,
    /// 429 (with `retry_after` when set).
    #[serde(default)]
    pub rate_limited: f64,
    /// 400 (`invalid_request_error` or `context_length_exceeded`).
    #[serde(default)]
    pub bad_request: f64,
    /// A 200 whose body is malformed or cut short.
    #[serde(default)]
    pub malformed: f64,
}

/// `x-ratelimit-remaining` and `-reset` sent with every answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitHeaders {
    /// Requests left.
    pub remaining: u64,
    /// Time until the window resets.
    pub reset: Duration,
}

/// Some calls are slow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slow {
    /// Share of calls, 0–1.
    pub share: f64,
    /// Time added to their latency.
    pub extra: Duration,
}

/// An outage over `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// Start.
    pub from: Duration,
    /// End.
    pub to: Duration,
    /// Share of calls that fail, 0–1; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// The HTTP status they fail with (e.g. 503); default: the connection is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// A storm of 429s over `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Storm {
    /// Start.
    pub from: Duration,
    /// End.
    pub to: Duration,
    /// Share of calls answered 429, 0–1; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// The `Retry-After` they carry (whole seconds); default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
}

/// Declares a struct with the behaviour keys (what an upstream does), plus its own.
macro_rules! with_behaviour {
    ($(#[$meta:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
            /// Latency of an answer (a stream: its first byte); default: 5–50 ms, uniform.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub latency: Option<Latency>,
            /// Shares of calls failing, by class; default: none fail.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub failures: Option<Failures>,
            /// `Retry-After` of the 429s of `failures.rate_limited` (whole seconds).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub retry_after: Option<Duration>,
            /// Rate-limit headers sent with every answer.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub rate_limit: Option<RateLimitHeaders>,
            /// Slow calls.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub slow: Option<Slow>,
            /// Share of streams cut after their first byte, 0–1.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub stream_cut: Option<f64>,
            /// Reported usage as a multiple of the estimate (input) and of `max_tokens`
            /// (output); default 1.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub usage: Option<f64>,
        }

        impl $name {
            /// The behaviour keys alone.
            pub fn behaviour(&self) -> Behaviour {
                Behaviour {
                    latency: self.latency,
                    failures: self.failures,
                    retry_after: self.retry_after,
                    rate_limit: self.rate_limit,
                    slow: self.slow,
                    stream_cut: self.stream_cut,
                    usage: self.usage,
                }
            }
        }
    };
}

/// What an upstream does, every key optional (a change sets only the keys it names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// See [`Script::latency`].
    pub latency: Option<Latency>,
    /// See [`Script::failures`].
    pub failures: Option<Failures>,
    /// See [`Script::retry_after`].
    pub retry_after: Option<Duration>,
    /// See [`Script::rate_limit`].
    pub rate_limit: Option<RateLimitHeaders>,
    /// See [`Script::slow`].
    pub slow: Option<Slow>,
    /// See [`Script::stream_cut`].
    pub stream_cut: Option<f64>,
    /// See [`Script::usage`].
    pub usage: Option<f64>,
}

impl Behaviour {
    /// `self` with the keys `later` sets replaced.
    pub fn then(&self, later: &Behaviour) -> Behaviour {
        Behaviour {
            latency: later.latency.or(self.latency),
            failures: later.failures.or(self.failures),
            retry_after: later.retry_after.or(self.retry_after),
            rate_limit: later.rate_limit.or(self.rate_limit),
            slow: later.slow.or(self.slow),
            stream_cut: later.stream_cut.or(self.stream_cut),
            usage: later.usage.or(self.usage),
        }
    }
}

with_behaviour! {
    /// How one upstream or model behaves: its behaviour from the start, then changes,
    /// outages and 429 storms over time.
    Script {
        /// Outages.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outages: Vec<Outage>,
        /// 429 storms.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        storms: Vec<Storm>,
        /// Behaviour from a time on: the keys a change sets replace the earlier ones.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changes: Vec<Change>,
    }
}

with_behaviour! {
    /// Behaviour from `at` on.
    Change {
        /// When it starts.
        at: Duration,
    }
}

/// Something that happens at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventFile {
    /// When.
    pub at: Duration,
    /// A hot reload to this policy (a file or directory, relative to the scenario file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<String>,
    /// New prices of models, by name (a reload of the policy in force with these prices).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
}

/// Gates on the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Least share of requests served, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success: Option<f64>,
    /// Most total cost, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Longest 99th-percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<Duration>,
    /// Most attempts per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amplification: Option<f64>,
}
