//! The generic executor and its parts.
//!
//! Every part here is driven by plain configuration values produced by [`crate::plan`];
//! nothing in this folder knows TOML or HTTP. Stateful parts take the current time as an
//! argument (nanoseconds from a [`clock::Clock`]), so the executor reads the clock once per
//! decision and tests can drive them with any time sequence; every wait sleeps on the same
//! clock ([`clock::Clock::sleep`]).
//!
//! The shape of one request, by file:
//! - `executor.rs`: the public face ([`Executor`], its builder, reloads, usage learned late);
//! - `call/`: the request's loop — `Call::run` applies the `Next` each step decides
//!   (`Retry`, `Failover`, `Reroute`, `Stop`); the decisions are `on_refusal` and
//!   `on_failure` in `call/next.rs`, hedging is `call/race.rs`, route choice and target
//!   order `call/order.rs`;
//! - `admit/`: admission, one sequence of checks over local or shared slots (target,
//!   budgets, concurrency, tokens, rate), synchronous while nothing must be awaited;
//! - `settle.rs`: an attempt's outcome recorded everywhere it counts;
//! - `state/`: the live state beside the plan ([`state::Runtime`]), carried over reloads
//!   entity by entity (`state/carry.rs`);
//! - the parts: [`limit`], [`breaker`], [`backoff`], [`retry_budget`], [`price`],
//!   [`shared`] (state kept in a backend), `timeout.rs`.

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
mod stripe;
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
