//! Lease arithmetic of shared rate limiters (`tollgate::exec::shared::Lease`): whatever
//! the interleaving of grants and spends, an instance never holds more than `lease − 1`
//! permits, and every granted permit is spent, held or dropped — never spent twice. This is
//! what the cluster bound `rate·w + burst + instances·(lease − 1)` rests on.

use proptest::prelude::*;
use tollgate::exec::shared::Lease;

#[derive(Debug, Clone)]
enum Op {
    Take,
    Refill(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Take), 1 => (0u64..40).prop_map(Op::Refill)]
}

proptest! {
    #[test]
    fn never_more_than_lease_minus_one_held(size in 1u32..32, ops in prop::collection::vec(op(), 0..200)) {
        let l = Lease::new(size);
        let (mut granted, mut spent, mut dropped) = (0u64, 0u64, 0u64);
        for o in ops {
            match o {
                Op::Take => spent += l.take() as u64,
                Op::Refill(n) => {
                    granted += n;
                    dropped += l.refill(n);
                }
            }
            prop_assert!(l.held() < size, "held {} with lease {size}", l.held());
            prop_assert_eq!(granted, spent + dropped + l.held() as u64);
        }
    }
}

/// A step of one instance's lease under prefetching: what `SharedRate::check` does.
#[derive(Debug, Clone)]
enum Step {
    /// A call spends a held permit; if that leaves the lease low and no batch is in
    /// flight, a prefetch asks for `want()`.
    Take,
    /// A call finds the lease empty and, no batch being in flight, asks for `want() + 1`
    /// (it spends one itself).
    CallerBatch,
    /// The batch in flight is answered: the backend grants at most this many of it.
    Answer(u64),
    /// The batch in flight is lost (timeout, cancelled): its permits are never spent.
    Lose,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Take),
        1 => Just(Step::CallerBatch),
        2 => (0u64..80).prop_map(Step::Answer),
        1 => Just(Step::Lose),
    ]
}

proptest! {
    /// With at most one batch in flight and batches sized by `Lease::want`, permits in the
    /// lease plus permits granted on their way to it never exceed `lease − 1`: the
    /// per-instance term of the cluster bound, prefetched permits included.
    #[test]
    fn prefetch_keeps_held_plus_in_flight_within_lease_minus_one(
        size in 1u32..300,
        steps in prop::collection::vec(step(), 0..400),
    ) {
        let l = Lease::new(size);
        // The batch in flight: (asked, whether its caller spends one at once).
        let mut in_flight: Option<(u64, bool)> = None;
        let (mut granted, mut spent, mut dropped, mut lost) = (0u64, 0u64, 0u64, 0u64);
        for s in steps {
            match s {
                Step::Take => {
                    if l.take() {
                        spent += 1;
                        if l.low() && in_flight.is_none() && l.want() > 0 {
                            in_flight = Some((l.want(), false));
                        }
                    }
                }
                Step::CallerBatch => {
                    if l.held() == 0 && in_flight.is_none() {
                        in_flight = Some((l.want() + 1, true));
                    }
                }
                Step::Answer(g) => {
                    if let Some((asked, caller)) = in_flight.take() {
                        let g = g.min(asked);
                        granted += g;
                        let to_lease = if caller && g > 0 { spent += 1; g - 1 } else { g };
                        dropped += l.refill(to_lease);
                    }
                }
                Step::Lose => {
                    if let Some((asked, _)) = in_flight.take() {
                        // The backend may have granted them all; nobody spends them.
                        granted += asked;
                        lost += asked;
                    }
                }
            }
            let on_the_way = in_flight.map_or(0, |(asked, caller)| asked - caller as u64);
            prop_assert!(
                l.held() as u64 + on_the_way < size as u64,
                "held {} + on the way {on_the_way} with lease {size}", l.held()
            );
            prop_assert_eq!(granted, spent + dropped + lost + l.held() as u64);
            // Prefetch only asks for room it has: nothing is dropped without a race.
            prop_assert_eq!(dropped, 0);
        }
    }
}

#[test]
fn concurrent_takes_and_refills_conserve_permits() {
    let l = Lease::new(8);
    let spent = std::sync::atomic::AtomicU64::new(0);
    let dropped = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..10_000u64 {
                    if i % 3 == 0 {
                        dropped.fetch_add(l.refill(i % 11), std::sync::atomic::Ordering::Relaxed);
                    } else if l.take() {
                        spent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    assert!(l.held() < 8);
                }
            });
        }
    });
    let granted: u64 = 4
        * (0..10_000u64)
            .filter(|i| i % 3 == 0)
            .map(|i| i % 11)
            .sum::<u64>();
    assert_eq!(
        granted,
        spent.into_inner() + dropped.into_inner() + l.held() as u64
    );
}
