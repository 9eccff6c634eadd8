//! Per-thread stripes of what every call touches, so that two threads calling the same
//! executor do not write the same cache line on every call.
//!
//! A value every call writes (a reference count, a counter) is the slowest thing a call does
//! once two cores share it: each write moves the line between the cores. [`Striped`] keeps
//! a copy per stripe ([`stripes`]: twice the cores, at most [`MAX_STRIPES`]), each on its own
//! cache lines; a thread always uses the same one ([`index_in`]: threads are numbered as
//! they first ask), and a reader that needs the whole (a sum) visits every stripe. Measured
//! in BENCHMARKS.md ("Executor throughput, 1 vs 2 threads").

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The most stripes a value is split into.
pub(crate) const MAX_STRIPES: usize = 16;

/// How many stripes: twice the cores (so the threads of a runtime sized to the cores rarely
/// share one), rounded up to a power of two (a thread's stripe is a mask, not a division),
/// at most [`MAX_STRIPES`].
pub(crate) fn stripes() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cores).next_power_of_two().clamp(1, MAX_STRIPES)
    })
}

/// This thread's stripe among `stripes` of them (a power of two, as [`stripes`] gives).
#[inline]
pub(crate) fn index_in(stripes: usize) -> usize {
    debug_assert!(stripes.is_power_of_two());
    slot() & (stripes - 1)
}

/// This thread's number, taken in the order threads first ask.
#[inline]
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Relaxed);
    }
    // A thread-local read cannot fail but during the thread's own teardown, where any
    // stripe is as good as another.
    SLOT.try_with(|s| *s).unwrap_or(0)
}

/// A value aligned to its own cache lines (two: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// [`stripes`] copies of a `T`, one for each group of threads.
#[derive(Debug)]
pub(crate) struct Striped<T> {
    stripes: Box<[Padded<T>]>,
}

impl<T> Striped<T> {
    /// Each stripe made by `make`.
    pub(crate) fn new(mut make: impl FnMut() -> T) -> Self {
        Striped {
            stripes: (0..stripes()).map(|_| Padded(make())).collect(),
        }
    }

    /// This thread's stripe.
    #[inline]
    pub(crate) fn here(&self) -> &T {
        // `new` makes `stripes()` of them: a power of two, at least one.
        &self.stripes[index_in(self.stripes.len())].0
    }

    /// Every stripe (to sum them).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Striped::new(T::default)
    }
}

/// A count that many threads add to, striped: adding writes only the thread's own stripe,
/// reading sums them.
#[derive(Debug, Default)]
pub(crate) struct Counter(Striped<AtomicU64>);

impl Counter {
    /// This thread's stripe (a guard that must undo its add on the same stripe keeps it).
    #[inline]
    pub(crate) fn here(&self) -> &AtomicU64 {
        self.0.here()
    }

    /// Adds one on this thread's stripe.
    #[inline]
    pub(crate) fn incr(&self) {
        self.here().fetch_add(1, Relaxed);
    }

    /// Takes one back on this thread's stripe, unless the sum is 0 (a stripe may wrap below
    /// zero: the sum wraps back).
    pub(crate) fn decr_above_zero(&self) {
        if self.get() > 0 {
            self.here().fetch_sub(1, Relaxed);
        }
    }

    /// The sum of the stripes (each read alone: adds made meanwhile may be missed).
    pub(crate) fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |s, a| s.wrapping_add(a.load(Relaxed)))
    }

    /// Sets the count (on a counter no other thread uses yet: a new runtime's).
    pub(crate) fn set(&self, v: u64) {
        for (i, a) in self.0.iter().enumerate() {
            a.store(if i == 0 { v } else { 0 }, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts made on many threads all reach the sum, whatever stripe each thread got; a
    /// count set on a new counter reads back.
    #[test]
    fn a_striped_counter_sums_every_threads_counts() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.incr();
                    }
                });
            }
        });
        assert_eq!(c.get(), 40_000);
        c.decr_above_zero();
        assert_eq!(c.get(), 39_999);
        c.set(7);
        assert_eq!(c.get(), 7);
        assert!((1..=MAX_STRIPES).contains(&stripes()) && stripes().is_power_of_two());
        assert!(index_in(stripes()) < stripes());
    }
}
