//! tollgate: call flaky, rate-limited, priced upstream APIs under policies written as TOML.
//!
//! The flow is one way: [`policy`] (TOML files → typed policy, with source spans) →
//! [`plan`] (compile: resolve, validate, compute static bounds → immutable plan) →
//! [`exec`] (run any async operation under the plan); [`reload`] watches the files and swaps
//! plans while it runs. [`diagnostic`] carries every
//! problem found on the way, with its location.
//!
//! The layering rule: dependencies point back along the flow — [`plan`] reads [`policy`],
//! [`exec`] reads [`plan`] (and the policy value types a plan holds, such as `Strategy`).
//! The value types the plan and the executor share (backoff, breaker, limiter and
//! retry-budget settings, price, usage) live in [`spec`], which depends on neither, so no
//! executor type is part of a plan. The one call the other way: the compiler runs the
//! executor's own range checks (a limiter's, a retry budget's, the money type's), so that
//! what `tollgate check` accepts the executor builds.
#![warn(missing_docs)]

pub mod cli;
pub mod diagnostic;
pub mod exec;
pub mod http;
pub mod plan;
pub mod policy;
pub mod reload;
pub mod schema;
pub mod server;
pub mod sim;
pub mod spec;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
