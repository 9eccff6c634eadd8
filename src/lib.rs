//! tollgate: call flaky, rate-limited, priced upstream APIs under policies written as TOML.
#![warn(missing_docs)]

pub mod policy;
pub mod diagnostic;
pub mod exec;
