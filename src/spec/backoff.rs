//! A backoff schedule's settings: the plan resolves them, [`exec::backoff`](crate::exec::backoff)
//! computes the delays.

use std::time::Duration;

/// The shape of the un-jittered schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// `base * factor^(retry-1)`, capped at `max`.
    Exponential,
    /// `base` every time (capped at `max`).
    Constant,
    /// AWS "decorrelated jitter": uniform in `[base, prev*3]`, capped at `max`. The
    /// [`Jitter`] setting is ignored: this kind is its own jitter.
    Decorrelated,
}

/// How randomness is applied to an un-jittered delay `d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
    /// Uniform in `[d(1-r), d(1+r)]`, the upper end capped at `max`. `r` should be in
    /// `(0, 1]`; it is clamped into `[0, 1]` (NaN acts as 0).
    Proportional(f64),
}

/// A backoff schedule. Built by the plan compiler; see the [`exec::backoff` docs](crate::exec::backoff).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Shape of the schedule.
    pub kind: BackoffKind,
    /// First delay (retry 1), and the lower end for [`BackoffKind::Decorrelated`].
    pub base: Duration,
    /// Growth factor for [`BackoffKind::Exponential`]; should be `>= 1` (values below 1 or
    /// NaN act as 1).
    pub factor: f64,
    /// No delay ever exceeds this.
    pub max: Duration,
    /// Randomisation applied to the un-jittered delay.
    pub jitter: Jitter,
}
