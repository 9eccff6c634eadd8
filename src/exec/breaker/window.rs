//! Sliding-window call counters: a ring of time buckets, each one packed `AtomicU64`.
//!
//! A window of length `w` is split into [`BUCKETS`] buckets of width `w / BUCKETS`. Bucket
//! `i` covers `[i·width, (i+1)·width)` on the clock and lives in slot `i % BUCKETS`; its
//! *lap* is `i / BUCKETS`. Each slot is one word:
//!
//! ```text
//! bits 48..64  lap tag (lap mod 2^16)
//! bits 32..48  slow calls
//! bits 16..32  failed calls
//! bits  0..16  calls
//! ```
//!
//! Recording is one compare-exchange: if the slot's tag is the current lap the counters are
//! incremented, otherwise the slot is reset to the current lap and the call in the same
//! step, so a reset never loses a concurrent increment. A bucket that reaches 65 535 calls
//! stops counting (the whole call is skipped, so rates stay those of the counted sample).
//!
//! The 16-bit tag could alias a bucket written exactly `k·65 536` windows ago. A ring-wide
//! "newest lap" clears everything after an idle gap that long; what remains is a slot left
//! untouched for that long while its neighbours were busy, which at worst adds one stale
//! bucket to a window. The window is therefore approximate to one bucket at its trailing
//! edge, as sliding-bucket windows always are.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Buckets per window.
pub const BUCKETS: u64 = 10;

const CNT_MASK: u64 = 0xFFFF;
const TAG_SHIFT: u32 = 48;
const TAG_SPAN: u64 = 1 << 16;
const FAIL_SHIFT: u32 = 16;
const SLOW_SHIFT: u32 = 32;

/// Calls, failures and slow calls counted in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls recorded in the window.
    pub calls: u32,
    /// Of those, calls classed as breaker failures.
    pub failures: u32,
    /// Of those, calls slower than the slow-call threshold.
    pub slow: u32,
}

#[derive(Debug)]
pub(crate) struct Ring {
    width: u64,
    buckets: [AtomicU64; BUCKETS as usize],
    newest_lap: AtomicU64,
    /// Bucket index of a recent call: a hint that saves the 64-bit division (tens of cycles)
    /// while `now` stays inside that bucket. Always verified before use.
    last_idx: AtomicU64,
}

impl Ring {
    /// `window_ns` must be at least [`BUCKETS`] (checked by the config validation).
    pub(crate) fn new(window_ns: u64) -> Self {
        Ring {
            width: (window_ns / BUCKETS).max(1),
            buckets: Default::default(),
            newest_lap: AtomicU64::new(0),
            last_idx: AtomicU64::new(0),
        }
    }

    /// `now / width`, via the cached index when `now` is still in that bucket.
    #[inline]
    fn index(&self, now: u64) -> u64 {
        let hint = self.last_idx.load(Relaxed);
        let start = hint.wrapping_mul(self.width);
        if now >= start && now - start < self.width {
            return hint;
        }
        let idx = now / self.width;
        self.last_idx.store(idx, Relaxed);
        idx
    }

    #[inline]
    pub(crate) fn add(&self, now: u64, failure: bool, slow: bool) {
        let inc = 1 | (u64::from(failure) << FAIL_SHIFT) | (u64::from(slow) << SLOW_SHIFT);
        self.add_inc(now, inc, inc);
    }

    /// Turns a call already counted as a success into a failure: one more failure in the
    /// current bucket, no more calls; in a bucket of a new lap (the success was counted in
    /// an older one), a failed call.
    pub(crate) fn add_late_failure(&self, now: u64) {
        self.add_inc(now, 1 << FAIL_SHIFT, 1 | (1 << FAIL_SHIFT));
    }

