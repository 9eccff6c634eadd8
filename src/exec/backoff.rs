//! Backoff schedules: how long to wait before the next attempt.
//!
//! A [`BackoffConfig`] turns a retry number into a delay. The un-jittered
//! [`ceiling`](BackoffConfig::ceiling) never decreases with the retry number and never
//! exceeds `max`; [`delay`](BackoffConfig::delay) applies jitter (with an injected RNG, so
//! schedules are reproducible) and stays within `[0, worst_case]`;
//! [`worst_case`](BackoffConfig::worst_case) is the bound the plan compiler uses for static
//! latency bounds.
//!
//! [`next_delay`] then combines the computed delay with a server's `Retry-After` and the
//! request deadline, and says whether to sleep, fail over, or give up.
//!
//! All arithmetic saturates: huge retry numbers, huge factors and `Duration::MAX` never
//! overflow, produce NaN, or panic. Out-of-range fields are clamped (a `factor` below 1 or
//! NaN acts as 1, a jitter ratio is clamped into `[0, 1]`); [`BackoffConfig::validate`]
//! reports them for the compiler.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::exec::backoff::{next_delay, BackoffConfig, BackoffKind, Delay, Jitter};
//!
//! let cfg = BackoffConfig {
//!     kind: BackoffKind::Exponential,
//!     base: Duration::from_millis(100),
//!     factor: 2.0,
//!     max: Duration::from_secs(5),
//!     jitter: Jitter::Full,
//! };
//! assert_eq!(cfg.ceiling(1), Duration::from_millis(100));
//! assert_eq!(cfg.ceiling(3), Duration::from_millis(400));
//! assert_eq!(cfg.ceiling(100), Duration::from_secs(5));
//!
//! let mut rng = fastrand::Rng::with_seed(7);
//! let d = cfg.delay(3, Duration::ZERO, &mut rng);
//! assert!(d <= cfg.worst_case(3));
//!
//! // The server asks for 2 s, we accept up to 10 s, 30 s are left before the deadline.
//! let next = next_delay(d, Some(Duration::from_secs(2)), true, Duration::from_secs(10), Duration::from_secs(30));
//! assert_eq!(next, Delay::Sleep(Duration::from_secs(2).max(d)));
//! ```

use std::time::Duration;

use crate::exec::clock::nanos;
pub use crate::spec::backoff::{BackoffConfig, BackoffKind, Jitter};

/// Why a [`BackoffConfig`] is out of range (see [`BackoffConfig::validate`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffConfigError {
    /// `factor` is NaN, infinite or below 1.
    #[error("backoff factor must be a finite number >= 1, got {0}")]
    Factor(f64),
    /// The proportional jitter ratio is not in `(0, 1]`.
    #[error("proportional jitter ratio must be in (0, 1], got {0}")]
    JitterRatio(f64),
    /// `base` is larger than `max`.
    #[error("backoff base {base:?} is larger than max {max:?}")]
    BaseAboveMax {
        /// The configured base.
        base: Duration,
        /// The configured max.
        max: Duration,
    },
}

