//! Closed-path cost of our breaker against recloser and failsafe, and budget reserve+settle.
//!
//! `cargo bench --bench breaker -- --warm-up-time 1 --measurement-time 2`
//!
//! Each routine returns a `bool` (what a caller branches on). Returning the whole
//! `Option<Transition>` makes criterion copy a mostly-unwritten 16-byte value, which stalls
//! on store forwarding and measured ~12 ns of artifact.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::exec::breaker::{Breaker, BreakerConfig, RateRule, SlowRule};
use tollgate::exec::price::{BudgetConfig, BudgetLedger, Price, Usage, Usd};

/// `[breakers.standard]` from the reference relay.toml.
fn standard() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(5),
        failure_rate: Some(RateRule {
            threshold: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
        }),
        slow_call: Some(SlowRule {
            over: Duration::from_secs(2),
            rate_threshold: 0.8,
            min_calls: 20,
            window: Duration::from_secs(30),
        }),
        open_for: Duration::from_secs(30),
        probes: 3,
        successes_to_close: 2,
    }
}

/// `[breakers.strict]`: consecutive failures only.
fn strict() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(3),
        failure_rate: None,
        slow_call: None,
        open_for: Duration::from_secs(45),
        probes: 1,
        successes_to_close: 1,
    }
}

fn closed_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_call");
    let elapsed = Duration::from_millis(40);

    let b = Breaker::new(standard()).unwrap();
    let mut now = 1_000_000_000u64;
    g.bench_function("tollgate_standard", |bench| {
        bench.iter(|| {
            now += 1_000; // a call every µs: buckets roll as in real traffic
            let p = b.try_acquire(black_box(now)).unwrap();
            b.record(p, black_box(false), elapsed, now).is_some()
        })
    });

    let b = Breaker::new(strict()).unwrap();
    g.bench_function("tollgate_strict", |bench| {
        bench.iter(|| {
            let p = b.try_acquire(black_box(7)).unwrap();
            b.record(p, black_box(false), elapsed, 7).is_some()
        })
    });

    g.bench_function("tollgate_try_acquire_only", |bench| {
        bench.iter(|| b.try_acquire(black_box(7)).is_ok())
    });

    let b = Breaker::new(standard()).unwrap();
    let epoch = Instant::now();
    g.bench_function("tollgate_standard_with_instant_now", |bench| {
        bench.iter(|| {
            let now = epoch.elapsed().as_nanos() as u64;
            let p = b.try_acquire(now).unwrap();
            b.record(p, black_box(false), elapsed, now).is_some()
        })
    });

    let r = recloser::Recloser::default();
    g.bench_function("recloser_call", |bench| {
        bench.iter(|| r.call(|| black_box(Ok::<u32, ()>(1))).is_ok())
    });

    let f = failsafe::Config::new().build();
    g.bench_function("failsafe_call", |bench| {
        use failsafe::CircuitBreaker;
        bench.iter(|| f.call(|| black_box(Ok::<u32, ()>(1))).is_ok())
    });
    g.finish();
}

fn budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("budget");
    let ledger = BudgetLedger::new(BudgetConfig {
        limit: Usd::from_dollars(6300.0).unwrap(),
        // Short window so the limit is never reached: the window rolls every 1000 calls.
        window: Duration::from_millis(1),
    })
    .unwrap();
    let price = Price::new(3.0, 15.0).unwrap();
    let worst = price.cost(Usage {
        input_tokens: 2_000,
        output_tokens: 4_096,
    });
    let actual = price.cost(Usage {
        input_tokens: 2_000,
        output_tokens: 700,
    });
    let mut now = 0u64;
    g.bench_function("reserve_settle", |bench| {
        bench.iter(|| {
            now += 1_000;
            let r = ledger.reserve(black_box(worst), black_box(now)).unwrap();
            r.settle(black_box(actual));
        })
    });
    g.bench_function("price_cost", |bench| {
        bench.iter(|| {
            black_box(price).cost(black_box(Usage {
                input_tokens: 2_000,
                output_tokens: 700,
            }))
        })
    });
    g.finish();
}

criterion_group!(benches, closed_path, budget);
criterion_main!(benches);
