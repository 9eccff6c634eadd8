//! What an attempt returns: a value with its usage, or a failure the plan can classify.

use std::fmt;
use std::time::Duration;

use crate::plan::FailureView;

/// Token usage reported by an attempt.
pub use super::price::Usage;

/// Rate-limit state an upstream reported (e.g. `x-ratelimit-remaining` / `-reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests left in the upstream's current window.
    pub remaining: u64,
    /// Time until the window resets.
    pub reset: Duration,
}

/// A successful attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Done<T> {
    /// What the operation produced.
    pub value: T,
    /// Tokens used, for pricing and token limits.
    pub usage: Option<Usage>,
    /// Rate-limit headers seen, to tighten the local limiter.
    pub rate_limit: Option<RateLimitInfo>,
    /// The outcome is final only later (a stream whose first event is all that has come):
    /// breakers count the success without ending a run of failures until
    /// [`Executor::record_late_outcome`](super::Executor::record_late_outcome) reports how
    /// it ended.
    pub pending: bool,
}

impl<T> Done<T> {
    /// A value with no usage.
    pub fn new(value: T) -> Self {
        Done {
            value,
            usage: None,
            rate_limit: None,
            pending: false,
        }
    }
    /// A value with its token usage.
    pub fn with_usage(value: T, input_tokens: u64, output_tokens: u64) -> Self {
        Done {
            value,
            usage: Some(Usage {
                input_tokens,
                output_tokens,
            }),
            rate_limit: None,
            pending: false,
        }
    }
    /// Adds rate-limit information.
    pub fn rate_limit(mut self, remaining: u64, reset: Duration) -> Self {
        self.rate_limit = Some(RateLimitInfo { remaining, reset });
        self
    }
    /// Marks the outcome as final only later (see [`Done::pending`]).
    pub fn pending(mut self) -> Self {
        self.pending = true;
        self
    }
}

/// How an attempt failed, before the plan says what that means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made.
    Connect,
    /// No answer in time (the executor reports per-try timeouts as this too).
    Timeout,
    /// A response came with an error status and/or an error code.
    Response,
}

/// A failed attempt.
///
/// ```
/// use std::time::Duration;
/// use tollgate::exec::Failure;
/// let f = Failure::status(429).code("rate_limit_exceeded").retry_after(Duration::from_secs(2));
/// assert_eq!(f.to_string(), "429 rate_limit_exceeded");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Status code, if a response came.
    pub status: Option<u16>,
    /// Error code from the body (`error.code` / `error.type`).
    pub code: Option<String>,
    /// How long the server asked to wait (`Retry-After` or body `retry_after`).
    pub retry_after: Option<Duration>,
    /// Rate-limit headers seen.
    pub rate_limit: Option<RateLimitInfo>,
    /// Tokens billed despite the failure, if the upstream says so.
    pub usage: Option<Usage>,
    /// A human-readable detail (never a secret).
    pub message: String,
}

impl Failure {
    fn new(kind: FailureKind) -> Self {
        Failure {
            kind,
            status: None,
            code: None,
            retry_after: None,
            rate_limit: None,
            usage: None,
            message: String::new(),
        }
    }
    /// The connection failed.
    pub fn connect(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            ..Self::new(FailureKind::Connect)
        }
    }
    /// The attempt timed out.
    pub fn timeout() -> Self {
        Self::new(FailureKind::Timeout)
    }
    /// An error response with this status.
    pub fn status(status: u16) -> Self {
        Failure {
            status: Some(status),
            ..Self::new(FailureKind::Response)
        }
    }
    /// An error response identified by its body code only.
    pub fn error_code(code: impl Into<String>) -> Self {
        Failure {
            code: Some(code.into()),
            ..Self::new(FailureKind::Response)
        }
    }
    /// Sets the body error code.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    /// Sets the server's requested wait.
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }
    /// Sets rate-limit information.
    pub fn rate_limit(mut self, remaining: u64, reset: Duration) -> Self {
        self.rate_limit = Some(RateLimitInfo { remaining, reset });
        self
    }
    /// Sets a detail message.
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = m.into();
        self
    }
    /// The view the plan's class matchers read.
    pub fn view(&self) -> FailureView<'_> {
        FailureView {
            connect: self.kind == FailureKind::Connect,
            timeout: self.kind == FailureKind::Timeout,
            status: self.status,
            code: self.code.as_deref(),
            breaker_open: false,
            limited: false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Connect => f.write_str("connect")?,
            FailureKind::Timeout => f.write_str("timeout")?,
            FailureKind::Response => match (self.status, &self.code) {
                (Some(s), Some(c)) => write!(f, "{s} {c}")?,
                (Some(s), None) => write!(f, "{s}")?,
                (None, Some(c)) => f.write_str(c)?,
                (None, None) => f.write_str("error response")?,
            },
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}
