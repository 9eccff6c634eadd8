//! Limiter and retry-budget micro-benchmarks, with governor side by side.
//!
//! Fairness: the headline comparison (`decision/*`) gives both limiters a clock that is one
//! relaxed atomic load: our `ManualClock` and governor's `FakeRelativeClock` (an
//! `Arc<AtomicU64>`), both frozen. That isolates the decision itself. `with_clock/*`
//! adds real clocks for reference: governor's default (quanta, TSC-based) vs our
//! `StdClock` (`std::time::Instant`, ~25 ns a read on these machines) — not a like-for-like
//! comparison; the executor reads the clock once per decision for all components.
//!
//! "admit" limiters have 1 ns emission interval and a burst of u32::MAX, so with a frozen
//! clock every call in a run is admitted (a compare-exchange per call); "deny" limiters are
//! exhausted, so every call is refused (one load per call).
//!
//! Run: `cargo bench --bench limiter -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter as Governor};
use tollgate::exec::clock::{Clock, ManualClock, StdClock};
use tollgate::exec::limit::{RateConfig, RateLimiter};
use tollgate::exec::retry_budget::{RetryBudget, RetryBudgetConfig};

fn admit_limiter() -> RateLimiter {
    RateLimiter::new(RateConfig {
        rate_per_sec: 1e9,
        burst: u32::MAX,
    })
    .expect("valid config")
}

fn deny_limiter(now: u64) -> RateLimiter {
    let l = RateLimiter::new(RateConfig {
        rate_per_sec: 1.0,
        burst: 1,
    })
    .expect("valid config");
    let _ = l.check(now);
    l
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

fn decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision");
    g.throughput(Throughput::Elements(1));

    let clock = ManualClock::at(1_000_000_000);
    let ours = admit_limiter();
    g.bench_function("tollgate/admit", |b| {
        b.iter(|| black_box(ours.check(clock.now()).is_ok()))
    });
    let fake = FakeRelativeClock::default();
    fake.advance(Duration::from_secs(1));
    let gov = Governor::direct_with_clock(Quota::per_second(nz(u32::MAX)), fake.clone());
    g.bench_function("governor/admit", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });

    let ours = deny_limiter(clock.now());
    g.bench_function("tollgate/deny", |b| {
        b.iter(|| black_box(ours.check(clock.now()).is_ok()))
    });
    let gov = Governor::direct_with_clock(Quota::per_second(nz(1)), fake.clone());
    let _ = gov.check();
    g.bench_function("governor/deny", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    g.finish();

    let mut g = c.benchmark_group("with_clock");
    g.throughput(Throughput::Elements(1));
    let std_clock = StdClock::new();
    let ours = admit_limiter();
    g.bench_function("tollgate_std_instant/admit", |b| {
        b.iter(|| black_box(ours.check(std_clock.now()).is_ok()))
    });
    let gov = Governor::direct(Quota::per_second(nz(u32::MAX)));
    g.bench_function("governor_quanta/admit", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    g.finish();
}

/// `threads` threads each make `iters` decisions on one shared limiter; returns wall time.
fn hammer(lim: &RateLimiter, clock: &ManualClock, threads: u32, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    black_box(lim.check(clock.now()).is_ok());
                }
            });
        }
    });
    start.elapsed()
}

fn contention(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads");
    let clock = ManualClock::at(1_000_000_000);
    for threads in [1u32, 2] {
        // Throughput counts every thread's decisions: compare elements/s across thread counts.
        g.throughput(Throughput::Elements(threads as u64));
        let admit = admit_limiter();
        g.bench_function(format!("admit/{threads}"), |b| {
            b.iter_custom(|iters| hammer(&admit, &clock, threads, iters))
        });
        let deny = deny_limiter(clock.now());
        g.bench_function(format!("deny/{threads}"), |b| {
            b.iter_custom(|iters| hammer(&deny, &clock, threads, iters))
        });
    }
    // governor under the same contention, for context (frozen fake clock, admit path).
    let fake = FakeRelativeClock::default();
    for threads in [1u32, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        let gov = Governor::direct_with_clock(Quota::per_second(nz(u32::MAX)), fake.clone());
        g.bench_function(format!("governor_admit/{threads}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            for _ in 0..iters {
                                black_box(gov.check().is_ok());
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn retry_budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_budget");
    g.throughput(Throughput::Elements(1));
    let budget = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 10.0,
        ttl: Duration::from_secs(10),
    })
    .expect("valid config");
    let clock = ManualClock::at(1_000_000_000);
    g.bench_function("deposit+try_withdraw", |b| {
        b.iter(|| {
            // advance 1 µs per request so buckets rotate as in real traffic
            clock.advance(Duration::from_micros(1));
            let now = clock.now();
            budget.deposit(now);
            black_box(budget.try_withdraw(now))
        })
    });
    g.bench_function("deposit", |b| {
        b.iter(|| budget.deposit(black_box(clock.now())))
    });
    g.finish();
}

criterion_group!(benches, decision, contention, retry_budget);
criterion_main!(benches);
