//! Budgets: a spending limit per tumbling window, enforced by reserve-then-settle.
//!
//! # Windows
//!
//! Windows tumble and are aligned to the clock epoch: window `k` is `[k·w, (k+1)·w)`. Spend
//! resets to zero when the first call of a new window arrives. A call's cost belongs to the
//! window in which it was **reserved** (admitted): a reservation settled after its window
//! ended no longer affects the ledger (its window is over), and it never counts against the
//! new window. A caller whose `now` is older than the newest window seen joins the newest.
//!
//! # The bound
//!
//! [`BudgetLedger::reserve`] admits a call only if `committed + worst_case ≤ limit`, where
//! `committed` = actual costs settled in the window + reservations still in flight from it.
//! Settling replaces the reservation by the actual cost. So for every window:
//!
//! > spend of the calls admitted in the window ≤ `limit` + Σ over those calls of
//! > `max(0, actual − reserved)`.
//!
//! With `actual ≤ reserved` (the usage estimate was a true worst case) spend never exceeds
//! the limit. When an estimate was too low, the overshoot is exactly what those calls
//! under-reserved, and later reservations in the window are refused until spend falls back
//! (it doesn't, within the window) — so the overshoot cannot compound.
//!
//! # Representation
//!
//! Lock-free. The admission state is one `AtomicU64`: `window tag:16 | amount:48`, updated by
//! compare-exchange, so "check and reserve" and "roll into a new window" are one atomic step.
//! Amounts are counted in a unit of `10^j` nano-dollars, the smallest that fits the limit in
//! 46 bits (1 nano-dollar for limits up to ≈ $70 000; coarser above), always rounded *up*, so
//! the ledger can only over-count. A full-width "newest window" index guards the 16-bit tag
//! against aliasing after an idle gap of 65 536 windows or more.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::time::Duration;

use super::Usd;

const AMT_BITS: u32 = 48;
const AMT_MASK: u64 = (1 << AMT_BITS) - 1;
const TAG_SPAN: u64 = 1 << 16;
const UNIT_LIMIT_BITS: u32 = 46;

#[inline]
fn tag(k: u64) -> u64 {
    k % TAG_SPAN
}
#[inline]
fn word(k: u64, amount: u64) -> u64 {
    (tag(k) << AMT_BITS) | amount.min(AMT_MASK)
}
#[inline]
fn amount(w: u64) -> u64 {
    w & AMT_MASK
}
#[inline]
fn of_window(w: u64, k: u64) -> bool {
    w >> AMT_BITS == tag(k)
}

/// One budget: at most `limit` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Most that may be spent per window.
    pub limit: Usd,
    /// Window length (non-zero).
    pub window: Duration,
}

/// A [`BudgetConfig`] that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetConfigError {
    /// The window is shorter than one nanosecond.
    #[error("budget window must be at least 1ns")]
    ZeroWindow,
}

/// Refusal from [`BudgetLedger::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("budget exceeded: {spent} spent + {reserved} reserved + {requested} requested > {limit}; resets in {reset_in:?}")]
pub struct BudgetExceeded {
    /// Settled spend in the current window.
    pub spent: Usd,
    /// Reserved by calls in flight (all windows).
    pub reserved: Usd,
    /// The worst case that was asked for.
    pub requested: Usd,
    /// The window's limit.
    pub limit: Usd,
    /// Time until the next window starts.
    pub reset_in: Duration,
}

