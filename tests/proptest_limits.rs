//! Property tests for the executor's primitives, one per invariant in DESIGN.md.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::exec::backoff::{next_delay, BackoffConfig, BackoffKind, Delay, Jitter};
use tollgate::exec::limit::{
    ConcurrencyConfig, ConcurrencyLimiter, LimitError, RateConfig, RateLimiter, TokenConfig,
    TokenLimiter,
};
use tollgate::exec::retry_budget::{RetryBudget, RetryBudgetConfig, BUCKETS};

// ---------------------------------------------------------------------------------------
// backoff

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..10_000_000_000).prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_nanos),
        Just(Duration::ZERO),
        Just(Duration::MAX),
    ]
}

fn any_jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        (0.0f64..=1.0).prop_map(Jitter::Proportional),
        any::<f64>().prop_map(Jitter::Proportional),
    ]
}

fn any_backoff() -> impl Strategy<Value = BackoffConfig> {
    (
        prop_oneof![
            Just(BackoffKind::Exponential),
            Just(BackoffKind::Constant),
            Just(BackoffKind::Decorrelated)
        ],
        any_duration(),
        prop_oneof![1.0f64..10.0, any::<f64>()],
        any_duration(),
        any_jitter(),
    )
        .prop_map(|(kind, base, factor, max, jitter)| BackoffConfig {
            kind,
            base,
            factor,
            max,
            jitter,
        })
}

fn any_retry() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..100, any::<u32>()]
}

