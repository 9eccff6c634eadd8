//! `[budgets.NAME]`: how much may be spent, over what window, and what happens after.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// A spending limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most USD spent per window.
    pub limit_usd: f64,
    /// The window the limit applies to (e.g. `1d`, `30d`).
    pub window: Duration,
    /// Which calls count (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// What happens to a call that would exceed the budget (default `reject`).
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// `local` (default): spend counted by this process; `shared`: by all instances
    /// together, in `[state.redis]`.
    #[serde(default)]
    pub state: super::StateScope,
}

/// Which calls a budget covers: a call counts when it matches every list given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Route names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Model names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Upstream names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// Caller keys (the request's `caller` attribute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// What to do when a budget is spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Refuse the call.
    #[default]
    Reject,
    /// Send the call through another route instead: `{ reroute = "ROUTE" }`.
    Reroute(String),
}
