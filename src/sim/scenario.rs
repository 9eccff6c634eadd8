//! What a simulation runs: a policy, scripted upstreams and traffic, all plain data
//! (serde, so a scenario is a file that can be replayed).

use serde::{Deserialize, Serialize};

/// One simulated run. Everything random in it is drawn from `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// The one seed every random choice derives from (the executor's too).
    pub seed: u64,
    /// The policy, as TOML text.
    pub policy: String,
    /// A hot reload during the run, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<Reload>,
    /// How each upstream (or model) behaves over time. Upstreams with no script answer
    /// at once with the usage asked for.
    #[serde(default)]
    pub upstreams: Vec<UpstreamScript>,
    /// Who calls, when, with what.
    pub traffic: Traffic,
    /// The shared-state backend behind `state = "shared"` (the policy's `[state.redis]`),
    /// simulated; `None`: no backend (shared entities act as local ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedScript>,
}

/// How the simulated shared-state backend behaves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedScript {
    /// Round-trip time, uniform in this range, ms.
    #[serde(default)]
    pub latency_ms: (u64, u64),
    /// Share of calls that fail.
    #[serde(default)]
    pub fail: f64,
    /// Share of settlements (budget adjustments, token reconciliations) that fail too.
    #[serde(default)]
    pub lose_settlements: f64,
    /// Intervals `[from_ms, to_ms)` during which every call fails.
    #[serde(default)]
    pub down: Vec<(u64, u64)>,
}

/// Swaps in another policy at a virtual time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reload {
    /// When, in virtual milliseconds from the start.
    pub at_ms: u64,
    /// The new policy, as TOML text.
    pub policy: String,
}

/// How one upstream, or one model, behaves: phases, each from its start time until the
/// next one's. A script naming a model wins over its upstream's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamScript {
    /// An upstream or model name of the policy.
    pub name: String,
    /// Phases, in order of `from_ms`.
    pub phases: Vec<Phase>,
}

/// Behaviour from `from_ms` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Start of the phase, virtual milliseconds.
    #[serde(default)]
    pub from_ms: u64,
    /// Every call fails to connect (an outage).
    #[serde(default)]
    pub outage: bool,
    /// Latency of an answer (to its first byte for a stream), uniform in this range, ms.
    #[serde(default = "default_latency")]
    pub latency_ms: (u64, u64),
    /// Share of calls that are slow, and how slow (ms).
    #[serde(default)]
    pub slow: Option<(f64, u64)>,
    /// Failure classes and their shares of calls.
    #[serde(default)]
    pub faults: Faults,
    /// `x-ratelimit-remaining` / `-reset` (ms) reported with every answer.
    #[serde(default)]
    pub rate_limit: Option<(u64, u64)>,
    /// Reported usage as a multiple of the request's estimate (input) and `max_tokens`
    /// (output); above 1 the estimate was too low.
    #[serde(default = "one")]
    pub usage_factor: f64,
    /// Share of streams that break after their first byte.
    #[serde(default)]
    pub stream_break: f64,
    /// How long a stream runs after its first byte, ms.
    #[serde(default = "default_stream")]
    pub stream_ms: (u64, u64),
    /// Latency drawn log-normally with this median and 99th percentile, ms, instead of
    /// uniformly from `latency_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_p99: Option<(u64, u64)>,
    /// A partial outage: this share of calls fails at once, with this status (`None`:
    /// connection refused), before any other fault is drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_outage: Option<(f64, Option<u16>)>,
}

fn default_latency() -> (u64, u64) {
    (5, 50)
}

fn default_stream() -> (u64, u64) {
    (10, 200)
}

fn one() -> f64 {
    1.0
}

impl Default for Phase {
    fn default() -> Self {
        Phase {
            from_ms: 0,
            outage: false,
            latency_ms: default_latency(),
            slow: None,
            faults: Faults::default(),
            rate_limit: None,
            usage_factor: 1.0,
            stream_break: 0.0,
            stream_ms: default_stream(),
            latency_p50_p99: None,
            partial_outage: None,
        }
    }
}

