//! What the executor says when a request fails: every attempt, every skipped target,
//! and why it stopped.

use std::fmt;
use std::time::Duration;

use super::outcome::FailureKind;

/// Why the executor stopped trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// No route matches the request.
    NoRoute,
    /// Every target's attempts were used up.
    AttemptsExhausted,
    /// The request's total deadline came.
    Deadline,
    /// The failure is not retried, and may not fail over, under the plan.
    NotRetryable,
    /// The route's retry budget is spent: retrying would multiply load.
    RetryBudgetExhausted,
    /// A budget is spent and says reject.
    BudgetExceeded {
        /// The budget.
        budget: String,
    },
    /// Every target was skipped (breakers open, limiters full, context too small).
    NoTargetAvailable,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::NoRoute => f.write_str("no route matches the request"),
            StopReason::AttemptsExhausted => f.write_str("attempts exhausted"),
            StopReason::Deadline => f.write_str("deadline reached"),
            StopReason::NotRetryable => f.write_str("failure is not retryable"),
            StopReason::RetryBudgetExhausted => f.write_str("retry budget exhausted"),
            StopReason::BudgetExceeded { budget } => write!(f, "budget `{budget}` exceeded"),
            StopReason::NoTargetAvailable => f.write_str("no target available"),
        }
    }
}

/// Why a target was not tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Its breaker is open.
    BreakerOpen {
        /// Which breaker: the upstream's, the model's or the route's.
        breaker: String,
        /// When it will let a probe through.
        retry_in: Duration,
    },
    /// A limiter could not admit the call.
    Limited(String),
    /// A budget covering it is spent.
    BudgetExceeded {
        /// The budget.
        budget: String,
    },
    /// The request does not fit the model's context window.
    ContextWindow {
        /// Tokens the request needs (input estimate + max output).
        needed: u64,
        /// The model's window.
        window: u64,
    },
    /// A server's `Retry-After` asked for longer than the policy waits.
    RetryAfterTooLong(Duration),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::BreakerOpen { breaker, retry_in } => {
                write!(f, "breaker `{breaker}` open (probe in {retry_in:?})")
            }
            SkipReason::Limited(why) => write!(f, "limited: {why}"),
            SkipReason::BudgetExceeded { budget } => write!(f, "budget `{budget}` exceeded"),
            SkipReason::ContextWindow { needed, window } => {
                write!(f, "needs {needed} tokens, context window is {window}")
            }
            SkipReason::RetryAfterTooLong(d) => {
                write!(f, "server asked to wait {d:?}, more than the policy allows")
            }
        }
    }
}

/// One attempt that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The model tried.
    pub model: String,
    /// Its upstream.
    pub upstream: String,
    /// 1-based attempt number on this target.
    pub attempt: u32,
    /// The failure (its class, as the plan matches it).
    pub failure: String,
    /// Its kind, as the failure gave it.
    pub kind: FailureKind,
    /// Its HTTP status, if a response came.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// The backoff slept after it, if any.
    pub delay: Option<Duration>,
    /// Whether it was a hedge racing another attempt.
    pub hedge: bool,
}

/// A target that was not tried, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipRecord {
    /// The model skipped.
    pub model: String,
    /// Why.
    pub reason: SkipReason,
}

/// A request that failed, with everything that happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecError {
    /// The route taken (the last one, after reroutes), if any matched.
    pub route: Option<String>,
    /// Why the executor stopped.
    pub reason: StopReason,
    /// Every failed attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Every skipped target, in order.
    pub skipped: Vec<SkipRecord>,
    /// Time from the start of the request.
    pub elapsed: Duration,
}

impl ExecError {
    /// The last failure, if any attempt was made.
    pub fn last_failure(&self) -> Option<&AttemptRecord> {
        self.attempts.last()
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Some(r) => write!(f, "route `{r}`: {}", self.reason)?,
            None => write!(f, "{}", self.reason)?,
        }
        write!(
            f,
            " after {} attempt(s) in {:?}",
            self.attempts.len(),
            self.elapsed
        )?;
        for a in &self.attempts {
            write!(f, "; {}#{} {}", a.model, a.attempt, a.failure)?;
            if let Some(d) = a.delay {
                write!(f, " (then waited {d:?})")?;
            }
        }
        for s in &self.skipped {
            write!(f, "; skipped {}: {}", s.model, s.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ExecError {}
