//! A batch of shared permits held by one instance.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Permits taken from the backend in advance and spent locally. Holds at most `size − 1`
/// permits at any time, whatever the interleaving of [`take`](Self::take) and
/// [`refill`](Self::refill): the bound of [`crate::exec::shared`] rests on this.
#[derive(Debug)]
pub struct Lease {
    held: AtomicU32,
    size: u32,
}

impl Lease {
    /// An empty lease of `size` (>= 1; 1 means no batching).
    pub fn new(size: u32) -> Self {
        Lease {
            held: AtomicU32::new(0),
            size: size.max(1),
        }
    }

    /// The configured lease size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Permits held now.
    pub fn held(&self) -> u32 {
        self.held.load(Relaxed)
    }

    /// Whether the lease is at or below its low watermark (half its size) and should be
    /// topped up in the background; never for a lease of 1 (no batching).
    #[inline]
    pub fn low(&self) -> bool {
        self.size > 1 && self.held() <= self.size / 2
    }

    /// How many permits a refill may ask the backend for now, so that what the lease holds
    /// plus what is on its way stays at most `size − 1` (with one refill in flight at a
    /// time): `size − 1 − held`. A caller that spends one of the batch at once asks one more.
    #[inline]
    pub fn want(&self) -> u64 {
        (self.size - 1).saturating_sub(self.held()) as u64
    }

    /// Spends one held permit, if any.
    #[inline]
    pub fn take(&self) -> bool {
        self.held
            .fetch_update(Relaxed, Relaxed, |h| h.checked_sub(1))
            .is_ok()
    }

    /// Adds `n` granted permits, keeping at most `size − 1`; returns how many were dropped
    /// (never spent: the cluster under-admits by that many).
    pub fn refill(&self, n: u64) -> u64 {
        let cap = self.size - 1;
        let mut dropped = 0;
        let _ = self.held.fetch_update(Relaxed, Relaxed, |h| {
            let total = h as u64 + n;
            let kept = total.min(cap as u64);
            dropped = total - kept;
            Some(kept as u32)
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_size_minus_one() {
        let l = Lease::new(5);
        assert!(!l.take());
        assert_eq!(l.refill(4), 0);
        assert_eq!(l.held(), 4);
        assert_eq!(l.refill(3), 3);
        assert!(l.take());
        assert_eq!(l.held(), 3);
        let one = Lease::new(1);
        assert_eq!(one.refill(1), 1);
        assert!(!one.take());
    }
}
