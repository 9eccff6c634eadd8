use super::*;
use std::sync::{Arc, Mutex as StdMutex};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(3),
        failure_rate: None,
        slow_call: None,
        open_for: Duration::from_secs(10),
        probes: 2,
        successes_to_close: 2,
    }
}

fn call(b: &Breaker, failure: bool, now: u64) -> Option<Transition> {
    let p = b.try_acquire(now).expect("admitted");
    b.record(p, failure, Duration::from_millis(1), now)
}

#[test]
fn validate_rejects_bad_configs() {
    let bad = |f: fn(&mut BreakerConfig)| {
        let mut c = cfg();
        f(&mut c);
        Breaker::new(c).unwrap_err()
    };
    assert_eq!(
        bad(|c| c.consecutive_failures = Some(0)),
        BreakerConfigError::ZeroConsecutiveFailures
    );
    assert_eq!(bad(|c| c.probes = 0), BreakerConfigError::Probes(0));
    assert_eq!(
        bad(|c| c.probes = 70_000),
        BreakerConfigError::Probes(70_000)
    );
    assert!(matches!(
        bad(|c| c.successes_to_close = 3),
        BreakerConfigError::SuccessesToClose {
            value: 3,
            probes: 2
        }
    ));
    let rate = |threshold, min_calls, window| RateRule {
        threshold,
        min_calls,
        window,
    };
    for t in [0.0, -1.0, 1.5, f64::NAN, f64::INFINITY] {
        let mut c = cfg();
        c.failure_rate = Some(rate(t, 5, Duration::from_secs(1)));
        assert!(matches!(
            Breaker::new(c).unwrap_err(),
            BreakerConfigError::Threshold {
                rule: "failure_rate",
                ..
            }
        ));
    }
    let mut c = cfg();
    c.failure_rate = Some(rate(0.5, 0, Duration::from_secs(1)));
    assert!(matches!(
        Breaker::new(c).unwrap_err(),
        BreakerConfigError::MinCalls { .. }
    ));
    let mut c = cfg();
    c.slow_call = Some(SlowRule {
        over: Duration::ZERO,
        rate_threshold: 0.5,
        min_calls: 1,
        window: Duration::ZERO,
    });
    assert!(matches!(
        Breaker::new(c).unwrap_err(),
        BreakerConfigError::Window {
            rule: "slow_call",
            ..
        }
    ));
    // Messages are readable.
    assert_eq!(
        BreakerConfigError::Probes(0).to_string(),
        "probes must be in 1..=65535, got 0"
    );
}

#[test]
fn full_cycle_closed_open_half_open_closed() {
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let s2 = seen.clone();
    let b = Breaker::new(cfg())
        .unwrap()
        .with_observer(move |t| s2.lock().unwrap().push((t.from.name(), t.to.name())));
    assert_eq!(call(&b, true, 0), None);
    assert_eq!(call(&b, false, 0), None); // success resets the run
    call(&b, true, 1);
    call(&b, true, 2);
    let t = call(&b, true, 3).expect("opens on the third failure in a row");
    assert_eq!(t.to, BreakerState::Open);
    assert_eq!(b.open_until(), Some(3 + 10 * SEC));
    assert_eq!(t.reason, TransitionReason::ConsecutiveFailures);

    let err = b.try_acquire(3 + 4 * SEC).unwrap_err();
    assert_eq!(
        err,
        BreakerOpen {
            retry_in: Duration::from_secs(6),
            probing: false
        }
    );
    assert_eq!(b.state(3 + 10 * SEC), BreakerState::HalfOpen);

    let now = 3 + 10 * SEC;
    let p1 = b.try_acquire(now).unwrap();
    assert!(p1.is_probe());
    assert_eq!(
        p1.transition().unwrap().reason,
        TransitionReason::OpenElapsed
    );
    let p2 = b.try_acquire(now).unwrap();
    assert!(b.try_acquire(now).unwrap_err().probing, "only 2 probes");
    assert_eq!(b.record(p1, false, Duration::ZERO, now), None);
    let t = b.record(p2, false, Duration::ZERO, now).unwrap();
    assert_eq!(
        (t.to, t.reason),
        (BreakerState::Closed, TransitionReason::ProbesSucceeded)
    );
    assert_eq!(b.transitions(), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed")
        ]
    );
    assert_eq!(b.snapshot(now).consecutive_failures, 0);
}

