//! Property tests for the circuit breaker, each named after the invariant it checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tollgate::exec::breaker::{
    Breaker, BreakerConfig, BreakerPermit, BreakerState, RateRule, SlowRule, Transition,
};

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Record the held permit at this index (mod len): failure, elapsed ms.
    Record(usize, bool, u64),
    /// Drop (cancel) the held permit at this index.
    Cancel(usize),
    /// Move the clock forward by this many ms.
    Advance(u64),
    /// Set the clock to any value (clocks are not always kind).
    Jump(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), any::<bool>(), 0u64..3_000).prop_map(|(i, f, e)| Op::Record(i, f, e)),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u64..2_000).prop_map(Op::Advance),
        1 => (0u64..1_000_000 * MS).prop_map(Op::Jump),
        1 => any::<u64>().prop_map(Op::Jump), // includes values near u64::MAX
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (
        proptest::option::of(1u32..6),
        proptest::option::of((0.05f64..=1.0, 1u32..10, 10u64..5_000)),
        proptest::option::of((0u64..2_500, 0.05f64..=1.0, 1u32..10, 10u64..5_000)),
        0u64..1_500,
        1u32..5,
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(consecutive, rate, slow, open_for, probes, s2c)| BreakerConfig {
                consecutive_failures: consecutive,
                failure_rate: rate.map(|(threshold, min_calls, w)| RateRule {
                    threshold,
                    min_calls,
                    window: Duration::from_millis(w),
                }),
                slow_call: slow.map(|(over, rate_threshold, min_calls, w)| SlowRule {
                    over: Duration::from_millis(over),
                    rate_threshold,
                    min_calls,
                    window: Duration::from_millis(w),
                }),
                open_for: Duration::from_millis(open_for),
                probes,
                successes_to_close: 1 + s2c.index(probes as usize) as u32,
            },
        )
}

fn kind(s: BreakerState) -> &'static str {
    s.name()
}

fn observed(cfg: BreakerConfig) -> (Breaker, Arc<Mutex<Vec<Transition>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let b = Breaker::new(cfg)
        .expect("valid config")
        .with_observer(move |t| sink.lock().unwrap().push(*t));
    (b, log)
}

