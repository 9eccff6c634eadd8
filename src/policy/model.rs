//! `[models.NAME]`: what can be called, and what it costs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A model offered by an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Name of the `[upstreams.NAME]` that serves it.
    pub upstream: String,
    /// The model id the upstream expects, if different from this model's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Price in USD per million tokens. Required for `cheapest` routes and for budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// `max_tokens` sent when a request sets none, and what budgets, token limits and the
    /// context-window check reserve for such a request (else 4096). Anthropic's API
    /// requires one, so a model on an `api = "anthropic"` upstream must have it (a `check`
    /// error otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Context window in tokens; requests larger than this skip the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Name of a `[breakers.NAME]` policy for a breaker of this model alone (default: none,
    /// the upstream's breaker covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
}

/// Token prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input (prompt) tokens.
    pub input_per_mtok: f64,
    /// USD per million output (completion) tokens.
    pub output_per_mtok: f64,
}