impl BackoffConfig {
    /// Checks the fields a compiler should reject. The methods never panic on invalid
    /// values (they clamp), but a policy author should hear about them.
    pub fn validate(&self) -> Result<(), BackoffConfigError> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(BackoffConfigError::Factor(self.factor));
        }
        if let Jitter::Proportional(r) = self.jitter {
            if !(r > 0.0 && r <= 1.0) {
                return Err(BackoffConfigError::JitterRatio(r));
            }
        }
        if self.base > self.max {
            return Err(BackoffConfigError::BaseAboveMax {
                base: self.base,
                max: self.max,
            });
        }
        Ok(())
    }

    /// The un-jittered cap for retry number `retry` (1 is the delay before the second
    /// attempt; 0 is treated as 1): `min(max, base*factor^(retry-1))` for exponential,
    /// `min(base, max)` for constant, `min(max, base*3^(retry-1))` for decorrelated (its
    /// upper bound). Never decreases as `retry` grows.
    pub fn ceiling(&self, retry: u32) -> Duration {
        Duration::from_nanos(self.ceiling_nanos(retry))
    }

    fn ceiling_nanos(&self, retry: u32) -> u64 {
        let max = nanos(self.max);
        let base = nanos(self.base).min(max);
        let exp = retry.saturating_sub(1);
        let factor = match self.kind {
            BackoffKind::Constant => return base,
            BackoffKind::Exponential => sane_factor(self.factor),
            BackoffKind::Decorrelated => 3.0,
        };
        if exp == 0 || base == 0 {
            return base;
        }
        // f64::powi takes an i32; exponents that large saturate anyway.
        let grown = base as f64 * factor.powi(exp.min(i32::MAX as u32) as i32);
        // factor >= 1, so mathematically grown >= base; f64 rounding of large nanosecond
        // counts must not make it smaller.
        f64_to_nanos(grown).max(base).min(max)
    }

    /// The delay to sleep before retry number `retry`. `prev` is the previous delay (used
    /// by [`BackoffKind::Decorrelated`]; pass `Duration::ZERO` for the first retry). The RNG
    /// is injected so schedules are reproducible. Always within `[0, worst_case(retry)]`,
    /// hence within `[0, max]`.
    pub fn delay(&self, retry: u32, prev: Duration, rng: &mut fastrand::Rng) -> Duration {
        let max = nanos(self.max);
        let ceiling = self.ceiling_nanos(retry);
        let d = match self.kind {
            BackoffKind::Decorrelated => {
                let lo = nanos(self.base).min(max);
                let prev = nanos(prev);
                let hi = if prev == 0 {
                    lo
                } else {
                    prev.saturating_mul(3).min(ceiling).max(lo)
                };
                rng.u64(lo..=hi)
            }
            BackoffKind::Exponential | BackoffKind::Constant => match self.jitter {
                Jitter::None => ceiling,
                Jitter::Full => rng.u64(0..=ceiling),
                Jitter::Equal => rng.u64(ceiling - ceiling / 2..=ceiling),
                Jitter::Proportional(r) => {
                    let (lo, hi) = proportional_range(ceiling, r, max);
                    rng.u64(lo..=hi)
                }
            },
        };
        Duration::from_nanos(d)
    }

    /// Upper bound of [`delay`](Self::delay)`(retry, _, _)` over all RNG outcomes and all
    /// `prev`, jitter included; at most `max`. Used for static worst-case bounds.
    pub fn worst_case(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling_nanos(retry);
        let w = match (self.kind, self.jitter) {
            (BackoffKind::Decorrelated, _) => ceiling,
            (_, Jitter::Proportional(r)) => proportional_range(ceiling, r, nanos(self.max)).1,
            _ => ceiling,
        };
        Duration::from_nanos(w)
    }
}

fn sane_factor(f: f64) -> f64 {
    if f >= 1.0 {
        f // includes +inf; NaN fails the comparison
    } else {
        1.0
    }
}

fn sane_ratio(r: f64) -> f64 {
    if r.is_nan() {
        0.0
    } else {
        r.clamp(0.0, 1.0)
    }
}

/// Converts a non-negative (possibly infinite or NaN) nanosecond count, saturating.
fn f64_to_nanos(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= u64::MAX as f64 {
        u64::MAX
    } else {
        x as u64
    }
}

/// `[d(1-r), min(max, d(1+r))]`, with `d <= max`.
fn proportional_range(d: u64, r: f64, max: u64) -> (u64, u64) {
    let r = sane_ratio(r);
    let lo = f64_to_nanos(d as f64 * (1.0 - r)).min(d);
    let hi = f64_to_nanos(d as f64 * (1.0 + r)).clamp(d, max.max(d));
    (lo, hi)
}

/// What to do before the next attempt, from [`next_delay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// Sleep this long, then start the next attempt (it starts before the deadline).
    Sleep(Duration),
    /// The server's `Retry-After` asks for more than we are willing to wait on this
    /// upstream: fail over to another target, or give up. `requested` is what it asked.
    TooLong {
        /// The server's `Retry-After`.
        requested: Duration,
    },
    /// The next attempt could not start before the request deadline: give up.
    PastDeadline,
}

