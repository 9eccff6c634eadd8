//! The generic cell rate algorithm on one `AtomicU64`, shared by the rate and token limiters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Largest span (in nanoseconds) a bucket may cover: keeps `tat + cost` far from overflow
/// for any realistic uptime (u64::MAX / 4 ns is about 146 years).
pub(crate) const MAX_SPAN: u64 = u64::MAX / 4;

/// GCRA parameters: every admitted unit pushes the theoretical arrival time (TAT) forward by
/// `t` nanoseconds; a request costing `cost` ns is admitted at `now` iff
/// `max(tat, now) + cost - now <= cap`, i.e. the bucket holds at most `cap` ns of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds per unit (emission interval), >= 1.
    pub(crate) t: u64,
    /// Burst capacity in nanoseconds: `t * burst`, <= MAX_SPAN.
    pub(crate) cap: u64,
}

impl Gcra {
    /// Tries to admit `cost` nanoseconds of work (`cost <= cap`, checked by callers).
    /// On refusal returns the earliest time at which it would be admitted.
    #[inline]
    pub(crate) fn take(&self, tat: &AtomicU64, cost: u64, now: u64) -> Result<(), u64> {
        // Relaxed is enough: the TAT is the only shared datum and every update is a
        // read-modify-write on it, so all updates are totally ordered.
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            let next = cur.max(now).saturating_add(cost);
            let earliest = next.saturating_sub(self.cap);
            if now < earliest {
                return Err(earliest);
            }
            match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Charges `cost` unconditionally (usage already happened).
    pub(crate) fn charge(&self, tat: &AtomicU64, cost: u64, now: u64) {
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = tat.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
            Some(cur.max(now).saturating_add(cost))
        });
    }

    /// Gives back `cost` (a reservation was larger than the usage). A TAT at or below `now`
    /// means an empty bucket, so subtracting past `now` changes nothing.
    pub(crate) fn refund(&self, tat: &AtomicU64, cost: u64) {
        let _ = tat.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
            Some(cur.saturating_sub(cost))
        });
    }

    /// Pushes the TAT to at least `floor` (never lowers it).
    pub(crate) fn raise_to(&self, tat: &AtomicU64, floor: u64) {
        tat.fetch_max(floor, Ordering::Relaxed);
    }

    /// Sets `tat` (a fresh limiter with these parameters) so that it holds as many units
    /// as `old_tat` holds under `old` at `now`: the units in the bucket survive a change of
    /// rate or burst, converted to this emission interval (rounded up, capped at
    /// [`MAX_SPAN`]).
    pub(crate) fn inherit(&self, tat: &AtomicU64, old: &Gcra, old_tat: &AtomicU64, now: u64) {
        let used = old.used(old_tat, now) as u128;
        let scaled = (used * self.t as u128).div_ceil(old.t as u128);
        let scaled = scaled.min(MAX_SPAN as u128) as u64;
        tat.store(now.saturating_add(scaled), Ordering::Relaxed);
    }

    /// Nanoseconds of work currently in the bucket (0..=cap, more after an unconditional
    /// charge or a tightening).
    #[inline]
    pub(crate) fn used(&self, tat: &AtomicU64, now: u64) -> u64 {
        tat.load(Ordering::Relaxed).saturating_sub(now)
    }

    /// How many units of `t` ns would be admitted right now.
    #[inline]
    pub(crate) fn headroom_units(&self, tat: &AtomicU64, now: u64) -> u64 {
        self.cap.saturating_sub(self.used(tat, now)) / self.t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady() {
        let g = Gcra { t: 10, cap: 30 };
        let tat = AtomicU64::new(0);
        for _ in 0..3 {
            g.take(&tat, 10, 100).unwrap();
        }
        assert_eq!(g.take(&tat, 10, 100), Err(110));
        g.take(&tat, 10, 110).unwrap();
        assert_eq!(g.headroom_units(&tat, 110), 0);
        assert_eq!(g.headroom_units(&tat, 1000), 3);
    }

    #[test]
    fn inherit_keeps_units_in_the_bucket() {
        let old = Gcra { t: 10, cap: 30 };
        let old_tat = AtomicU64::new(0);
        old.take(&old_tat, 20, 100).unwrap(); // 2 units in the bucket at 100
        let new = Gcra { t: 4, cap: 40 };
        let tat = AtomicU64::new(0);
        new.inherit(&tat, &old, &old_tat, 100);
        assert_eq!(new.used(&tat, 100), 8, "2 units at 4 ns each");
        assert_eq!(new.headroom_units(&tat, 100), 8);
        // Shrinking the burst below what is in the bucket admits nothing until it drains.
        let small = Gcra { t: 10, cap: 10 };
        let tat = AtomicU64::new(0);
        small.inherit(&tat, &old, &old_tat, 100);
        assert_eq!(small.headroom_units(&tat, 100), 0);
        assert!(small.take(&tat, 10, 100).is_err());
        assert!(small.take(&tat, 10, 119).is_err());
        assert!(small.take(&tat, 10, 120).is_ok());
        // An idle old bucket gives an empty new one.
        let tat = AtomicU64::new(0);
        new.inherit(&tat, &old, &old_tat, 10_000);
        assert_eq!(new.headroom_units(&tat, 10_000), 10);
    }
}
