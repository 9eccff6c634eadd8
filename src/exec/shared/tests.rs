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
