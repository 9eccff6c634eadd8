//! Property tests for prices and budgets, each named after the invariant it checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use proptest::prelude::*;
use tollgate::exec::price::{BudgetConfig, BudgetLedger, BudgetReservation, Price, Usage, Usd};

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// Reserve this many nano-dollars.
    Reserve(u64),
    /// Settle held reservation `i` with `actual = reserved · pct / 100`.
    Settle(usize, u64),
    /// Drop (cancel) held reservation `i`.
    Cancel(usize),
    /// Advance the clock by this many ms.
    Advance(u64),
}

fn ops(max_pct: u64) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0u64..400).prop_map(Op::Reserve),
            4 => (any::<usize>(), 0..=max_pct).prop_map(|(i, p)| Op::Settle(i, p)),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => (0u64..800).prop_map(Op::Advance),
        ],
        1..300,
    )
}

fn ledger(limit: u64, window_ms: u64) -> BudgetLedger {
    BudgetLedger::new(BudgetConfig {
        limit: Usd::from_nanos(limit),
        window: Duration::from_millis(window_ms),
    })
    .unwrap()
}

/// Drive `ops` and check, against a model, the bound from the `price::budget` docs: the
/// spend of the calls admitted in a window ≤ limit + Σ max(0, actual − reserved) of those
/// calls. Returns nothing; fails through `prop_assert`.
fn check_bound(limit: u64, window_ms: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let l = ledger(limit, window_ms);
    let w = window_ms * MS;
    let mut now = 0u64;
    // (reservation, its window, reserved nanos)
    let mut held: Vec<(BudgetReservation<'_>, u64, u64)> = Vec::new();
    // per window: (spend of calls admitted there, their overshoot, spend settled while current)
    let mut windows: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    for op in ops {
        let k = now / w;
        match op {
            Op::Reserve(n) => {
                let committed_before = l.committed(now).nanos();
                match l.reserve(Usd::from_nanos(n), now) {
                    Ok(r) => held.push((r, k, n)),
                    Err(e) => {
                        prop_assert!(committed_before + n > limit, "refused with room: {e}");
                        prop_assert_eq!(e.limit.nanos(), limit);
                    }
                }
            }
            Op::Settle(i, pct) if !held.is_empty() => {
                let (r, rk, reserved) = held.swap_remove(i % held.len());
                let actual = reserved * pct / 100;
                r.settle(Usd::from_nanos(actual));
                let e = windows.entry(rk).or_default();
                e.0 += actual;
                e.1 += actual.saturating_sub(reserved);
                if rk == k {
                    e.2 += actual;
                }
            }
            Op::Cancel(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
            Op::Advance(ms) => now += ms * MS,
            _ => {}
        }
        let k = now / w;
        let (_, over, settled_here) = windows.get(&k).copied().unwrap_or_default();
        // The ledger's view matches the model exactly (unit = 1 nano-dollar here)...
        prop_assert_eq!(l.spent(now).nanos(), settled_here);
        let in_flight: u64 = held.iter().map(|h| h.2).sum();
        prop_assert_eq!(l.reserved().nanos(), in_flight);
        let in_flight_here: u64 = held.iter().filter(|h| h.1 == k).map(|h| h.2).sum();
        prop_assert_eq!(l.committed(now).nanos(), settled_here + in_flight_here);
        // ...and stays within the bound.
        prop_assert!(settled_here + in_flight_here <= limit + over);
    }
    for (k, (spend, over, _)) in windows {
        prop_assert!(
            spend <= limit + over,
            "window {k}: spend {spend} > {limit} + {over}"
        );
        if over == 0 {
            prop_assert!(spend <= limit);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With actual ≤ reserved, a window's spend never exceeds the limit; with under-estimates,
    /// it exceeds the limit by at most the sum of (actual − reserved).
    #[test]
    fn budget_overspend_bounded_by_reservations(
        limit in 0u64..2_000,
        window_ms in 1u64..5_000,
        honest in ops(100),
        underestimated in ops(300),
    ) {
        check_bound(limit, window_ms, honest)?;
        check_bound(limit, window_ms, underestimated)?;
    }

    /// Whatever happened in a window, the next one starts with nothing spent or committed,
    /// and the whole limit can be reserved — even with reservations from before in flight.
    #[test]
    fn budget_window_resets(
        limit in 1u64..1_000_000,
        window_ms in 1u64..10_000,
        start in 0u64..1_000_000,
        amounts in prop::collection::vec((0u64..1_000_000, any::<bool>()), 0..40),
        skip in 1u64..100,
        offset in 0u64..10_000,
    ) {
        let l = ledger(limit, window_ms);
        let w = window_ms * MS;
        let now = start * MS;
        let mut held = Vec::new();
        for (n, keep) in amounts {
            if let Ok(r) = l.reserve(Usd::from_nanos(n), now) {
                if keep { held.push(r) } else { r.settle(Usd::from_nanos(n)) }
            }
        }
        let later = (now / w + skip) * w + offset % w;
        prop_assert_eq!(l.spent(later), Usd::ZERO);
        prop_assert_eq!(l.remaining(later), Usd::from_nanos(limit));
        prop_assert_eq!(l.resets_in(later), Duration::from_nanos(w - offset % w));
        let r = l.reserve(Usd::from_nanos(limit), later);
        prop_assert!(r.is_ok());
        // Old reservations settling now charge their own (finished) window, not this one.
        for old in held { old.settle(Usd::from_nanos(limit)); }
        r.unwrap().settle(Usd::from_nanos(limit));
        prop_assert_eq!(l.spent(later), Usd::from_nanos(limit));
    }

    /// `cost` is additive and scales with token counts, up to one nano-dollar of rounding,
    /// and agrees with the f64 formula.
    #[test]
    fn cost_is_linear_in_tokens(
        pin in 0u64..200_000_000, pout in 0u64..200_000_000,   // micro-dollars per Mtok
        a in (0u64..1u64 << 40, 0u64..1u64 << 40),
        b in (0u64..1u64 << 40, 0u64..1u64 << 40),
        k in 0u64..1_000,
    ) {
        let price = Price::new(pin as f64 / 1e6, pout as f64 / 1e6).unwrap();
        let ua = Usage { input_tokens: a.0, output_tokens: a.1 };
        let ub = Usage { input_tokens: b.0, output_tokens: b.1 };
        let sum = Usage { input_tokens: a.0 + b.0, output_tokens: a.1 + b.1 };
        let (ca, cb, cs) = (price.cost(ua).nanos() as i128, price.cost(ub).nanos() as i128, price.cost(sum).nanos() as i128);
        prop_assert!((cs - ca - cb).abs() <= 1, "cost(a+b)={cs} vs {ca}+{cb}");
        let small = Usage { input_tokens: a.0 % 1_000_000, output_tokens: a.1 % 1_000_000 };
        let scaled = Usage { input_tokens: small.input_tokens * k, output_tokens: small.output_tokens * k };
        let (c1, ck) = (price.cost(small).nanos() as i128, price.cost(scaled).nanos() as i128);
        prop_assert!((ck - k as i128 * c1).abs() <= (k as i128 + 1) / 2 + 1, "cost({k}·u)={ck} vs {k}·{c1}");
        prop_assert_eq!(price.cost(Usage::default()), Usd::ZERO);
        // Exact reference in integer pico-dollars.
        let pico = ua.input_tokens as u128 * pin as u128 + ua.output_tokens as u128 * pout as u128;
        prop_assert_eq!(ca as u128, (pico + 500) / 1000);
    }
}

/// Many threads reserving, settling (actual ≤ reserved) and cancelling against one ledger
/// never push spend past the limit, and the ledger's spend equals what was settled.
#[test]
fn budget_concurrent_reservations_never_exceed_limit() {
    let limit = 1_000_000u64;
    let l = ledger(limit, 3_600_000);
    let settled = AtomicU64::new(0);
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (l, settled, admitted) = (&l, &settled, &admitted);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..20_000 {
                    let want = rng.u64(1..5_000);
                    if let Ok(r) = l.reserve(Usd::from_nanos(want), 1) {
                        admitted.fetch_add(1, Relaxed);
                        assert!(l.committed(1).nanos() <= limit);
                        if rng.u8(..10) == 0 {
                            drop(r);
                        } else {
                            let actual = rng.u64(0..=want);
                            r.settle(Usd::from_nanos(actual));
                            settled.fetch_add(actual, Relaxed);
                        }
                    }
                }
            });
        }
    });
    let spent = l.spent(1).nanos();
    assert_eq!(spent, settled.load(Relaxed));
    assert!(spent <= limit, "{spent} > {limit}");
    assert_eq!(l.reserved(), Usd::ZERO);
    assert!(admitted.load(Relaxed) > 100, "test should admit plenty");
    assert!(spent > limit / 2, "test should get close to the limit");
}

proptest! {
    /// Any limit, window, clock value and amount: no panic, and the ledger's own accounting
    /// stays consistent (nothing left reserved once every reservation is settled or dropped).
    #[test]
    fn budget_accepts_any_input_without_panicking(
        limit in any::<u64>(),
        window in any::<u64>(),
        calls in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()), 0..50),
    ) {
        let Ok(l) = BudgetLedger::new(BudgetConfig {
            limit: Usd::from_nanos(limit),
            window: Duration::from_nanos(window),
        }) else {
            prop_assert_eq!(window, 0);
            return Ok(());
        };
        for (now, amount, actual, settle) in calls {
            let _ = (l.spent(now), l.remaining(now), l.committed(now), l.resets_in(now));
            if let Ok(r) = l.reserve(Usd::from_nanos(amount), now) {
                if settle { r.settle(Usd::from_nanos(actual)) }
            }
        }
        prop_assert_eq!(l.reserved(), Usd::ZERO);
    }
}