#[test]
fn probe_failure_reopens_and_stale_probes_are_ignored() {
    let b = Breaker::new(cfg()).unwrap();
    for i in 0..3 {
        call(&b, true, i);
    }
    let now = 20 * SEC;
    let p1 = b.try_acquire(now).unwrap();
    let p2 = b.try_acquire(now).unwrap();
    let t = b.record(p1, true, Duration::ZERO, now).unwrap();
    assert_eq!(t.to, BreakerState::Open);
    // p2 belongs to the previous half-open phase: no effect.
    assert_eq!(b.record(p2, false, Duration::ZERO, now), None);
    assert_eq!(b.state(now), BreakerState::Open);
    assert_eq!(b.snapshot(now).open_until, Some(now + 10 * SEC));
}

#[test]
fn dropped_probe_gives_its_slot_back() {
    let mut c = cfg();
    c.probes = 1;
    c.successes_to_close = 1;
    let b = Breaker::new(c).unwrap();
    for i in 0..3 {
        call(&b, true, i);
    }
    let now = 20 * SEC;
    let p = b.try_acquire(now).unwrap();
    assert!(b.try_acquire(now).is_err());
    drop(p);
    assert_eq!(b.snapshot(now).probes_admitted, 0);
    let p = b.try_acquire(now).unwrap();
    b.record(p, false, Duration::ZERO, now);
    assert_eq!(b.state(now), BreakerState::Closed);
}

#[test]
fn failure_rate_rule_trips_on_failure_with_min_calls() {
    let c = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(RateRule {
            threshold: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
        }),
        ..cfg()
    };
    let b = Breaker::new(c).unwrap();
    call(&b, true, 0);
    call(&b, false, SEC);
    call(&b, true, 2 * SEC); // 2/3 but fewer than min_calls
    assert_eq!(b.state(2 * SEC), BreakerState::Closed);
    call(&b, false, 3 * SEC);
    let t = call(&b, true, 4 * SEC).unwrap(); // 3/5
    assert_eq!(t.reason, TransitionReason::FailureRate);
}

#[test]
fn failure_rate_forgets_calls_outside_the_window() {
    let c = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(RateRule {
            threshold: 0.5,
            min_calls: 2,
            window: Duration::from_secs(10),
        }),
        ..cfg()
    };
    let b = Breaker::new(c).unwrap();
    call(&b, true, 0);
    // 11 s later the first failure has left the window: 1 failure of 1 call < min_calls.
    assert_eq!(call(&b, true, 11 * SEC), None);
    let stats = b.snapshot(11 * SEC);
    assert_eq!(stats.failure_window.unwrap().calls, 1);
    assert_eq!(stats.slow_window, None);
}

#[test]
fn slow_call_rule_trips_and_shares_window() {
    let c = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(RateRule {
            threshold: 1.0,
            min_calls: 100,
            window: Duration::from_secs(10),
        }),
        slow_call: Some(SlowRule {
            over: Duration::from_secs(2),
            rate_threshold: 0.6,
            min_calls: 3,
            window: Duration::from_secs(10),
        }),
        ..cfg()
    };
    let b = Breaker::new(c).unwrap();
    assert_eq!(b.rings.len(), 1, "same window: one ring");
    let rec = |elapsed, now| {
        let p = b.try_acquire(now).unwrap();
        b.record(p, false, Duration::from_millis(elapsed), now)
    };
    assert_eq!(rec(3_000, 0), None);
    assert_eq!(rec(100, 1), None);
    assert_eq!(rec(2_000, 2), None); // exactly `over` is not slow
    assert_eq!(rec(2_001, 3), None); // 2 slow of 4 = 0.5 < 0.6
    let t = rec(9_000, 4).unwrap(); // 3 of 5 = 0.6
    assert_eq!(t.reason, TransitionReason::SlowCallRate, "{t:?}");
}

#[test]
fn slow_probe_reopens() {
    let c = BreakerConfig {
        slow_call: Some(SlowRule {
            over: Duration::from_secs(1),
            rate_threshold: 1.0,
            min_calls: 1000,
            window: Duration::from_secs(30),
        }),
        ..cfg()
    };
    let b = Breaker::new(c).unwrap();
    for i in 0..3 {
        call(&b, true, i);
    }
    let now = 20 * SEC;
    let p = b.try_acquire(now).unwrap();
    let t = b.record(p, false, Duration::from_secs(5), now).unwrap();
    assert_eq!(t.reason, TransitionReason::ProbeFailed);
}

