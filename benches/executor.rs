//! Executor overhead per call with a no-op operation, side by side with the stacks people
//! would otherwise assemble: tower's `ServiceBuilder` and tower-resilience's layers.
//!
//! Every routine runs inside one tokio current-thread runtime (`iter_custom` with a single
//! `block_on` around the loop), so runtime entry is not measured; the operation is an
//! immediately-ready future returning `Done::with_usage`, so what is measured is the
//! machinery around it.
//!
//! - `tollgate/plain`: one route, one target, no limits, breaker, budget or retry budget.
//! - `tollgate/full`: route + rate limiter + token limiter + concurrency + breaker
//!   (consecutive, failure rate, slow call) + retry policy with a retry budget + a budget +
//!   a price (cost per call, spend report).
//! - `tower/service_builder`: rate limit → retry (`TpsBudget`) → concurrency limit →
//!   timeout → `service_fn`. No breaker, token limiter, budget or price: tower has none, so
//!   this stack does less work than `tollgate/full`.
//! - `tower_resilience/stack`: retry (token-bucket budget) → circuit breaker (failure rate +
//!   slow call, count-based window) → rate limiter (token bucket) → bulkhead → tower's
//!   timeout → `service_fn`. Approximations are listed in BENCHMARKS.md.
//! - `threads/{tollgate_full,tollgate_plain}/{1,2}`: 1 or 2 OS threads, each with its own
//!   current-thread runtime, driving `execute` on one shared executor (throughput,
//!   contention): `full` shares its limits, breaker, retry budget and budget between the
//!   threads, `plain` has none of them.
//!
//! Limits are set so nothing is ever refused during a run (every call is admitted).
//!
//! Run: `cargo bench --bench executor -- --warm-up-time 1 --measurement-time 3`

use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate::exec::{Done, Executor, Failure, Request};
use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// One route, one target, nothing else.
const PLAIN: &str = r#"
version = 1

[upstreams.up]
base_url = "http://127.0.0.1:1/v1"

[models.m]
upstream = "up"

[retry.none]
max_attempts = 1

[[routes]]
name = "main"
targets = ["m"]
retry = "none"
"#;

/// Every component on the hot path, with limits no run reaches.
const FULL: &str = r#"
version = 1

[defaults]
timeouts = { per_try = "30s", total = "90s" }

[upstreams.up]
base_url = "http://127.0.0.1:1/v1"
limits = { requests_per_second = 1e12, burst = 1000000, tokens_per_minute = 1e15, concurrency = 1000, on_limit = "fail" }
breaker = "standard"

[models.m]
upstream = "up"
price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }

[retry.standard]
max_attempts = 3
backoff = { kind = "exponential", base = "100ms", factor = 2.0, max = "2s", jitter = "full" }
retry_on = ["connect", "timeout", "429", "5xx"]
budget = { ratio = 0.2, min_per_second = 10 }

[breakers.standard]
consecutive_failures = 5
failure_rate = { threshold = 0.5, min_calls = 20, window = "30s" }
slow_call = { over = "2s", rate_threshold = 0.8 }
open_for = "30s"
half_open = { probes = 3, successes_to_close = 2 }

[[routes]]
name = "main"
targets = ["m"]
retry = "standard"

[budgets.monthly]
limit_usd = 1e9
window = "30d"
on_exceed = "reject"
"#;

/// Compiles `toml`, with no environment overrides.
fn plan(toml: &str) -> Plan {
    let opts = LoadOptions::from_text("policy.toml", toml).with_env(Vec::<(String, String)>::new());
    match Plan::load(&opts) {
        Ok(c) => c.plan,
        Err(d) => panic!("bench policy does not compile:\n{}", d.render(false)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn request() -> Request {
    Request::new().prompt("hello").max_tokens(16)
}

/// The operation's body in every stack: never inlined, so each stack pays the same call and
/// a profiler can count iterations by counting calls to it.
#[inline(never)]
fn op_usage() -> (u64, u64) {
    black_box((3, 7))
}

/// `iters` no-op calls through `exec`, inside the current runtime.
async fn drive(exec: &Executor, req: &Request, iters: u64) {
    for _ in 0..iters {
        let served = exec
            .execute(req, |_target, _attempt| {
                let (input, output) = op_usage();
                ready(Ok::<_, Failure>(Done::with_usage((), input, output)))
            })
            .await;
        black_box(served.is_ok());
    }
}

fn tollgate_bench(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    toml: &str,
) {
    let rt = runtime();
    // The executor's clock is created inside the runtime (TokioClock reads tokio's time).
    let exec = rt.block_on(async {
        Executor::builder(plan(toml))
            .seed(1)
            .build()
            .expect("executor")
    });
    let req = request();
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                drive(&exec, &req, iters).await;
                start.elapsed()
            })
        })
    });
}