/// One budget's spend in its current window. `Send + Sync`; share it with `Arc`. How windows
/// roll and what is guaranteed: [`budget`](crate::exec::price::budget).
///
/// ```
/// use std::time::Duration;
/// use tollgate::exec::price::{BudgetConfig, BudgetLedger, Usd};
///
/// let ledger = BudgetLedger::new(BudgetConfig {
///     limit: Usd::from_dollars(1.0)?,
///     window: Duration::from_secs(60),
/// })?;
/// let r = ledger.reserve(Usd::from_dollars(0.75)?, 0).unwrap();
/// assert!(ledger.reserve(Usd::from_dollars(0.5)?, 0).is_err()); // 0.75 + 0.5 > 1
/// r.settle(Usd::from_dollars(0.10)?);                           // releases 0.65
/// assert_eq!(ledger.spent(0), Usd::from_dollars(0.10)?);
/// assert!(ledger.reserve(Usd::from_dollars(0.5)?, 0).is_ok());
/// // A new minute, a new window.
/// assert_eq!(ledger.spent(60_000_000_000), Usd::ZERO);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BudgetLedger {
    /// `tag | settled + in-flight reserved` of the current window, in units.
    committed: AtomicU64,
    /// `tag | settled` of the current window, in units (reporting).
    spent: AtomicU64,
    /// Newest window index any reservation has entered (full width).
    newest: AtomicU64,
    /// Window index of the `spent` word (full width).
    spent_window: AtomicU64,
    /// Nano-dollars reserved by calls in flight, all windows.
    reserved: AtomicU64,
    window_ns: u64,
    unit: u64,
    limit_units: u64,
    cfg: BudgetConfig,
}

/// A reservation from [`BudgetLedger::reserve`]. [`settle`](Self::settle) it with the actual
/// cost; dropping it releases the whole reservation (the call was cancelled before any cost).
#[must_use = "settle with the actual cost, or drop to release"]
#[derive(Debug)]
pub struct BudgetReservation<'a> {
    ledger: &'a BudgetLedger,
    window: u64,
    units: u64,
    nanos: u64,
}