    /// Adds `inc` to the bucket of `now`, or starts it with `fresh` when it holds an older lap.
    #[inline(always)]
    fn add_inc(&self, now: u64, inc: u64, fresh: u64) {
        let idx = self.index(now);
        let slot = (idx % BUCKETS) as usize;
        let lap = idx / BUCKETS;
        let tag = lap % TAG_SPAN;

        let newest = self.newest_lap.load(Relaxed);
        if lap > newest {
            if lap - newest >= TAG_SPAN {
                self.clear();
            }
            self.newest_lap.fetch_max(lap, Relaxed);
        }

        let bucket = &self.buckets[slot];
        let mut cur = bucket.load(Relaxed);
        loop {
            let cur_tag = cur >> TAG_SHIFT;
            let new = if cur_tag == tag {
                if cur & CNT_MASK == CNT_MASK || (cur >> FAIL_SHIFT) & CNT_MASK == CNT_MASK {
                    return; // saturated: skip the sample
                }
                cur + inc
            } else {
                // Is the slot from a newer lap than ours (a caller whose `now` is stale)?
                let ahead = (cur_tag + TAG_SPAN - tag) % TAG_SPAN;
                if cur & CNT_MASK != 0 && ahead < TAG_SPAN / 2 {
                    return;
                }
                (tag << TAG_SHIFT) | fresh
            };
            match bucket.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn totals(&self, now: u64) -> WindowCounts {
        let idx = now / self.width;
        let mut c = WindowCounts::default();
        for k in 0..BUCKETS.min(idx.saturating_add(1)) {
            let i = idx - k;
            let w = self.buckets[(i % BUCKETS) as usize].load(Relaxed);
            if w >> TAG_SHIFT == (i / BUCKETS) % TAG_SPAN {
                c.calls += (w & CNT_MASK) as u32;
                c.failures += ((w >> FAIL_SHIFT) & CNT_MASK) as u32;
                c.slow += ((w >> SLOW_SHIFT) & CNT_MASK) as u32;
            }
        }
        c
    }

    pub(crate) fn clear(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_window_and_forgets_old_buckets() {
        let r = Ring::new(1_000); // 10 buckets of 100 ns
        r.add(0, true, false);
        r.add(50, false, true);
        r.add(950, true, true);
        assert_eq!(
            r.totals(999),
            WindowCounts {
                calls: 3,
                failures: 2,
                slow: 2
            }
        );
        // At 1000 the bucket [0,100) has left the window.
        assert_eq!(
            r.totals(1_000),
            WindowCounts {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
        // Writing into slot 0 on the next lap resets it.
        r.add(1_010, false, false);
        assert_eq!(r.totals(1_010).calls, 2);
        assert_eq!(r.totals(5_000).calls, 0);
    }

    #[test]
    fn stale_writer_does_not_wipe_newer_bucket() {
        let r = Ring::new(1_000);
        r.add(1_005, true, false); // lap 1, slot 0
        r.add(5, true, false); // lap 0, slot 0: stale caller
        assert_eq!(r.totals(1_005).calls, 1);
    }

    #[test]
    fn bucket_saturates_instead_of_overflowing() {
        let r = Ring::new(1_000);
        for _ in 0..70_000 {
            r.add(0, true, false);
        }
        let t = r.totals(0);
        assert_eq!((t.calls, t.failures, t.slow), (65_535, 65_535, 0));
    }

    #[test]
    fn index_hint_is_exact() {
        let r = Ring::new(1_000);
        for now in [
            0,
            99,
            100,
            5,
            1_000_000,
            1_000_099,
            1_000_100,
            u64::MAX,
            0,
            u64::MAX - 1,
        ] {
            assert_eq!(r.index(now), now / 100, "{now}");
        }
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let r = Ring::new(BUCKETS); // 1 ns buckets
        r.add(u64::MAX, true, true);
        assert_eq!(r.totals(u64::MAX).calls, 1);
        r.add(0, false, false);
        let _ = r.totals(0);
    }

    #[test]
    fn long_idle_gap_clears() {
        let r = Ring::new(10);
        r.add(0, true, false);
        let far = TAG_SPAN * BUCKETS; // exactly 2^16 laps later: tag aliases
        r.add(far + 5, false, false);
        assert_eq!(r.totals(far + 5).failures, 0);
    }
}