/// The no-op operation behind both tower stacks.
#[derive(Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = (u64, u64);
    type Error = BoxError;
    type Future = Ready<Result<(u64, u64), BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: u64) -> Self::Future {
        ready(Ok(op_usage()))
    }
}

/// tower's retry policy: retry errors with backoff while the budget allows, deposit always.
#[derive(Clone)]
struct BudgetRetry {
    budget: Arc<tower::retry::budget::TpsBudget>,
    attempt: u32,
}

impl<Res, E> tower::retry::Policy<u64, Res, E> for BudgetRetry {
    type Future = tokio::time::Sleep;
    fn retry(&mut self, _req: &mut u64, result: &mut Result<Res, E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.attempt < 3 && self.budget.withdraw() => {
                self.attempt += 1;
                Some(tokio::time::sleep(Duration::from_millis(
                    100 << self.attempt,
                )))
            }
            Err(_) => None,
        }
    }
    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn tower_bench(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let rt = runtime();
    let budget = Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ));
    let mut svc = rt.block_on(async {
        ServiceBuilder::new()
            .rate_limit(u64::MAX / 2, Duration::from_secs(1))
            .retry(BudgetRetry { budget, attempt: 0 })
            .concurrency_limit(1000)
            .timeout(Duration::from_secs(30))
            .service(Noop)
    });
    g.bench_function("tower/service_builder", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let r = svc.ready().await.expect("ready").call(i).await;
                    black_box(r.is_ok());
                }
                start.elapsed()
            })
        })
    });
}

fn tower_resilience_bench(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use tower_resilience::bulkhead::BulkheadLayer;
    use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};
    use tower_resilience::ratelimiter::RateLimiterLayer;
    use tower_resilience::retry::{RetryBudgetBuilder, RetryLayer};

    let rt = runtime();
    let mut svc = rt.block_on(async {
        let breaker = CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_type(SlidingWindowType::CountBased)
            .sliding_window_size(100)
            .minimum_number_of_calls(20)
            .slow_call_duration_threshold(Duration::from_secs(2))
            .slow_call_rate_threshold(0.8)
            .wait_duration_in_open(Duration::from_secs(30))
            .permitted_calls_in_half_open(3)
            .build()
            .expect("breaker");
        let limiter = RateLimiterLayer::builder()
            .limit_for_period(usize::MAX / 4)
            .refresh_period(Duration::from_secs(1))
            .burst_size(1_000_000)
            .build()
            .expect("rate limiter");
        let bulkhead = BulkheadLayer::builder()
            .max_concurrent_calls(1000)
            .build()
            .expect("bulkhead");
        let inner = ServiceBuilder::new()
            .layer(breaker)
            .layer(limiter)
            .layer(bulkhead)
            .timeout(Duration::from_secs(30))
            .service(Noop);
        let budget = RetryBudgetBuilder::new()
            .token_bucket()
            .tokens_per_second(10.0)
            .max_tokens(100)
            .build()
            .expect("retry budget");
        let retry = RetryLayer::<u64, (u64, u64), _>::builder()
            .max_attempts(3)
            .exponential_backoff(Duration::from_millis(100))
            .budget(budget)
            .build();
        ServiceBuilder::new().layer(retry).service(inner)
    });
    g.bench_function("tower_resilience/stack", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let r = svc
                        .ready()
                        .await
                        .map_err(|_| ())
                        .expect("ready")
                        .call(i)
                        .await;
                    black_box(r.is_ok());
                }
                start.elapsed()
            })
        })
    });
}

fn overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(1));
    tollgate_bench(&mut g, "tollgate/plain", PLAIN);
    tollgate_bench(&mut g, "tollgate/full", FULL);
    tower_bench(&mut g);
    tower_resilience_bench(&mut g);
    g.finish();
}

/// `threads` threads, each in its own current-thread runtime, make `iters` calls each on one
/// shared executor; returns the wall time from the common start to the last finish.
fn hammer(exec: &Executor, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads);
    let ends: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let rt = runtime();
                    let req = request();
                    barrier.wait();
                    let start = Instant::now();
                    rt.block_on(drive(exec, &req, iters));
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let start = ends.iter().map(|e| e.0).min().expect("a thread");
    let end = ends.iter().map(|e| e.1).max().expect("a thread");
    end - start
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads");
    for (name, policy) in [("tollgate_full", FULL), ("tollgate_plain", PLAIN)] {
        // A std clock: the executor is shared across runtimes, so it must not depend on one.
        // Unseeded, as in production: each thread draws from its own generator.
        let exec = Executor::builder(plan(policy))
            .clock(Arc::new(tollgate::exec::clock::StdClock::new()))
            .build()
            .expect("executor");
        for n in [1usize, 2] {
            // Counts every thread's calls: compare elements/s across thread counts.
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{name}/{n}"), |b| {
                b.iter_custom(|iters| hammer(&exec, n, iters))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, overhead, threads);
criterion_main!(benches);
