//! Deterministic simulation: the **real** [`Executor`](crate::exec::Executor) under a
//! **real** compiled [`Plan`](crate::plan::Plan), driven by scripted upstreams and
//! traffic in virtual time, with an invariant checker that sees every event.
//!
//! - Time is tokio's paused clock on a current-thread runtime: a run of minutes of traffic
//!   takes milliseconds, and the executor's default clock follows it.
//! - Everything random derives from [`Scenario::seed`] (arrivals, request attributes,
//!   upstream behaviour, the executor's own seed): the same scenario gives the same run,
//!   event for event ([`Report::digest`]).
//! - The checker ([`Promise`]) holds every request and every window to the promises of
//!   `docs/guarantees.md`; a broken one is a [`Violation`] in the [`Report`].
//!
//! ```
//! use tollgate::sim::{self, Scenario, Traffic, Segment};
//!
//! let scenario = Scenario {
//!     seed: 7,
//!     policy: r#"
//!         [upstreams.u]
//!         base_url = "http://127.0.0.1:1"
//!         [models.m]
//!         upstream = "u"
//!         [[routes]]
//!         name = "main"
//!         targets = ["m"]
//!     "#.into(),
//!     reload: None,
//!     upstreams: vec![],
//!     shared: None,
//!     traffic: Traffic {
//!         max_requests: 20,
//!         segments: vec![Segment { from_ms: 0, to_ms: 1000, start_per_s: 50.0, end_per_s: 50.0 }],
//!         bursts: vec![],
//!         mix: Default::default(),
//!         templates: vec![],
//!     },
//! };
//! let report = sim::run(&scenario).unwrap();
//! assert_eq!(report.summary.requests, 20);
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```

mod backend;
mod check;
mod engine;
mod event;
pub mod file;
mod promise;
pub mod random;
mod record;
mod scenario;
pub mod shrink;
mod summary;
mod traffic;
mod upstream;

pub use check::{Checker, TICK_NS};
pub use engine::SimPanic;
pub use event::{AttemptResult, Event, Outcome};
pub use promise::{Promise, Violation};
pub use record::{record_empty, BudgetTrack, Histogram, Interval, Record, RecordOptions, Spend};
pub use scenario::{
    Burst, Faults, Mix, Phase, Reload, Scenario, Segment, SharedScript, Template, Traffic,
    UpstreamScript,
};
pub use summary::{Summary, BUCKETS};

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep every event in [`Report::events`] (memory grows with the run).
    pub keep_events: bool,
    /// Record time series and histograms ([`Report::record`]), in memory bounded by the
    /// run's duration, not its number of requests.
    pub record: Option<RecordOptions>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The numbers.
    pub summary: Summary,
    /// Broken promises (the first ones; see `violation_count`).
    pub violations: Vec<Violation>,
    /// How many promises broke in all.
    pub violation_count: u64,
    /// Every event, with [`RunOptions::keep_events`].
    pub events: Option<Vec<Event>>,
    /// A hash of the event sequence (kinds, times, ids): equal runs have equal digests.
    pub digest: u64,
    /// What [`RunOptions::record`] asked for.
    pub record: Option<Record>,
}

/// Why a scenario could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// A policy of the scenario does not compile (the rendered diagnostics).
    #[error("the scenario's policy does not compile:\n{0}")]
    Policy(String),
    /// The executor refused the plan.
    #[error("the executor refused the plan: {0}")]
    Build(String),
    /// The runtime could not be built or a task failed.
    #[error("simulation runtime: {0}")]
    Runtime(String),
}

/// Runs a scenario and checks every promise on the way.
pub fn run(s: &Scenario) -> Result<Report, RunError> {
    engine::run(s, &RunOptions::default())
}

/// [`run`] with options.
pub fn run_with(s: &Scenario, opts: &RunOptions) -> Result<Report, RunError> {
    engine::run(s, opts)
}

/// Runs a scenario under compiled plans: `plan` from the start, then each of `reloads`
/// swapped in at its time (virtual ms). The scenario's `policy` and `reload` texts are not
/// read (what `tollgate simulate` runs: policies loaded from files, merged).
pub fn run_plans(
    s: &Scenario,
    plan: crate::plan::Plan,
    reloads: Vec<(u64, crate::plan::Plan)>,
    opts: &RunOptions,
) -> Result<Report, RunError> {
    engine::run_compiled(s, plan, reloads, opts)
}

/// Installs (once per process) a panic hook that stays silent for the panics the
/// simulation provokes in `op` ([`SimPanic`]) and defers to the previous hook for any other.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<SimPanic>() {
                previous(info);
            }
        }));
    });
}
