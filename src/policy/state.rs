//! `[state]`: where state shared by several instances lives (`[state.redis]`), and the
//! per-limiter / per-budget choice between local and shared state.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// Where state that several instances share lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// A Redis server holding shared limiter buckets and budget spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,
}

/// `[state.redis]`: the Redis server behind `state = "shared"` limiters and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// Where the URL comes from: `{ env = "REDIS_URL" }` (it may hold a password, so it is
    /// never written into the policy).
    pub url: EnvVar,
    /// Prefix of every key (default `"tollgate:"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Longest wait for one Redis operation before `fail_mode` applies (default `50ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Connections to Redis (default 1: one multiplexed connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// What shared limiters and budgets do while Redis is unreachable (default `open`).
    #[serde(default)]
    pub fail_mode: FailMode,
    /// Instances sharing the limits: with `fail_mode = "open"` each falls back to its local
    /// limiter scaled by `1 / expected_instances` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_instances: Option<u32>,
    /// Permits a shared rate limiter takes from Redis at once and spends locally (default 1:
    /// a round trip per call). The cluster may overshoot by at most `instances × lease`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u32>,
    /// How often an instance reads the trips other instances published for its
    /// `state = "shared"` breakers (default `250ms`; one round trip for all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_poll: Option<Duration>,
}

/// `{ env = "VAR" }`: a value read from an environment variable at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name of the environment variable.
    pub env: String,
}

/// What shared state does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Keep serving under local limits scaled by `1 / expected_instances`.
    #[default]
    Open,
    /// Refuse calls that need shared state.
    Closed,
}

/// Whether a limiter or budget keeps its state in this process or shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum StateScope {
    /// In this process only (each instance has its own).
    #[default]
    Local,
    /// In `[state.redis]`, shared by every instance using the same key prefix.
    Shared,
}