/// A permit we hold, plus which half-open phase it was admitted in (if a probe).
struct Held<'a> {
    permit: BreakerPermit<'a>,
    phase: Option<usize>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Only closed→open, open→half-open, half-open→closed and half-open→open ever happen,
    /// each transition starts where the previous one ended, and every transition is reported
    /// once (observer, return values and the counter agree).
    #[test]
    fn breaker_transitions_are_legal(cfg in config(), ops in prop::collection::vec(op(), 1..300)) {
        let (b, log) = observed(cfg);
        let mut now = 0u64;
        let mut held: Vec<BreakerPermit<'_>> = Vec::new();
        let mut returned = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => if let Ok(p) = b.try_acquire(now) {
                    returned.extend(p.transition());
                    held.push(p);
                },
                Op::Record(i, failure, ms) if !held.is_empty() => {
                    let p = held.swap_remove(i % held.len());
                    returned.extend(b.record(p, failure, Duration::from_millis(ms), now));
                }
                Op::Cancel(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
                Op::Advance(ms) => now = now.saturating_add(ms * MS),
                Op::Jump(t) => now = t,
                _ => {}
            }
        }
        let log = log.lock().unwrap().clone();
        prop_assert_eq!(log.len() as u64, b.transitions());
        prop_assert_eq!(&log, &returned);
        let mut at = "closed";
        for (i, t) in log.iter().enumerate() {
            prop_assert_eq!(t.seq as usize, i + 1);
            let pair = (kind(t.from), kind(t.to));
            prop_assert!(
                matches!(pair, ("closed", "open") | ("open", "half_open") | ("half_open", "closed") | ("half_open", "open")),
                "illegal transition {:?}", t
            );
            prop_assert_eq!(pair.0, at, "transition {:?} does not start where the last ended", t);
            at = pair.1;
        }
    }

    /// While half-open, at most `probes` probe permits are admitted and not cancelled.
    #[test]
    fn breaker_half_open_admits_at_most_probes(cfg in config(), ops in prop::collection::vec(op(), 1..300)) {
        let probes = cfg.probes as usize;
        let (b, log) = observed(cfg);
        let mut now = 0u64;
        let mut held: Vec<Held<'_>> = Vec::new();
        // Per half-open phase (numbered by entries into half-open): probe slots in use.
        let mut in_use: Vec<usize> = Vec::new();
        let entries = |log: &Arc<Mutex<Vec<Transition>>>| {
            log.lock().unwrap().iter().filter(|t| t.to == BreakerState::HalfOpen).count()
        };
        for op in ops {
            match op {
                Op::Acquire => if let Ok(p) = b.try_acquire(now) {
                    let phase = p.is_probe().then(|| entries(&log));
                    if let Some(ph) = phase {
                        in_use.resize(in_use.len().max(ph + 1), 0);
                        in_use[ph] += 1;
                        prop_assert!(in_use[ph] <= probes, "phase {} admitted {} > {} probes", ph, in_use[ph], probes);
                    }
                    held.push(Held { permit: p, phase });
                },
                Op::Record(i, failure, ms) if !held.is_empty() => {
                    let h = held.swap_remove(i % held.len());
                    b.record(h.permit, failure, Duration::from_millis(ms), now);
                }
                Op::Cancel(i) if !held.is_empty() => {
                    let h = held.swap_remove(i % held.len());
                    if let Some(ph) = h.phase { in_use[ph] -= 1; }
                    drop(h.permit);
                }
                Op::Advance(ms) => now = now.saturating_add(ms * MS),
                Op::Jump(t) => now = t,
                _ => {}
            }
            prop_assert!(b.snapshot(now).probes_admitted as usize <= probes);
        }
    }

    /// With a consecutive-failure rule of N: N−1 failures in a row never open the breaker,
    /// the N-th does, whatever successes came before and whenever the calls happen.
    #[test]
    fn breaker_opens_after_consecutive_failures(
        n in 1u32..8,
        prefix in prop::collection::vec(any::<bool>(), 0..50),
        times in prop::collection::vec(0u64..10_000, 60),
    ) {
        let cfg = BreakerConfig {
            consecutive_failures: Some(n),
            failure_rate: None,
            slow_call: None,
            open_for: Duration::from_secs(3600),
            probes: 1,
            successes_to_close: 1,
        };
        let (b, _log) = observed(cfg);
        let mut t = times.into_iter().cycle().scan(0u64, |now, dt| { *now += dt * MS; Some(*now) });
        // A prefix whose failure runs stay below N (a success breaks each run).
        let mut run = 0;
        for failure in prefix {
            let failure = failure && run + 1 < n;
            run = if failure { run + 1 } else { 0 };
            let now = t.next().unwrap();
            let p = b.try_acquire(now).unwrap();
            prop_assert_eq!(b.record(p, failure, Duration::ZERO, now), None);
        }
        let now = t.next().unwrap();
        let p = b.try_acquire(now).unwrap();
        b.record(p, false, Duration::ZERO, now);
        for i in 1..=n {
            let now = t.next().unwrap();
            let p = b.try_acquire(now).unwrap();
            let tr = b.record(p, true, Duration::ZERO, now);
            if i < n {
                prop_assert_eq!(tr, None);
                prop_assert_eq!(b.state(now), BreakerState::Closed);
            } else {
                prop_assert_eq!(tr.map(|t| kind(t.to)), Some("open"));
                prop_assert_eq!(b.state(now), BreakerState::Open);
                prop_assert!(b.try_acquire(now).is_err());
            }
        }
    }

    /// A closed breaker whose rules never trip admits every call, at any time, in any order of
    /// acquire/record/cancel.
    #[test]
    fn breaker_closed_path_admits_all(cfg in config(), ops in prop::collection::vec(op(), 1..300)) {
        // Only successes, never slow: no rule can trip.
        let cfg = BreakerConfig {
            slow_call: cfg.slow_call.map(|s| SlowRule { over: Duration::from_secs(10), ..s }),
            ..cfg
        };
        let (b, _log) = observed(cfg);
        let mut now = 0u64;
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let p = b.try_acquire(now);
                    prop_assert!(p.is_ok(), "refused while closed: {:?}", p.err());
                    let p = p.unwrap();
                    prop_assert!(!p.is_probe());
                    held.push(p);
                }
                Op::Record(i, _, ms) if !held.is_empty() => {
                    let p = held.swap_remove(i % held.len());
                    prop_assert_eq!(b.record(p, false, Duration::from_millis(ms), now), None);
                }
                Op::Cancel(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
                Op::Advance(ms) => now = now.saturating_add(ms * MS),
                Op::Jump(t) => now = t,
                _ => {}
            }
            prop_assert_eq!(b.state(now), BreakerState::Closed);
        }
        prop_assert_eq!(b.transitions(), 0);
    }
}