impl BudgetLedger {
    /// A ledger with nothing spent.
    pub fn new(cfg: BudgetConfig) -> Result<Self, BudgetConfigError> {
        let window_ns = u64::try_from(cfg.window.as_nanos()).unwrap_or(u64::MAX);
        if window_ns == 0 {
            return Err(BudgetConfigError::ZeroWindow);
        }
        let mut unit = 1u64;
        while cfg.limit.nanos() / unit >= 1 << UNIT_LIMIT_BITS {
            unit *= 10;
        }
        Ok(BudgetLedger {
            committed: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            newest: AtomicU64::new(0),
            spent_window: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            window_ns,
            unit,
            limit_units: cfg.limit.nanos() / unit,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    #[inline]
    fn units(&self, nanos: u64) -> u64 {
        nanos.div_ceil(self.unit)
    }

    #[inline]
    fn to_usd(&self, units: u64) -> Usd {
        Usd::from_nanos(units.saturating_mul(self.unit))
    }

    /// The window `now` falls in, or the newest one seen if that is later.
    #[inline]
    fn current(&self, now: u64) -> u64 {
        (now / self.window_ns).max(self.newest.load(Acquire))
    }

    fn reset_in(&self, k: u64, now: u64) -> Duration {
        let end = k.saturating_add(1).saturating_mul(self.window_ns);
        Duration::from_nanos(end.saturating_sub(now))
    }

    /// Reserve `worst_case` before a call at `now`.
    ///
    /// Refused when the window's settled spend plus in-flight reservations plus
    /// `worst_case` would exceed the limit. No allocation, no lock.
    pub fn reserve(
        &self,
        worst_case: Usd,
        now: u64,
    ) -> Result<BudgetReservation<'_>, BudgetExceeded> {
        let k0 = now / self.window_ns;
        let mut newest = self.newest.load(Acquire);
        let mut force = false;
        if k0 > newest {
            // Announce the new window before writing it, so late callers join it.
            let prev = self.newest.fetch_max(k0, AcqRel);
            force = k0 > prev && k0 - prev >= TAG_SPAN;
            newest = prev.max(k0);
        }
        let units = self.units(worst_case.nanos());
        let mut cur = self.committed.load(Acquire);
        loop {
            let k = k0.max(newest);
            let fresh = force || !of_window(cur, k);
            let base = if fresh { 0 } else { amount(cur) };
            let total = base.saturating_add(units);
            let result = if total <= self.limit_units {
                // Strong CAS: a spurious failure must not drop `force`.
                self.committed
                    .compare_exchange(cur, word(k, total), AcqRel, Acquire)
            } else if fresh {
                // Refused, but still roll the stale word into this window.
                match self
                    .committed
                    .compare_exchange(cur, word(k, 0), AcqRel, Acquire)
                {
                    Ok(_) => return Err(self.exceeded(worst_case, k, now)),
                    Err(actual) => Err(actual),
                }
            } else {
                return Err(self.exceeded(worst_case, k, now));
            };
            match result {
                Ok(_) => {
                    self.reserved.fetch_add(worst_case.nanos(), Relaxed);
                    return Ok(BudgetReservation {
                        ledger: self,
                        window: k,
                        units,
                        nanos: worst_case.nanos(),
                    });
                }
                Err(actual) => {
                    cur = actual;
                    force = false;
                    newest = self.newest.load(Acquire);
                }
            }
        }
    }

    fn exceeded(&self, requested: Usd, k: u64, now: u64) -> BudgetExceeded {
        BudgetExceeded {
            spent: self.spent_in(k),
            reserved: self.reserved(),
            requested,
            limit: self.cfg.limit,
            reset_in: self.reset_in(k, now),
        }
    }

    /// Is window `k` still the ledger's current one (and its 16-bit tag unambiguous)?
    #[inline]
    fn is_current(&self, k: u64) -> bool {
        self.newest.load(Acquire) == k
    }

    /// Replace a reservation of window `k` by `actual_units` in the admission word.
    fn adjust(&self, k: u64, reserved_units: u64, actual_units: u64) {
        let mut cur = self.committed.load(Acquire);
        while of_window(cur, k) && self.is_current(k) {
            let next = amount(cur)
                .saturating_sub(reserved_units)
                .saturating_add(actual_units);
            match self
                .committed
                .compare_exchange_weak(cur, word(k, next), AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    fn charge(&self, k: u64, units: u64) {
        if !self.is_current(k) {
            return;
        }
        // The first settle of a window rolls the reporting word.
        let mut force =
            self.spent_window.load(Acquire) < k && self.spent_window.fetch_max(k, AcqRel) < k;
        let mut cur = self.spent.load(Acquire);
        loop {
            let next = if !force && of_window(cur, k) {
                amount(cur).saturating_add(units)
            } else {
                units
            };
            match self
                .spent
                .compare_exchange(cur, word(k, next), AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => {
                    cur = actual;
                    force = false;
                    if !self.is_current(k) {
                        return;
                    }
                }
            }
        }
    }

    fn spent_in(&self, k: u64) -> Usd {
        let w = self.spent.load(Acquire);
        if self.spent_window.load(Acquire) == k && of_window(w, k) {
            self.to_usd(amount(w))
        } else {
            Usd::ZERO
        }
    }

    /// Adds `spend` to the window of `now` without checking the limit. For carrying spend
    /// over when a reload replaces a budget whose limit or window changed: money already
    /// spent stays spent, even if it is now above the new limit.
    pub fn record_spend(&self, spend: Usd, now: u64) {
        self.newest.fetch_max(now / self.window_ns, AcqRel);
        let k = self.current(now);
        let units = self.units(spend.nanos());
        let mut cur = self.committed.load(Acquire);
        loop {
            let base = if of_window(cur, k) { amount(cur) } else { 0 };
            match self.committed.compare_exchange(
                cur,
                word(k, base.saturating_add(units)),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.charge(k, units);
    }

    /// Settled spend in the window of `now` (rounded up to the ledger's unit).
    pub fn spent(&self, now: u64) -> Usd {
        self.spent_in(self.current(now))
    }

    /// Reserved by calls in flight, across windows.
    pub fn reserved(&self) -> Usd {
        Usd::from_nanos(self.reserved.load(Relaxed))
    }

    /// Settled spend plus in-flight reservations counted against the window of `now`.
    pub fn committed(&self, now: u64) -> Usd {
        let k = self.current(now);
        let w = self.committed.load(Acquire);
        if of_window(w, k) && self.is_current(k) {
            self.to_usd(amount(w))
        } else {
            Usd::ZERO
        }
    }

    /// What may still be reserved in the window of `now`: `limit − committed`, at least zero.
    pub fn remaining(&self, now: u64) -> Usd {
        self.cfg.limit.saturating_sub(self.committed(now))
    }

    /// Time until the window of `now` ends.
    pub fn resets_in(&self, now: u64) -> Duration {
        self.reset_in(self.current(now), now)
    }
}

impl BudgetReservation<'_> {
    /// What was reserved.
    pub fn amount(&self) -> Usd {
        Usd::from_nanos(self.nanos)
    }

    /// Charge the actual cost and release the rest of the reservation. `actual` may exceed
    /// the reservation (the usage estimate was wrong); the excess is charged in full and
    /// bounds the overshoot (see [the bound](crate::exec::price::budget#the-bound)). If the reservation's window has
    /// ended, the ledger is left alone: that window is over.
    pub fn settle(self, actual: Usd) {
        let ledger = self.ledger;
        let actual_units = ledger.units(actual.nanos());
        ledger.adjust(self.window, self.units, actual_units);
        ledger.charge(self.window, actual_units);
        ledger.reserved.fetch_sub(self.nanos, Relaxed);
        std::mem::forget(self);
    }
}

impl<'a> BudgetReservation<'a> {
    /// Whether this reservation was taken from `ledger`.
    pub fn is_of(&self, ledger: &BudgetLedger) -> bool {
        std::ptr::eq(self.ledger, ledger)
    }

    /// Keeps the reservation held without the borrow of its ledger (a stream holds it until
    /// it ends): give it back to the same ledger with [`BudgetLedger::reattach`], then
    /// settle or drop it. A detached reservation that is never reattached stays reserved.
    pub fn detach(self) -> DetachedReservation {
        let d = DetachedReservation {
            window: self.window,
            units: self.units,
            nanos: self.nanos,
        };
        std::mem::forget(self);
        d
    }
}

/// A reservation held apart from its ledger ([`BudgetReservation::detach`]).
#[must_use = "reattach it to its ledger to settle it"]
#[derive(Debug)]
pub struct DetachedReservation {
    window: u64,
    units: u64,
    nanos: u64,
}

impl DetachedReservation {
    /// What was reserved.
    pub fn amount(&self) -> Usd {
        Usd::from_nanos(self.nanos)
    }
}

impl BudgetLedger {
    /// The reservation `d`, detached from this ledger, as a reservation again.
    pub fn reattach(&self, d: DetachedReservation) -> BudgetReservation<'_> {
        BudgetReservation {
            ledger: self,
            window: d.window,
            units: d.units,
            nanos: d.nanos,
        }
    }
}

impl Drop for BudgetReservation<'_> {
    fn drop(&mut self) {
        self.ledger.adjust(self.window, self.units, 0);
        self.ledger.reserved.fetch_sub(self.nanos, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ledger(limit_nanos: u64, window_secs: u64) -> BudgetLedger {
        BudgetLedger::new(BudgetConfig {
            limit: Usd::from_nanos(limit_nanos),
            window: Duration::from_secs(window_secs),
        })
        .unwrap()
    }

    #[test]
    fn record_spend_counts_against_the_limit_even_above_it() {
        let l = ledger(100, 60);
        l.record_spend(Usd::from_nanos(150), 5 * SEC);
        assert_eq!(l.spent(5 * SEC), Usd::from_nanos(150));
        assert_eq!(l.remaining(5 * SEC), Usd::ZERO);
        assert!(l.reserve(Usd::from_nanos(1), 6 * SEC).is_err());
        assert!(
            l.reserve(Usd::from_nanos(1), 61 * SEC).is_ok(),
            "the next window starts afresh"
        );
    }

    #[test]
    fn zero_window_is_rejected() {
        let e = BudgetLedger::new(BudgetConfig {
            limit: Usd::MAX,
            window: Duration::ZERO,
        });
        assert_eq!(e.unwrap_err(), BudgetConfigError::ZeroWindow);
    }

    #[test]
    fn reserve_settle_and_drop() {
        let l = ledger(100, 10);
        let a = l.reserve(Usd::from_nanos(60), 0).unwrap();
        let err = l.reserve(Usd::from_nanos(41), 0).unwrap_err();
        assert_eq!(err.reserved, Usd::from_nanos(60));
        assert_eq!(err.reset_in, Duration::from_secs(10));
        let b = l.reserve(Usd::from_nanos(40), 1).unwrap();
        assert_eq!(l.remaining(1), Usd::ZERO);
        drop(b); // cancelled
        assert_eq!(l.remaining(1), Usd::from_nanos(40));
        a.settle(Usd::from_nanos(10));
        assert_eq!(
            (l.spent(2), l.reserved(), l.remaining(2)),
            (Usd::from_nanos(10), Usd::ZERO, Usd::from_nanos(90))
        );
    }

    #[test]
    fn window_rolls_and_late_settle_is_ignored() {
        let l = ledger(100, 10);
        let a = l.reserve(Usd::from_nanos(100), 9 * SEC).unwrap();
        // Next window: a fresh limit; `a` does not count against it.
        let b = l.reserve(Usd::from_nanos(100), 10 * SEC).unwrap();
        a.settle(Usd::from_nanos(100)); // belongs to the finished window
        assert_eq!(l.spent(10 * SEC), Usd::ZERO);
        b.settle(Usd::from_nanos(30));
        assert_eq!(l.spent(10 * SEC), Usd::from_nanos(30));
        // A caller with a stale clock joins the newest window.
        assert!(l.reserve(Usd::from_nanos(71), 0).is_err());
        assert_eq!(l.resets_in(15 * SEC), Duration::from_secs(5));
    }

    #[test]
    fn overshoot_is_charged_and_blocks_further_reservations() {
        let l = ledger(100, 10);
        let a = l.reserve(Usd::from_nanos(50), 0).unwrap();
        a.settle(Usd::from_nanos(130));
        assert_eq!(l.spent(0), Usd::from_nanos(130));
        assert_eq!(l.remaining(0), Usd::ZERO);
        assert!(l.reserve(Usd::ZERO, 0).is_err());
    }

    #[test]
    fn idle_gap_longer_than_tag_span_does_not_alias() {
        let l = ledger(100, 1);
        l.reserve(Usd::from_nanos(100), 0)
            .unwrap()
            .settle(Usd::from_nanos(100));
        let later = TAG_SPAN * SEC; // same 16-bit tag as window 0
        assert_eq!(l.spent(later), Usd::ZERO);
        assert!(l.reserve(Usd::from_nanos(100), later).is_ok());
    }

    #[test]
    fn big_limits_use_a_coarser_unit_and_round_up() {
        let l = BudgetLedger::new(BudgetConfig {
            limit: Usd::from_dollars(1e9).unwrap(),
            window: Duration::from_secs(1),
        })
        .unwrap();
        assert!(l.unit > 1);
        l.reserve(Usd::from_nanos(1), 0)
            .unwrap()
            .settle(Usd::from_nanos(1));
        assert_eq!(l.spent(0), Usd::from_nanos(l.unit));
        assert!(l.reserve(Usd::MAX, 0).is_err());
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let l = ledger(100, 1);
        let r = l.reserve(Usd::from_nanos(1), u64::MAX).unwrap();
        assert!(l.resets_in(u64::MAX) <= Duration::from_secs(1));
        r.settle(Usd::MAX);
        assert!(l.spent(u64::MAX) >= Usd::from_nanos(100));
    }
}
