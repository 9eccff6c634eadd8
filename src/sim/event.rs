//! What the engine observes, in virtual time: the events the invariant checker sees.

use crate::exec::{Failure, Usage};

/// One thing that happened during a run. `at` is the executor's clock (virtual
/// nanoseconds since the executor was built, at the start of the run).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A request was handed to the executor.
    RequestStart {
        /// Virtual time, ns.
        at: u64,
        /// Request number, in arrival order.
        req: u64,
        /// The route the plan picks for it (`None`: no route matches).
        route: Option<String>,
        /// Input tokens the executor estimates for it.
        input_tokens: u64,
        /// Output tokens it reserves for.
        output_tokens: u64,
        /// Its caller.
        caller: Option<String>,
        /// Whether its answer is streamed.
        stream: bool,
    },
    /// The executor called the operation.
    AttemptStart {
        /// Virtual time, ns.
        at: u64,
        /// The request.
        req: u64,
        /// Attempt number in the run (unique).
        id: u64,
        /// [`Target::route_name`](crate::exec::Target::route_name).
        route: String,
        /// [`Target::model_name`](crate::exec::Target::model_name).
        model: String,
        /// [`Target::upstream_name`](crate::exec::Target::upstream_name).
        upstream: String,
        /// [`Target::attempt`](crate::exec::Target::attempt): 1-based on this target.
        number: u32,
        /// [`Target::is_hedge`](crate::exec::Target::is_hedge).
        hedge: bool,
        /// [`Target::timeout`](crate::exec::Target::timeout), ns.
        timeout: u64,
        /// [`Target::queued`](crate::exec::Target::queued), ns: its admission (budget
        /// reservations included) was decided this long before `at`.
        queued: u64,
        /// Version of [`Target::plan`](crate::exec::Target::plan) (1 = the first plan).
        plan_version: u64,
    },
    /// The operation's future finished, or was dropped.
    AttemptEnd {
        /// Virtual time, ns.
        at: u64,
        /// The request.
        req: u64,
        /// The attempt.
        id: u64,
        /// How it ended.
        result: AttemptResult,
    },
    /// The executor answered, the caller gave up, or the operation panicked.
    RequestEnd {
        /// Virtual time, ns.
        at: u64,
        /// The request.
        req: u64,
        /// How it ended.
        outcome: Outcome,
    },
    /// A streamed answer was read to its end (or broke).
    StreamEnd {
        /// Virtual time, ns.
        at: u64,
        /// The request.
        req: u64,
        /// The attempt that served it.
        id: u64,
        /// Usage its last chunk reported.
        usage: Option<Usage>,
        /// Why it broke after its first byte, if it did.
        failure: Option<Failure>,
    },
    /// The plan was swapped.
    Reload {
        /// Virtual time, ns.
        at: u64,
        /// The new plan's version.
        version: u64,
    },
}

impl Event {
    /// When it happened, virtual ns.
    pub fn at(&self) -> u64 {
        match self {
            Event::RequestStart { at, .. }
            | Event::AttemptStart { at, .. }
            | Event::AttemptEnd { at, .. }
            | Event::RequestEnd { at, .. }
            | Event::StreamEnd { at, .. }
            | Event::Reload { at, .. } => *at,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// An answer (for a stream, its first byte: `pending`, usage to come).
    Ok {
        /// Usage reported with it.
        usage: Option<Usage>,
        /// A stream whose outcome is final only later.
        pending: bool,
    },
    /// A failure, as returned to the executor.
    Failed(Failure),
    /// The future was dropped before it finished (timeout, lost hedge, caller gone).
    Dropped,
    /// The operation panicked.
    Panicked,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Served.
    Served {
        /// Its route.
        route: String,
        /// The model that served it.
        model: String,
        /// Attempts the executor counted.
        attempts: u32,
        /// Cost the executor reported, USD.
        cost_usd: f64,
        /// The plan version it ran under.
        plan_version: u64,
        /// Moves to another target ([`Served::failovers`](crate::exec::Served::failovers)).
        failovers: u32,
    },
    /// The executor gave up.
    Failed {
        /// Its route, if one matched.
        route: Option<String>,
        /// Why it stopped ([`StopReason`](crate::exec::StopReason) as text).
        reason: String,
        /// Failed attempts it reported.
        attempts: u32,
        /// Targets it skipped (breaker open, limited, budget, context window).
        skipped: u32,
    },
    /// The caller dropped the future first.
    Cancelled,
    /// The operation panicked (the executor's future unwound).
    Panicked,
}

impl Outcome {
    /// A short label for the summary: `served`, the stop reason, `cancelled` or `panicked`.
    pub fn label(&self) -> String {
        match self {
            Outcome::Served { .. } => "served".into(),
            Outcome::Failed { reason, .. } => reason.clone(),
            Outcome::Cancelled => "cancelled".into(),
            Outcome::Panicked => "panicked".into(),
        }
    }
}
