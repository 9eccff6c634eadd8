//! The generic executor and its parts.
//!
//! Every part here is driven by plain configuration values produced by [`crate::plan`];
//! nothing in this folder knows TOML or HTTP. Stateful parts take the current time as an
//! argument (nanoseconds from a [`clock::Clock`]), so the executor reads the clock once per
//! decision and tests can drive them with any time sequence.

pub mod backoff;
pub mod breaker;
pub mod clock;
pub mod limit;
pub mod price;
pub mod retry_budget;