#[test]
fn outcomes_from_before_a_transition_are_ignored() {
    let b = Breaker::new(cfg()).unwrap();
    let old = b.try_acquire(0).unwrap();
    for i in 0..3 {
        call(&b, true, i);
    }
    assert_eq!(b.record(old, true, Duration::ZERO, 5), None);
    assert_eq!(b.transitions(), 1);
}

#[test]
fn foreign_permit_is_ignored() {
    let a = Breaker::new(cfg()).unwrap();
    let b = Breaker::new(cfg()).unwrap();
    for _ in 0..5 {
        let p = a.try_acquire(0).unwrap();
        assert_eq!(b.record(p, true, Duration::ZERO, 0), None);
    }
    assert_eq!(b.state(0), BreakerState::Closed);
}

#[test]
fn huge_times_and_durations_do_not_panic() {
    let c = BreakerConfig {
        open_for: Duration::MAX,
        ..cfg()
    };
    let b = Breaker::new(c).unwrap();
    for _ in 0..3 {
        let p = b.try_acquire(u64::MAX).unwrap();
        b.record(p, true, Duration::MAX, u64::MAX);
    }
    assert_eq!(b.state(u64::MAX), BreakerState::HalfOpen); // until saturated at u64::MAX
    let _ = b.snapshot(u64::MAX);
}

#[test]
fn concurrent_probes_never_exceed_limit() {
    let c = BreakerConfig {
        probes: 3,
        successes_to_close: 3,
        ..cfg()
    };
    let b = Arc::new(Breaker::new(c).unwrap());
    for i in 0..3 {
        call(&b, true, i);
    }
    let now = 20 * SEC;
    let held = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let b = &b;
                s.spawn(move || {
                    let mut n = 0;
                    for _ in 0..1000 {
                        if let Ok(p) = b.try_acquire(now) {
                            n += 1;
                            std::mem::forget(p); // hold the slot forever
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u32>()
    });
    assert_eq!(held, 3);
}

#[test]
fn transition_is_returned_in_registers() {
    assert!(std::mem::size_of::<Option<Transition>>() <= 16);
}

#[test]
fn is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Breaker>();
    check::<BreakerPermit<'static>>();
}

#[test]
fn force_open_opens_extends_and_then_probes_as_usual() {
    let b = Breaker::new(cfg()).unwrap();
    // Closed: a signal opens it until the given time, as a transition.
    let t = b.force_open(5 * SEC, SEC).expect("a transition");
    assert_eq!(
        (t.from, t.to, t.reason),
        (
            BreakerState::Closed,
            BreakerState::Open,
            TransitionReason::Signalled
        )
    );
    assert_eq!(b.open_until(), Some(5 * SEC));
    assert!(b.try_acquire(2 * SEC).is_err());
    // Already open: an earlier deadline changes nothing, a later one extends it silently.
    assert!(b.force_open(3 * SEC, 2 * SEC).is_none());
    assert_eq!(b.open_until(), Some(5 * SEC));
    assert!(b.force_open(6 * SEC, 2 * SEC).is_none());
    assert_eq!(b.open_until(), Some(6 * SEC));
    assert_eq!(b.transitions(), 1);
    // A deadline already past does nothing.
    assert!(b.force_open(SEC, 2 * SEC).is_none());
    // After it: half-open, probing locally; the probes close it.
    let p = b.try_acquire(6 * SEC).expect("a probe");
    assert!(p.is_probe());
    b.record(p, false, Duration::from_millis(1), 6 * SEC);
    // Half-open: a signal reopens it (the probe in flight no longer counts).
    let p = b.try_acquire(6 * SEC).expect("a probe");
    let t = b.force_open(9 * SEC, 6 * SEC).expect("reopened");
    assert_eq!(t.from, BreakerState::HalfOpen);
    assert!(b
        .record(p, false, Duration::from_millis(1), 6 * SEC)
        .is_none());
    assert_eq!(b.state(7 * SEC), BreakerState::Open);
    let p = b.try_acquire(9 * SEC).expect("a probe");
    b.record(p, false, Duration::from_millis(1), 9 * SEC);
    let p = b.try_acquire(9 * SEC).expect("a probe");
    b.record(p, false, Duration::from_millis(1), 9 * SEC);
    assert_eq!(b.state(9 * SEC), BreakerState::Closed);
}