proptest! {
    #[test]
    fn backoff_delay_within_zero_and_max(
        cfg in any_backoff(), retry in any_retry(), prev in any_duration(), seed in any::<u64>()
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let d = cfg.delay(retry, prev, &mut rng);
        prop_assert!(d <= cfg.max);
        prop_assert!(d <= cfg.worst_case(retry));
        prop_assert!(cfg.worst_case(retry) <= cfg.max);
        prop_assert!(cfg.ceiling(retry) <= cfg.max);
    }

    #[test]
    fn backoff_ceiling_never_decreases(cfg in any_backoff(), retry in any_retry()) {
        let next = retry.saturating_add(1);
        prop_assert!(cfg.ceiling(retry) <= cfg.ceiling(next));
        prop_assert!(cfg.worst_case(retry) <= cfg.worst_case(next));
    }

    #[test]
    fn backoff_never_overruns_deadline(
        cfg in any_backoff(),
        deadline_ms in 1u64..100_000,
        attempts_ms in prop::collection::vec(0u64..5_000, 1..40),
        retry_afters in prop::collection::vec(prop::option::of(0u64..20_000), 40),
        cap_ms in 0u64..30_000,
        seed in any::<u64>(),
    ) {
        let deadline = Duration::from_millis(deadline_ms);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut elapsed = Duration::ZERO;
        let mut prev = Duration::ZERO;
        let mut slept = Duration::ZERO;
        for (i, attempt) in attempts_ms.iter().enumerate() {
            elapsed += Duration::from_millis(*attempt);
            if elapsed >= deadline {
                break;
            }
            let retry = i as u32 + 1;
            let computed = cfg.delay(retry, prev, &mut rng);
            let ra = retry_afters[i].map(Duration::from_millis);
            match next_delay(computed, ra, true, Duration::from_millis(cap_ms), deadline - elapsed) {
                Delay::Sleep(d) => {
                    prop_assert!(elapsed + d < deadline, "sleep {d:?} at {elapsed:?} overruns {deadline:?}");
                    elapsed += d;
                    slept += d;
                    prev = d;
                }
                Delay::TooLong { requested } => {
                    prop_assert!(requested > Duration::from_millis(cap_ms));
                    break;
                }
                Delay::PastDeadline => break,
            }
        }
        prop_assert!(slept < deadline);
    }

    #[test]
    fn retry_after_honoured_up_to_cap(
        computed in any_duration(),
        retry_after in any_duration(),
        cap in any_duration(),
        remaining in any_duration(),
        honor in any::<bool>(),
    ) {
        let got = next_delay(computed, Some(retry_after), honor, cap, remaining);
        if !honor {
            let want = if computed < remaining { Delay::Sleep(computed) } else { Delay::PastDeadline };
            prop_assert_eq!(got, want);
        } else if retry_after > cap {
            prop_assert_eq!(got, Delay::TooLong { requested: retry_after });
        } else {
            let want = computed.max(retry_after);
            match got {
                Delay::Sleep(d) => {
                    prop_assert!(d >= retry_after, "server asked {retry_after:?}, we sleep {d:?}");
                    prop_assert_eq!(d, want);
                    prop_assert!(d < remaining);
                }
                Delay::PastDeadline => prop_assert!(want >= remaining),
                Delay::TooLong { .. } => prop_assert!(false, "TooLong below the cap"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// rate limiter

fn any_rate() -> impl Strategy<Value = RateConfig> {
    (
        prop_oneof![0.5f64..20.0, 20.0f64..1e6],
        prop_oneof![1u32..5, 5u32..50],
    )
        .prop_map(|(rate_per_sec, burst)| RateConfig {
            rate_per_sec,
            burst,
        })
}

/// Arrivals: (gap as a fraction of the emission interval, cells requested).
fn arrivals() -> impl Strategy<Value = Vec<(f64, u32)>> {
    prop::collection::vec(
        (
            prop_oneof![Just(0.0), 0.0f64..0.5, 0.0f64..3.0, 0.0f64..50.0],
            prop_oneof![4 => Just(1u32), 1 => 0u32..8],
        ),
        1..250,
    )
}

/// Checks `admitted in [a, b] <= rate·(b-a) + burst` for every window bounded by
/// admission times (the tightest windows).
fn check_windows(admitted: &mut [(u64, u32)], cfg: RateConfig) -> Result<(), TestCaseError> {
    admitted.sort_unstable();
    for i in 0..admitted.len() {
        let mut count = 0u64;
        for j in i..admitted.len() {
            count += admitted[j].1 as u64;
            let w = (admitted[j].0 - admitted[i].0) as f64 / 1e9;
            let bound = cfg.rate_per_sec * w + cfg.burst as f64;
            prop_assert!(
                count as f64 <= bound + 1e-9,
                "{count} admitted in a window of {w}s, bound {bound}"
            );
        }
    }
    Ok(())
}

fn drive(
    lim: &RateLimiter,
    cfg: RateConfig,
    arrivals: &[(f64, u32)],
    jitter_back: &[u64],
) -> Vec<(u64, u32)> {
    let t = 1e9 / cfg.rate_per_sec;
    let mut now = 1_000_000_000u64;
    let mut admitted = Vec::new();
    for (i, (gap, n)) in arrivals.iter().enumerate() {
        now += (gap * t) as u64;
        // a clock read by another thread may lag behind
        let seen = now.saturating_sub(jitter_back.get(i).copied().unwrap_or(0));
        let ok = if *n == 1 {
            lim.check(seen).is_ok()
        } else {
            lim.check_n(*n, seen).is_ok()
        };
        if ok && *n > 0 {
            admitted.push((seen, *n));
        }
    }
    admitted
}

proptest! {
    #[test]
    fn limiter_admits_at_most_rate_times_window_plus_burst(cfg in any_rate(), arrivals in arrivals()) {
        let lim = RateLimiter::new(cfg).unwrap();
        let mut admitted = drive(&lim, cfg, &arrivals, &[]);
        check_windows(&mut admitted, cfg)?;
    }

    #[test]
    fn limiter_bound_holds_with_lagging_clock_reads(
        cfg in any_rate(),
        arrivals in arrivals(),
        lag in prop::collection::vec(prop_oneof![Just(0u64), 0u64..50_000_000], 250),
    ) {
        let lim = RateLimiter::new(cfg).unwrap();
        let mut admitted = drive(&lim, cfg, &arrivals, &lag);
        check_windows(&mut admitted, cfg)?;
    }

    #[test]
    fn limiter_admits_whole_burst_after_idle(cfg in any_rate()) {
        let lim = RateLimiter::new(cfg).unwrap();
        prop_assert_eq!(lim.headroom(0), cfg.burst);
        for _ in 0..cfg.burst {
            prop_assert!(lim.check(0).is_ok());
        }
        let refused = lim.check(0).unwrap_err();
        prop_assert!(lim.check(refused.earliest()).is_ok());
        let never = matches!(
            lim.check_n(cfg.burst + 1, u64::MAX / 2),
            Err(LimitError::NeverAdmissible { .. })
        );
        prop_assert!(never, "check_n above the burst must be NeverAdmissible");
    }

    #[test]
    fn tighten_never_loosens(
        cfg in any_rate(),
        history in arrivals(),
        remaining in prop_oneof![0u64..10, any::<u64>()],
        reset_ms in prop_oneof![0u64..5_000, any::<u64>()],
        probes in prop::collection::vec(0u64..10_000_000_000, 1..20),
        followers in prop::collection::vec(0u64..10_000_000_000, 0..100),
    ) {
        let lim = RateLimiter::new(cfg).unwrap();
        let admitted = drive(&lim, cfg, &history, &[]);
        let now = admitted.last().map_or(1_000_000_000, |a| a.0);
        let before: Vec<_> = probes.iter().map(|p| lim.snapshot(now + p)).collect();
        let reset_in = Duration::from_millis(reset_ms);
        lim.tighten(remaining, reset_in, now);
        for (p, b) in probes.iter().zip(&before) {
            let a = lim.snapshot(now + p);
            prop_assert!(a.headroom <= b.headroom);
            prop_assert!(a.next_free_in >= b.next_free_in);
        }
        // at most `remaining` admissions before the reset
        let reset_at = now.saturating_add(reset_ms.saturating_mul(1_000_000));
        let mut times: Vec<u64> = followers.iter().map(|f| now + f).collect();
        times.sort_unstable();
        let early = times
            .iter()
            .filter(|t| **t < reset_at && lim.check(**t).is_ok())
            .count() as u64;
        prop_assert!(early <= remaining, "{early} admitted before reset, remaining {remaining}");
    }
}

// ---------------------------------------------------------------------------------------
// tokens

#[derive(Debug, Clone)]
enum TokOp {
    Reserve(u64),
    Settle { which: usize, actual: u64 },
    Drop(usize),
}

fn tok_ops() -> impl Strategy<Value = Vec<TokOp>> {
    prop::collection::vec(
        prop_oneof![
            (0u64..5_000).prop_map(TokOp::Reserve),
            (any::<usize>(), 0u64..8_000)
                .prop_map(|(which, actual)| TokOp::Settle { which, actual }),
            any::<usize>().prop_map(TokOp::Drop),
        ],
        1..100,
    )
}

proptest! {
    #[test]
    fn tokens_reservation_reconcile_conserves(
        tpm in prop_oneof![1u64..1_000, 1_000u64..10_000_000],
        burst in 1u64..50_000,
        now in any::<u32>(),
        ops in tok_ops(),
    ) {
        let now = now as u64;
        let lim = TokenLimiter::new(TokenConfig { tokens_per_minute: tpm, burst }).unwrap();
        let mut open = Vec::new();
        let mut charged = 0u64; // tokens that must stay counted
        for op in ops {
            match op {
                TokOp::Reserve(n) => match lim.reserve(n, now) {
                    Ok(r) => {
                        charged += n;
                        open.push(r);
                    }
                    Err(LimitError::NeverAdmissible { .. }) => prop_assert!(n > burst),
                    Err(LimitError::TokensExhausted { .. }) => prop_assert!(lim.in_bucket(now) + n > burst),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                TokOp::Settle { which, actual } if !open.is_empty() => {
                    let r = open.swap_remove(which % open.len());
                    charged = charged - r.estimate() + actual;
                    r.settle(actual, now);
                }
                TokOp::Drop(which) if !open.is_empty() => {
                    drop(open.swap_remove(which % open.len())); // keeps the estimate
                }
                _ => {}
            }
            prop_assert_eq!(lim.in_bucket(now), charged);
            prop_assert_eq!(lim.available(now), burst.saturating_sub(charged));
        }
        drop(open);
        // everything drains eventually
        prop_assert_eq!(lim.available(u64::MAX / 8), burst);
    }
}

// ---------------------------------------------------------------------------------------
// concurrency

#[derive(Debug, Clone)]
enum TaskPlan {
    /// hold the permit this long, then finish normally
    Hold(u64),
    /// hold, then panic while holding
    Panic(u64),
    /// aborted by the test after this many ms (waiting or holding)
    Abort(u64),
}

fn task_plan() -> impl Strategy<Value = (bool, u64, TaskPlan)> {
    (
        any::<bool>(), // try_acquire vs acquire_timeout
        0u64..50,      // queue timeout ms
        prop_oneof![
            (0u64..30).prop_map(TaskPlan::Hold),
            (0u64..30).prop_map(TaskPlan::Panic),
            (0u64..30).prop_map(TaskPlan::Abort),
        ],
    )
}

fn quiet_intentional_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let intentional = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|s| s.contains("intentional test panic"));
            if !intentional {
                default(info);
            }
        }));
    });
}

