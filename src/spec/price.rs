//! What a call costs: a model's price and a call's token usage; [`exec::price`](crate::exec::price)
//! turns them into money.

/// Largest accepted price, in USD per million tokens.
pub const MAX_PRICE_PER_MTOK: f64 = 1_000_000.0;

/// Tokens used by one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A model's price in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
}