/// Shares of calls failing in each way (the rest succeed). Each failure is the
/// [`Failure`](crate::exec::Failure) the HTTP classifier would produce for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Connection refused.
    #[serde(default)]
    pub connect: f64,
    /// No answer: the call sleeps past any per-try timeout.
    #[serde(default)]
    pub timeout: f64,
    /// 500/502/503.
    #[serde(default)]
    pub server_error: f64,
    /// 429, with this `Retry-After` in seconds when set.
    #[serde(default)]
    pub rate_limited: f64,
    /// `Retry-After` of a 429, seconds.
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// 400 with an error-body code (`invalid_request_error`, `context_length_exceeded`).
    #[serde(default)]
    pub bad_request: f64,
    /// A 200 whose body is malformed or truncated (the classifier's 502
    /// `invalid_upstream_response`).
    #[serde(default)]
    pub malformed: f64,
    /// Failures that still bill their tokens (share of failed responses).
    #[serde(default)]
    pub billed: f64,
}

/// Arrivals and the mix of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Most requests in the run.
    pub max_requests: u32,
    /// Arrival segments: a constant or ramping rate over an interval.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Bursts: `count` requests at once at `at_ms`.
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// What the requests look like.
    #[serde(default)]
    pub mix: Mix,
    /// A weighted choice of mixes: when not empty, each request is drawn from one of these
    /// (picked by weight) instead of from `mix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
}

/// One kind of request and how often it comes, relative to the other templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Relative weight (not negative).
    pub weight: f64,
    /// What these requests look like.
    pub mix: Mix,
}

/// Poisson arrivals whose rate goes linearly from `start_per_s` to `end_per_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, virtual ms.
    pub from_ms: u64,
    /// End, virtual ms.
    pub to_ms: u64,
    /// Rate at the start, requests per second.
    pub start_per_s: f64,
    /// Rate at the end, requests per second.
    pub end_per_s: f64,
}

/// Requests arriving together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// When, virtual ms.
    pub at_ms: u64,
    /// How many.
    pub count: u32,
}

/// The attributes of requests, drawn per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// Model (or route) names asked for; empty: none set.
    #[serde(default)]
    pub models: Vec<String>,
    /// Task labels; empty: none set.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Caller names; empty: none set.
    #[serde(default)]
    pub callers: Vec<String>,
    /// Prompt length in words, uniform in this range.
    #[serde(default = "default_words")]
    pub prompt_words: (u32, u32),
    /// `max_tokens`, uniform in this range; `None`: not set.
    #[serde(default)]
    pub max_tokens: Option<(u64, u64)>,
    /// Share of requests that count their input tokens (uniform in the prompt's range × 2).
    #[serde(default)]
    pub counted_input: f64,
    /// Share of requests that are streamed.
    #[serde(default)]
    pub stream_share: f64,
    /// Share of callers that give up early (drop the future), and after how long (ms).
    #[serde(default)]
    pub cancel: Option<(f64, (u64, u64))>,
    /// Share of attempts whose operation panics.
    #[serde(default)]
    pub panic_share: f64,
    /// Words appended to every prompt (what `prompt` conditions match on).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keywords: String,
    /// Counted input tokens, uniform in this range, for every request (wins over
    /// `counted_input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<(u64, u64)>,
}

fn default_words() -> (u32, u32) {
    (1, 200)
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            models: Vec::new(),
            tasks: Vec::new(),
            callers: Vec::new(),
            prompt_words: default_words(),
            max_tokens: None,
            counted_input: 0.0,
            stream_share: 0.0,
            cancel: None,
            panic_share: 0.0,
            keywords: String::new(),
            input_tokens: None,
        }
    }
}

impl Scenario {
    /// The scenario as pretty JSON (the regression file format).
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers, options and vectors always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a scenario written by [`Scenario::to_json`].
    pub fn from_json(text: &str) -> Result<Scenario, serde_json::Error> {
        serde_json::from_str(text)
    }
}