/// Threads hammering a closed breaker with successes are all admitted, and a concurrent
/// burst of failures opens it exactly once.
#[test]
fn breaker_concurrent_failures_open_once() {
    let (b, log) = observed(BreakerConfig {
        consecutive_failures: Some(50),
        failure_rate: None,
        slow_call: None,
        open_for: Duration::from_secs(3600),
        probes: 1,
        successes_to_close: 1,
    });
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    if let Ok(p) = b.try_acquire(1) {
                        b.record(p, true, Duration::ZERO, 1);
                    }
                }
            });
        }
    });
    assert_eq!(b.transitions(), 1);
    assert_eq!(log.lock().unwrap()[0].to, BreakerState::Open);
    assert_eq!(b.open_until(), Some(1 + 3600 * 1_000 * MS));
}

/// Threads racing through acquire/record/cancel with random outcomes: sorted by `seq`, the
/// observed transitions form one legal chain, and no half-open phase ever had more than
/// `probes` slots in use (checked through snapshots).
#[test]
fn breaker_concurrent_transitions_are_legal() {
    let (b, log) = observed(BreakerConfig {
        consecutive_failures: Some(2),
        failure_rate: Some(RateRule {
            threshold: 0.5,
            min_calls: 4,
            window: Duration::from_micros(50),
        }),
        slow_call: None,
        open_for: Duration::from_micros(5),
        probes: 2,
        successes_to_close: 2,
    });
    let epoch = std::time::Instant::now();
    std::thread::scope(|s| {
        for seed in 0..4u64 {
            let b = &b;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                for _ in 0..20_000 {
                    let now = epoch.elapsed().as_nanos() as u64;
                    if let Ok(p) = b.try_acquire(now) {
                        match rng.u8(..10) {
                            0 => drop(p),
                            n => {
                                let now = epoch.elapsed().as_nanos() as u64;
                                b.record(p, n < 4, Duration::ZERO, now);
                            }
                        }
                    }
                    assert!(b.snapshot(now).probes_admitted <= 2);
                }
            });
        }
    });
    let mut log = log.lock().unwrap().clone();
    log.sort_by_key(|t| t.seq);
    assert!(
        log.len() > 10,
        "the test should cycle the breaker: {}",
        log.len()
    );
    assert_eq!(log.len() as u64, b.transitions());
    let mut at = "closed";
    for (i, t) in log.iter().enumerate() {
        assert_eq!(t.seq as usize, i + 1);
        let pair = (t.from.name(), t.to.name());
        assert!(
            matches!(
                pair,
                ("closed", "open")
                    | ("open", "half_open")
                    | ("half_open", "closed")
                    | ("half_open", "open")
            ),
            "illegal transition {t:?}"
        );
        assert_eq!(pair.0, at, "{t:?}");
        at = pair.1;
    }
}
