//! The decisions: what a request does after admission refused a target, or after an
//! attempt failed. Each is one function that returns a [`Next`]; [`Call::run`] applies it.

use std::time::Duration;

use super::{Call, Cursor, MAX_REROUTES};
use crate::exec::admit::Refusal;
use crate::exec::backoff::{next_delay, Delay};
use crate::exec::error::{SkipReason, StopReason};
use crate::exec::outcome::Failure;
use crate::plan::{FailureView, RouteId};

/// What a request does next.
#[derive(Debug)]
pub(super) enum Next {
    /// Try the same target again after this delay.
    Retry { after: Duration },
    /// Fail over: move to the route's next target. The reason is what the request stops with if
    /// none is left (`None`: it stays what it was).
    Failover(Option<StopReason>),
    /// Start over on another route (a spent budget's `on_exceed = { reroute = … }`).
    Reroute(RouteId),
    /// End the request.
    Stop(StopReason),
}

impl Call<'_, '_> {
    /// Admission refused the cursor's target.
    pub(super) fn on_refusal(&mut self, at: &Cursor, r: Refusal) -> Next {
        let route = self.rt.plan.route(at.route);
        let model = &self.rt.plan.model(route.targets[at.target()].model).name;
        match r {
            Refusal::Deadline => Next::Stop(StopReason::Deadline),
            Refusal::Skip(reason) => {
                tracing::debug!(target: "tollgate::exec", route = %route.name, %model, %reason, "target skipped");
                let crosses = skip_crosses(&reason, |v| route.failover_on.matches(v));
                self.trail.skip(model, reason);
                if crosses {
                    Next::Failover(None)
                } else {
                    Next::Stop(StopReason::NoTargetAvailable)
                }
            }
            Refusal::Reroute { to, budget } => {
                tracing::info!(target: "tollgate::exec", route = %route.name, %budget, to = %self.rt.plan.route(to).name, "budget spent: rerouting");
                self.trail
                    .skip(model, SkipReason::BudgetExceeded { budget });
                if self.reroutes < MAX_REROUTES && to != at.route {
                    Next::Reroute(to)
                } else {
                    Next::Failover(None)
                }
            }
            Refusal::Reject { budget } => {
                tracing::info!(target: "tollgate::exec", route = %route.name, %budget, "budget spent: rejecting");
                let reason = SkipReason::BudgetExceeded {
                    budget: budget.clone(),
                };
                self.trail.skip(model, reason);
                Next::Failover(Some(StopReason::BudgetExceeded { budget }))
            }
        }
    }

    /// The attempt at the cursor's target failed with `f` (at `now`): retry it after a
    /// backoff if the retry policy allows and the deadline leaves time, else fail over if
    /// the route lets this class cross targets, else stop.
    pub(super) fn on_failure(&mut self, at: &Cursor, f: &Failure, now: u64) -> Next {
        let route = self.rt.plan.route(at.route);
        let retry = self.rt.plan.retry(route.retry);
        let view = f.view();
        let retryable = retry.retry_on.matches(&view);
        let ov = retry.override_for(&view);
        let max = ov
            .and_then(|o| o.max_attempts)
            .unwrap_or(retry.max_attempts);
        let crosses = route.failover_on.matches(&view);
        let why = if retryable {
            StopReason::AttemptsExhausted
        } else {
            StopReason::NotRetryable
        };
        let leave = |why| match crosses {
            true => Next::Failover(Some(why)),
            false => Next::Stop(why),
        };
        if !retryable || at.attempt >= max {
            return leave(why);
        }
        let backoff = ov
            .and_then(|o| o.backoff.as_ref())
            .unwrap_or(&retry.backoff);
        let computed = backoff.delay(at.attempt, at.prev_delay, &mut self.rng);
        let remaining = Duration::from_nanos(at.deadline.saturating_sub(now));
        let (honor, cap) = (retry.retry_after_honor, retry.retry_after_max);
        match next_delay(computed, f.retry_after, honor, cap, remaining) {
            Delay::Sleep(d) => {
                self.trail.delayed(d);
                tracing::debug!(target: "tollgate::exec", route = %route.name, delay = ?d, "retrying");
                Next::Retry { after: d }
            }
            Delay::TooLong { requested } => {
                let model = &self.rt.plan.model(route.targets[at.target()].model).name;
                self.trail
                    .skip(model, SkipReason::RetryAfterTooLong(requested));
                leave(StopReason::AttemptsExhausted)
            }
            Delay::PastDeadline => Next::Stop(StopReason::Deadline),
        }
    }
}

/// Whether a skipped target lets the request move on: a context window or a spent budget
/// always does (another target may fit); an open breaker or a limiter when the route's
/// `failover_on` names that class.
fn skip_crosses(reason: &SkipReason, failover_on: impl Fn(&FailureView) -> bool) -> bool {
    let view = match reason {
        SkipReason::ContextWindow { .. } | SkipReason::BudgetExceeded { .. } => return true,
        SkipReason::BreakerOpen { .. } => FailureView {
            breaker_open: true,
            ..Default::default()
        },
        _ => FailureView {
            limited: true,
            ..Default::default()
        },
    };
    failover_on(&view)
}
