//! Shared limiters and budgets on the in-process [`MemoryBackend`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn settings(lease: u32, fail_mode: FailMode) -> RedisSettings {
    RedisSettings {
        url_env: "REDIS_URL".into(),
        key_prefix: "t:".into(),
        timeout: Duration::from_millis(50),
        pool_size: 1,
        fail_mode,
        expected_instances: 2,
        lease,
        breaker_poll: crate::plan::DEFAULT_BREAKER_POLL,
    }
}

fn shared(b: &Arc<MemoryBackend>, lease: u32) -> Shared {
    Shared::new(b.clone(), settings(lease, FailMode::Open))
}

/// Lets spawned prefetches run to completion (the memory backend answers at once).
async fn settle_tasks() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn fast() -> RateConfig {
    RateConfig {
        rate_per_sec: 1e6,
        burst: 100_000,
    }
}

#[tokio::test]
async fn prefetch_tops_up_the_lease_before_it_runs_dry() {
    let b = Arc::new(MemoryBackend::new());
    let r = Arc::new(SharedRate::new(shared(&b, 8), "up", fast()).unwrap());
    // Empty lease: the caller asks for a batch of 8, spends one, keeps 7.
    r.check(0).await.unwrap();
    assert_eq!(r.leased(), 7);
    assert_eq!(r.health().round_trips.load(Relaxed), 1);
    // 7 → 4 (= 8 / 2, the low watermark): the third take starts one prefetch of 3.
    for _ in 0..3 {
        r.check(0).await.unwrap();
    }
    settle_tasks().await;
    assert_eq!(r.leased(), 7, "prefetch refilled up to lease − 1");
    assert_eq!(r.health().round_trips.load(Relaxed), 2);
    // Many calls: never more than lease − 1 held, about one round trip per lease / 2 calls.
    for _ in 0..400 {
        r.check(0).await.unwrap();
        assert!(r.leased() < 8);
        settle_tasks().await;
    }
    let trips = r.health().round_trips.load(Relaxed);
    assert!((100..=140).contains(&trips), "{trips} round trips");
    assert_eq!(r.health().fallbacks.load(Relaxed), 0);
}

#[tokio::test]
async fn prefetch_failure_opens_the_breaker_and_callers_follow_fail_mode() {
    let b = Arc::new(MemoryBackend::new());
    let r = Arc::new(SharedRate::new(shared(&b, 4), "up", fast()).unwrap());
    r.check(0).await.unwrap(); // 3 held
    b.set_down(true);
    r.check(1).await.unwrap(); // 2 held = low: the prefetch fails
    settle_tasks().await;
    assert_eq!(r.health().failures.load(Relaxed), 1);
    assert!(r.health().is_open());
    // The breaker is open: no further prefetch touches the backend.
    r.check(2).await.unwrap();
    r.check(3).await.unwrap();
    settle_tasks().await;
    assert_eq!(r.leased(), 0);
    assert_eq!(r.health().round_trips.load(Relaxed), 2);
    // Empty lease, backend down: fail_mode = open decides locally.
    r.check(4).await.unwrap();
    assert_eq!(r.health().fallbacks.load(Relaxed), 1);
    assert_eq!(r.health().failures.load(Relaxed), 1);
}

#[tokio::test]
async fn a_refused_prefetch_waits_before_asking_again() {
    let b = Arc::new(MemoryBackend::new());
    // 8 permits of burst, then one per second.
    let cfg = RateConfig {
        rate_per_sec: 1.0,
        burst: 8,
    };
    let r = Arc::new(SharedRate::new(shared(&b, 8), "slow", cfg).unwrap());
    r.check(0).await.unwrap(); // a batch of 8: 7 held, bucket empty
    for _ in 0..7 {
        r.check(0).await.unwrap();
        settle_tasks().await;
    }
    // One prefetch (at 4 held) was refused; the takes after it did not ask again.
    assert_eq!(r.health().round_trips.load(Relaxed), 2);
    assert!(matches!(
        r.check(0).await,
        Err(LimitError::RateLimited { .. })
    ));
}

