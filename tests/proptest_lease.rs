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
