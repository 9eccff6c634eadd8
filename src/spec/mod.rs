//! The value types the plan and the executor share: plain settings (structs and enums with
//! their derives and constants, no logic). The compiler ([`plan`](crate::plan)) builds them
//! from a policy; the executor ([`exec`](crate::exec)) reads them, and the algorithms on them
//! (a backoff's delays, a breaker config's validation, a price's cost) live there, as
//! inherent `impl`s beside the code that uses them. This module depends on neither, so the
//! plan needs no executor type; each type is also re-exported at its old path in `exec`.

pub mod backoff;
pub mod breaker;
pub mod limit;
pub mod price;
pub mod retry_budget;