/// Decrements the holder count when dropped: on return, panic or cancellation.
struct Holding(Arc<AtomicU32>);
impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn concurrency_never_exceeds_limit_and_permits_return(
        limit in 1u32..6,
        tasks in prop::collection::vec(task_plan(), 1..30),
    ) {
        quiet_intentional_panics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let lim = ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: limit }).unwrap();
            let holders = Arc::new(AtomicU32::new(0));
            let peak = Arc::new(AtomicU32::new(0));
            let mut handles = Vec::new();
            for (fail_fast, queue_ms, plan) in tasks {
                let (lim2, holders, peak) = (lim.clone(), holders.clone(), peak.clone());
                let hold_plan = plan.clone();
                let h = tokio::spawn(async move {
                    let permit = if fail_fast {
                        lim2.try_acquire()
                    } else {
                        lim2.acquire_timeout(Duration::from_millis(queue_ms)).await
                    };
                    let Ok(_permit) = permit else { return };
                    let n = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    let _holding = Holding(holders);
                    peak.fetch_max(n, Ordering::SeqCst);
                    assert!(lim2.in_flight() <= limit);
                    match hold_plan {
                        TaskPlan::Hold(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        TaskPlan::Panic(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            panic!("intentional test panic");
                        }
                        TaskPlan::Abort(_) => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                });
                handles.push((plan, h));
                tokio::task::yield_now().await;
            }
            for (plan, h) in &handles {
                if let TaskPlan::Abort(ms) = plan {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                    h.abort();
                }
                prop_assert!(lim.in_flight() <= limit);
            }
            for (_, h) in handles {
                let _ = h.await; // panics and cancellations are expected
            }
            prop_assert!(peak.load(Ordering::SeqCst) <= limit);
            prop_assert_eq!(holders.load(Ordering::SeqCst), 0);
            prop_assert_eq!(lim.in_flight(), 0);
            let all: Vec<_> = (0..limit).map(|_| lim.try_acquire()).collect();
            prop_assert!(all.iter().all(|p| p.is_ok()), "a permit was not returned");
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// retry budget

proptest! {
    #[test]
    fn retry_budget_amplification_bound(
        ratio in prop_oneof![Just(0.0), 0.0f64..2.0],
        min_per_second in prop_oneof![Just(0.0), 0.0f64..5.0],
        ttl_ms in 1u64..20_000,
        ops in prop::collection::vec((any::<bool>(), prop_oneof![Just(0u64), 0u64..100_000_000, 0u64..5_000_000_000]), 1..400),
    ) {
        let ttl = Duration::from_millis(ttl_ms);
        let b = RetryBudget::new(RetryBudgetConfig { ratio, min_per_second, ttl }).unwrap();
        let ttl_eff = (ttl.as_nanos() as u64 / BUCKETS as u64 * BUCKETS as u64) as f64 / 1e9;
        let (mut now, mut deposits, mut withdrawals) = (0u64, 0u64, 0u64);
        for (is_request, gap) in ops {
            now += gap;
            if is_request {
                b.deposit(now);
                deposits += 1;
            } else if b.try_withdraw(now) {
                withdrawals += 1;
            }
            let bound = ratio * deposits as f64 + min_per_second * (now as f64 / 1e9 + ttl_eff);
            prop_assert!(
                withdrawals as f64 <= bound + 1e-6,
                "{withdrawals} extra attempts for {deposits} requests over {}s, bound {bound}",
                now as f64 / 1e9
            );
        }
    }
}
