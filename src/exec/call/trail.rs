//! The account of one request kept on its way: attempts, failovers, failures, skips, cost.

use std::time::Duration;

use crate::exec::error::{AttemptRecord, SkipReason, SkipRecord};
use crate::exec::outcome::Failure;
use crate::exec::settle::Ended;
use crate::exec::state::Runtime;

/// Bookkeeping of one request.
#[derive(Default)]
pub(super) struct Trail {
    pub attempts: u32,
    /// Moves from one target to another ([`Served::failovers`](crate::exec::Served::failovers)).
    pub failovers: u32,
    pub failed: Vec<AttemptRecord>,
    pub skipped: Vec<SkipRecord>,
    pub cost: f64,
}

impl Trail {
    /// Records a failed attempt (its `attempt` number on the target, and whether it was a
    /// hedge).
    pub fn record_failure(
        &mut self,
        rt: &Runtime,
        f: &Failure,
        end: Ended,
        (attempt, hedge): (u32, bool),
    ) {
        let model = rt.plan.model(end.model);
        tracing::debug!(target: "tollgate::exec", route = %rt.plan.route(end.route).name, model = %model.name, attempt, failure = %f, "attempt failed");
        self.failed.push(AttemptRecord {
            model: model.name.clone(),
            upstream: rt.plan.upstream(model.upstream).name.clone(),
            attempt,
            kind: f.kind,
            status: f.status,
            failure: f.to_string(),
            elapsed: end.elapsed,
            delay: None,
            hedge,
        });
    }

    /// Records the backoff before the next attempt on the last failure.
    pub fn delayed(&mut self, d: Duration) {
        if let Some(last) = self.failed.last_mut() {
            last.delay = Some(d);
        }
    }

    /// Records a target skipped, and why.
    pub fn skip(&mut self, model: &str, reason: SkipReason) {
        self.skipped.push(SkipRecord {
            model: model.to_owned(),
            reason,
        });
    }
}
