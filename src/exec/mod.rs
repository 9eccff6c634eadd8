//! The generic executor and its parts.
//!
//! Every part here is driven by plain configuration values produced by [`crate::plan`];
//! nothing in this folder knows TOML or HTTP. Stateful parts take the current time as an
//! argument (nanoseconds from a [`clock::Clock`]), so the executor reads the clock once per
//! decision and tests can drive them with any time sequence.

mod admit;
pub mod backoff;
pub mod breaker;
mod call;
pub mod clock;
mod error;
mod executor;
mod hold;
pub mod limit;
mod outcome;
pub mod price;
mod request;
pub mod retry_budget;
mod served;
mod settle;
pub mod shared;
pub mod state;
mod stats;
mod target;
mod timeout;

pub use call::select_route;
pub use error::{AttemptRecord, ExecError, SkipReason, SkipRecord, StopReason};
pub use executor::{Executor, ExecutorBuilder};
pub use hold::StreamHold;
pub use outcome::{Done, Failure, FailureKind, RateLimitInfo, Usage};
pub use request::{Request, DEFAULT_MAX_OUTPUT_TOKENS};
pub use served::Served;
pub use stats::{BreakerView, BudgetView, ModelView, RouteView, SharedView, Stats, UpstreamView};
pub use target::Target;