/// Combines a computed backoff with a server's `Retry-After` and the deadline.
///
/// - With `honor` and `Some(retry_after)`: if `retry_after > retry_after_cap`, the answer
///   is [`Delay::TooLong`] (checked first: another upstream may still be tried within the
///   deadline). Otherwise the delay is `max(computed, retry_after)`: the server's request
///   never pushes it above `retry_after_cap`, though the computed backoff alone may be larger.
/// - Without `honor` (or without a `Retry-After`) the delay is `computed`.
/// - If the delay is not strictly less than `remaining_until_deadline`, the next attempt
///   could not start before the deadline: [`Delay::PastDeadline`].
pub fn next_delay(
    computed: Duration,
    retry_after: Option<Duration>,
    honor: bool,
    retry_after_cap: Duration,
    remaining_until_deadline: Duration,
) -> Delay {
    let delay = match retry_after {
        Some(ra) if honor => {
            if ra > retry_after_cap {
                return Delay::TooLong { requested: ra };
            }
            computed.max(ra)
        }
        _ => computed,
    };
    if delay >= remaining_until_deadline {
        Delay::PastDeadline
    } else {
        Delay::Sleep(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: BackoffKind, jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            kind,
            base: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(10),
            jitter,
        }
    }

    #[test]
    fn exponential_ceiling_grows_then_caps() {
        let c = cfg(BackoffKind::Exponential, Jitter::None);
        assert_eq!(c.ceiling(0), Duration::from_millis(100));
        assert_eq!(c.ceiling(1), Duration::from_millis(100));
        assert_eq!(c.ceiling(2), Duration::from_millis(200));
        assert_eq!(c.ceiling(4), Duration::from_millis(800));
        assert_eq!(c.ceiling(8), Duration::from_secs(10));
        assert_eq!(c.ceiling(u32::MAX), Duration::from_secs(10));
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            c.delay(2, Duration::ZERO, &mut rng),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn constant_and_decorrelated() {
        let c = cfg(BackoffKind::Constant, Jitter::None);
        assert_eq!(c.ceiling(50), Duration::from_millis(100));
        let d = cfg(BackoffKind::Decorrelated, Jitter::None);
        assert_eq!(d.ceiling(3), Duration::from_millis(900));
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(
            d.delay(1, Duration::ZERO, &mut rng),
            Duration::from_millis(100)
        );
        for _ in 0..1000 {
            let x = d.delay(3, Duration::from_millis(200), &mut rng);
            assert!(x >= Duration::from_millis(100) && x <= Duration::from_millis(600));
        }
        // a silly prev is still bounded by the ceiling
        let x = d.delay(2, Duration::MAX, &mut rng);
        assert!(x <= d.ceiling(2));
    }

    #[test]
    fn jitter_ranges() {
        let mut rng = fastrand::Rng::with_seed(9);
        let eq = cfg(BackoffKind::Exponential, Jitter::Equal);
        let prop = cfg(BackoffKind::Exponential, Jitter::Proportional(0.5));
        assert_eq!(prop.worst_case(2), Duration::from_millis(300));
        assert_eq!(prop.worst_case(100), Duration::from_secs(10));
        for _ in 0..1000 {
            let e = eq.delay(2, Duration::ZERO, &mut rng);
            assert!(e >= Duration::from_millis(100) && e <= Duration::from_millis(200));
            let p = prop.delay(2, Duration::ZERO, &mut rng);
            assert!(p >= Duration::from_millis(100) && p <= Duration::from_millis(300));
        }
    }

    #[test]
    fn silly_inputs_do_not_panic() {
        let mut rng = fastrand::Rng::with_seed(0);
        for factor in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e308] {
            for jitter in [
                Jitter::Proportional(f64::NAN),
                Jitter::Proportional(-3.0),
                Jitter::Full,
            ] {
                let c = BackoffConfig {
                    kind: BackoffKind::Exponential,
                    base: Duration::MAX,
                    factor,
                    max: Duration::MAX,
                    jitter,
                };
                assert!(c.validate().is_err() || factor == 1e308);
                for retry in [0, 1, 2, 64, u32::MAX] {
                    let d = c.delay(retry, Duration::MAX, &mut rng);
                    assert!(d <= c.worst_case(retry));
                }
            }
        }
    }

    #[test]
    fn next_delay_cases() {
        let s = Duration::from_secs;
        assert_eq!(
            next_delay(s(1), None, true, s(5), s(10)),
            Delay::Sleep(s(1))
        );
        assert_eq!(
            next_delay(s(1), Some(s(3)), true, s(5), s(10)),
            Delay::Sleep(s(3))
        );
        assert_eq!(
            next_delay(s(1), Some(s(3)), false, s(5), s(10)),
            Delay::Sleep(s(1))
        );
        assert_eq!(
            next_delay(s(1), Some(s(6)), true, s(5), s(10)),
            Delay::TooLong { requested: s(6) }
        );
        assert_eq!(
            next_delay(s(1), Some(s(4)), true, s(5), s(4)),
            Delay::PastDeadline
        );
        assert_eq!(
            next_delay(s(2), None, true, s(5), s(2)),
            Delay::PastDeadline
        );
    }
}
