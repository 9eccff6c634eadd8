//! The policy language: the TOML surface, as serde + schemars types, and its loading.
//!
//! A policy is one or more TOML files. This module only knows their shape; names are
//! resolved and semantics checked by [`crate::plan`]. Every table denies unknown keys, so
//! a typo is an error that lists the keys expected there.

mod breaker;
mod budget;
mod cache;
mod caller;
mod convert;
mod duration;
pub(crate) mod load;
mod merge;
mod model;
mod retry;
mod route;
pub mod spans;
mod state;
mod tree;
mod upstream;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use breaker::{Breaker, FailureRate, HalfOpen, SlowCall};
pub use budget::{Budget, OnExceed, Scope};
pub use cache::{load_cached, LoadCache};
pub use caller::Caller;
pub use duration::{Duration, DurationError};
#[doc(hidden)]
pub use load::load_through_figment;
pub(crate) use load::process_overrides;
pub use load::{load, toml_files_in, LoadOptions, Loaded, ENV_PREFIX};
pub use model::{Model, Price};
pub use retry::{
    Backoff, BackoffKind, Jitter, RetryAfter, RetryBudget, RetryOverride, RetryPolicy,
};
pub use route::{Condition, Hedge, Route, Scalar, Strategy, Streaming, Target};
pub use state::{EnvVar, FailMode, Redis, State, StateScope};
pub use upstream::{
    check_key, ApiFormat, ApiKey, EnvKey, KeyProblem, Limits, OnLimit, Pool, Secret, Upstream,
};

/// A whole policy: what one file holds, or several merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tollgate policy")]
pub struct Policy {
    /// Version of the policy language; `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Settings that apply wherever nothing more specific is set.
    #[serde(default)]
    pub defaults: Defaults,
    /// Upstream endpoints, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Models, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Model>,
    /// Retry policies, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retry: BTreeMap<String, RetryPolicy>,
    /// Circuit breaker policies, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub breakers: BTreeMap<String, Breaker>,
    /// Routes, tried in order; the first whose `when` matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Spending limits, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, Budget>,
    /// Callers of the relay, by name, each with the hash of its key. When present, budgets
    /// and routes may only name these callers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub callers: BTreeMap<String, Caller>,
    /// Where shared state lives (`[state.redis]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
}

/// Defaults for everything that does not say otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default timeouts (built-in: connect 10s, per_try 30s, total 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Name of the default `[retry.NAME]` policy (built-in: a single attempt, no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Name of the default `[breakers.NAME]` policy for upstreams (built-in: no breaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Model whose prices are the baseline for the savings report (e.g. the premium model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_model: Option<String>,
}

/// Timeouts. Each field falls back to the next level up: route, then upstream, then
/// `defaults`, then the built-in value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Longest wait to open a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// Longest one attempt may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// Longest a whole request may take: every attempt, backoff and failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Duration>,
}