fn tokens(tpm: u64) -> TokenConfig {
    TokenConfig {
        tokens_per_minute: tpm,
        burst: tpm,
    }
}

/// Tokens counted in a shared token bucket now (backend clock), rounded to the nearest.
fn in_bucket(b: &MemoryBackend, lim: &SharedTokens) -> u64 {
    let now = super::memory::now_us_for_tests();
    let us = b.tat(lim.key()).saturating_sub(now);
    (us as f64 / lim.us_per_token).round() as u64
}

/// Tokens drain in real time (the memory backend's clock): 100 per second here.
fn near(got: u64, want: u64, what: &str) {
    assert!(
        got <= want && got + 10 >= want,
        "{what}: {got} tokens, want {want}"
    );
}

#[tokio::test]
async fn shared_tokens_reserve_then_refund_or_charge_the_difference() {
    let b = Arc::new(MemoryBackend::new());
    // 6,000 tokens a minute: 10 ms of bucket per token, a burst of one minute.
    let t = SharedTokens::new(shared(&b, 1), "up", tokens(6_000)).unwrap();
    let r = t.reserve(1_000, 0).await.unwrap();
    assert!(r.is_shared());
    assert_eq!(in_bucket(&b, &t), 1_000);
    r.settle(400, 0);
    settle_tasks().await;
    near(in_bucket(&b, &t), 400, "unused part refunded");
    let r = t.reserve(100, 0).await.unwrap();
    r.settle(2_100, 0);
    settle_tasks().await;
    near(in_bucket(&b, &t), 2_500, "excess charged");
    // 3,500 left: 3,600 waits about a second (100 tokens at 10 ms), less what drained.
    match t.reserve(3_600, 0).await {
        Err(LimitError::TokensExhausted { retry_in }) => {
            assert!(
                retry_in > Duration::from_millis(800) && retry_in <= Duration::from_millis(1_000),
                "{retry_in:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    t.reserve(3_400, 0).await.unwrap().settle(3_400, 0);
    assert!(matches!(
        t.reserve(6_001, 0).await,
        Err(LimitError::NeverAdmissible {
            requested: 6_001,
            capacity: 6_000
        })
    ));
    // Dropping a reservation keeps the estimate charged.
    drop(t.reserve(50, 0).await.unwrap());
    settle_tasks().await;
    near(in_bucket(&b, &t), 5_950, "estimate kept");
}

#[tokio::test]
async fn two_instances_share_one_token_bucket() {
    let b = Arc::new(MemoryBackend::new());
    let a = SharedTokens::new(shared(&b, 1), "up", tokens(6_000)).unwrap();
    let c = SharedTokens::new(shared(&b, 1), "up", tokens(6_000)).unwrap();
    let mut admitted = 0;
    for i in 0..20 {
        let lim = if i % 2 == 0 { &a } else { &c };
        if let Ok(r) = lim.reserve(500, 0).await {
            admitted += 500;
            r.settle(500, 0);
        }
    }
    // One minute of tokens (the burst) plus what drained during the test (≪ 500).
    assert_eq!(admitted, 6_000);
}

#[tokio::test]
async fn shared_tokens_fall_back_per_fail_mode() {
    let b = Arc::new(MemoryBackend::new());
    b.set_down(true);
    // fail_mode = open, 2 expected instances: 3,000 tokens a minute locally.
    let open = SharedTokens::new(shared(&b, 1), "up", tokens(6_000)).unwrap();
    let r = open.reserve(3_000, 0).await.unwrap();
    assert!(!r.is_shared());
    r.settle(3_000, 0);
    assert!(matches!(
        open.reserve(100, 0).await,
        Err(LimitError::TokensExhausted { .. })
    ));
    assert!(open.health().fallbacks.load(Relaxed) >= 2);
    let closed = SharedTokens::new(
        Shared::new(b.clone(), settings(1, FailMode::Closed)),
        "up",
        tokens(6_000),
    )
    .unwrap();
    assert!(matches!(
        closed.reserve(10, 0).await,
        Err(LimitError::SharedUnavailable)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failed_settlement_is_retried_then_counted_lost() {
    let b = Arc::new(MemoryBackend::new());
    let budget = SharedBudget::new(
        shared(&b, 1),
        "team",
        BudgetConfig {
            limit: Usd::from_dollars(10.0).unwrap(),
            window: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let r = budget
        .reserve(Usd::from_dollars(2.0).unwrap(), 0)
        .await
        .unwrap();
    assert!(r.is_shared());
    let window = super::memory::now_us_for_tests() / 3_600_000_000;
    // Two failures, then the third try lands.
    b.fail_next(2);
    r.settle(Usd::from_dollars(0.5).unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = &budget.shared.health;
    assert_eq!(b.spend(budget.key(), window), 500_000_000);
    assert_eq!(h.failures.load(Relaxed), 2);
    assert_eq!(h.lost_settlements.load(Relaxed), 0);
    // Every try fails: given up after 1 + SETTLE_RETRIES.len() tries, counted lost.
    let r = budget
        .reserve(Usd::from_dollars(1.0).unwrap(), 0)
        .await
        .unwrap();
    let calls = b.calls();
    b.fail_next(100);
    drop(r); // a release
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.calls() - calls, 1 + SETTLE_RETRIES.len() as u64);
    assert_eq!(h.lost_settlements.load(Relaxed), 1);
    assert_eq!(
        h.failures.load(Relaxed),
        2 + 1 + SETTLE_RETRIES.len() as u64
    );
    // The release was lost: the spend over-counts (conservative).
    assert_eq!(b.spend(budget.key(), window), 1_500_000_000);
}

#[tokio::test]
async fn late_spend_is_charged_to_the_shared_budget() {
    let b = Arc::new(MemoryBackend::new());
    let budget = SharedBudget::new(
        shared(&b, 1),
        "team",
        BudgetConfig {
            limit: Usd::from_dollars(1.0).unwrap(),
            window: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let window = super::memory::now_us_for_tests() / 3_600_000_000;
    // A stream: its reservation settled at the first event without usage, then the usage.
    let r = budget
        .reserve(Usd::from_dollars(0.5).unwrap(), 0)
        .await
        .unwrap();
    r.settle(Usd::ZERO);
    budget.record_spend(Usd::from_dollars(0.25).unwrap());
    settle_tasks().await;
    assert_eq!(b.spend(budget.key(), window), 250_000_000);
    // Charged even past the limit (the tokens were spent): later reservations are refused.
    budget.record_spend(Usd::from_dollars(0.8).unwrap());
    settle_tasks().await;
    assert_eq!(b.spend(budget.key(), window), 1_050_000_000);
    assert!(budget
        .reserve(Usd::from_dollars(0.01).unwrap(), 0)
        .await
        .is_none());
}

/// A stream reserved on the fallback while the backend was down: its late usage is
/// reconciled against what the fallback reserved (capped at its burst), not the estimate,
/// so it cannot refund more than it took.
#[tokio::test]
async fn a_detached_fallback_reservation_reconciles_what_it_reserved() {
    let b = Arc::new(MemoryBackend::new());
    b.set_down(true);
    // 2 expected instances: the fallback holds 3,000 tokens a minute.
    let t = SharedTokens::new(shared(&b, 1), "up", tokens(6_000)).unwrap();
    let r = t.reserve(5_000, 0).await.unwrap();
    assert!(!r.is_shared());
    assert_eq!(
        t.fallback.in_bucket(0),
        3_000,
        "the estimate, capped at the burst"
    );
    let d = r.detach();
    t.settle_detached(d, 1_000, 0);
    assert_eq!(
        t.fallback.in_bucket(0),
        1_000,
        "2,000 given back, not 4,000"
    );
}
