//! The scenario language: what `tollgate simulate --scenario FILE` reads. A scenario is a
//! TOML file (its keys in `docs/scenario.md`, its schema in `schemas/scenario.schema.json`)
//! that says how long traffic runs, how it arrives and what it asks for, how each upstream
//! or model of the policy behaves over time, and what happens when (reloads, price
//! changes). It is loaded with the policy's diagnostics (every error at once, each at its
//! `file:line:col`, unknown keys listing the expected ones, names checked against the
//! policy with did-you-mean) and compiled into the engine's [`Scenario`](super::Scenario).
//!
//! [`report`] runs a prepared scenario and makes the report `simulate` prints.

mod compile;
pub mod html;
mod load;
pub mod report;
mod types;

pub use compile::{
    compile, prepare, PrepareError, Prepared, MAX_DURATION_MS, MAX_RATE, MAX_REQUESTS,
};
pub use load::{load_scenario, load_scenario_text, LoadedScenario};
pub use types::{
    Behaviour, BurstFile, Change, Daily, EventFile, Expect, Failures, Latency, Outage, Ramp,
    RateLimitHeaders, RequestTemplate, ScenarioFile, Script, Slow, Storm, TrafficFile,
};

/// The JSON Schema of scenario files, pretty-printed (what `schemas/scenario.schema.json`
/// holds, without its final newline).
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(ScenarioFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
