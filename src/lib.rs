//! tollgate: call flaky, rate-limited, priced upstream APIs under policies written as TOML.
//!
//! The flow is one way: [`policy`] (TOML files → typed policy, with source spans) →
//! [`plan`] (compile: resolve, validate, compute static bounds → immutable plan) →
//! [`exec`] (run any async operation under the plan); [`reload`] watches the files and swaps
//! plans while it runs. [`diagnostic`] carries every
//! problem found on the way, with its location.
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

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
