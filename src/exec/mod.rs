//! The generic executor and its parts.
//!
//! Every part here is driven by plain configuration values produced by [`crate::plan`];
//! nothing in this folder knows TOML or HTTP. Stateful parts take the current time as an
//! argument (nanoseconds from a [`clock::Clock`]), so the executor reads the clock once per
//! decision and tests can drive them with any time sequence.

pub mod backoff;
pub mod breaker;
pub mod clock;
mod error;
mod executor;
mod hold;
pub mod limit;
mod outcome;
pub mod price;
mod request;
pub mod retry_budget;
pub mod shared;
pub mod state;
mod stats;
mod timeout;

pub use error::{AttemptRecord, ExecError, SkipReason, SkipRecord, StopReason};
pub use executor::{select_route, Executor, ExecutorBuilder, Served, Target};
pub use hold::StreamHold;
pub use outcome::{Done, Failure, FailureKind, RateLimitInfo, Usage};
pub use request::{Request, DEFAULT_MAX_OUTPUT_TOKENS};
pub use stats::{BreakerView, BudgetView, ModelView, RouteView, SharedView, Stats, UpstreamView};
