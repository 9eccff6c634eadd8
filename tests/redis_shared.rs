//! Shared state in a real `redis-server` (feature `redis`): three executors sharing one
//! Redis and one policy; Redis killed and restarted mid-run.
#![cfg(feature = "redis")]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{free_port, KillOnDrop};
use tollgate::exec::shared::redis::RedisBackend;
use tollgate::exec::shared::StateBackend;
use tollgate::exec::{Done, Executor, Failure, Request};
use tollgate::plan::UpstreamId;

/// A `redis-server` of its own on 127.0.0.1, killed on drop.
struct Redis {
    child: KillOnDrop,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `redis-server` ({e}): install it (apt-get install -y redis-server); this test never skips"));
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child: KillOnDrop(child),
            port,
        }
    }
    fn start() -> Redis {
        Self::start_on(free_port())
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
    fn kill(&mut self) {
        self.child.kill();
    }
}

fn policy(fail_mode: &str, lease: u32) -> String {
    format!(
        r#"
version = 1
[state.redis]
url = {{ env = "TOLLGATE_TEST_REDIS_URL" }}
timeout = "50ms"
fail_mode = "{fail_mode}"
expected_instances = 3
lease = {lease}

[upstreams.main]
base_url = "https://api.example.com/v1"
limits = {{ requests_per_second = 10, burst = 30, state = "shared" }}

[models.small]
upstream = "main"

[[routes]]
name = "default"
targets = ["small"]
"#
    )
}

fn executors(toml: &str, url: &str, n: usize) -> Vec<Executor> {
    let plan = common::plan(toml);
    let settings = plan.redis.clone().expect("[state.redis]");
    (0..n)
        .map(|_| {
            let b: Arc<dyn StateBackend> = Arc::new(RedisBackend::new(url, &settings).unwrap());
            Executor::builder(plan.clone())
                .state_backend(b)
                .build()
                .unwrap()
        })
        .collect()
}

async fn call(e: &Executor) -> bool {
    let r = e
        .execute(&Request::new().prompt("hi"), |_t, _| async {
            Ok::<_, Failure>(Done::with_usage((), 1, 1))
        })
        .await;
    if let Err(e) = &r {
        if std::env::var_os("DEBUG_CALLS").is_some() {
            eprintln!("{e:?}");
        }
    }
    r.is_ok()
}

/// Fires `per` calls from each executor concurrently; returns (admitted, elapsed, slowest).
async fn hammer(execs: &[Executor], per: usize) -> (usize, Duration, Duration) {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for e in execs {
        for _ in 0..per {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let s = Instant::now();
                (call(&e).await, s.elapsed())
            }));
        }
    }
    let mut admitted = 0;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (ok, d) = t.await.expect("no panic");
        admitted += ok as usize;
        slowest = slowest.max(d);
    }
    (admitted, t0.elapsed(), slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_executors_share_one_limit_within_the_lease_bound() {
    let redis = Redis::start();
    for lease in [1u32, 5] {
        let execs = executors(&policy("closed", lease), &redis.url(), 3);
        // Connect (lazily, on first use) before the run, then start from an empty Redis.
        for e in &execs {
            let _ = call(e).await;
        }
        let c = redis::Client::open(redis.url()).unwrap();
        let mut con = c.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
        let (admitted, elapsed, _) = hammer(&execs, 100).await;
        for e in &execs {
            let rt = e.runtime();
            let h = rt.shared_rate(UpstreamId(0)).unwrap().health();
            assert_eq!(h.failures.load(Relaxed), 0, "no Redis failure expected");
        }
        // rate·w + burst + instances·(lease − 1)
        let bound = (10.0 * elapsed.as_secs_f64()).ceil() as usize + 30 + 3 * (lease as usize - 1);
        eprintln!("lease {lease}: admitted {admitted} in {elapsed:?}, bound {bound}");
        assert!(
            admitted <= bound,
            "lease {lease}: admitted {admitted} > bound {bound}"
        );
        assert!(
            admitted >= 30,
            "lease {lease}: admitted only {admitted}: the burst was not shared"
        );
        // Three local limiters would have admitted 3 × 30.
        assert!(
            admitted < 90,
            "lease {lease}: admitted {admitted}: not shared"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back_follows_fail_mode_and_recovers() {
    for mode in ["closed", "open"] {
        let mut redis = Redis::start();
        let port = redis.port;
        let execs = executors(&policy(mode, 1), &redis.url(), 3);
        let (admitted, _, _) = hammer(&execs, 5).await;
        assert_eq!(admitted, 15, "{mode}: within the burst");
        redis.kill();
        let (admitted, _, slowest) = hammer(&execs, 20).await;
        assert!(
            slowest < Duration::from_millis(1000),
            "{mode}: a call took {slowest:?} with Redis down"
        );
        match mode {
            "closed" => assert_eq!(admitted, 0, "fail_mode closed refuses"),
            // Local fallback: burst 30 / 3 instances = 10 each.
            _ => assert!(
                admitted > 0 && admitted <= 3 * 10 + 3,
                "fail_mode open: {admitted}"
            ),
        }
        let rt = execs[0].runtime();
        let h = rt.shared_rate(UpstreamId(0)).unwrap().health();
        assert!(
            h.failures.load(Relaxed) >= 1,
            "{mode}: the outage was counted"
        );
        // Calls already in flight when Redis went away each fail their own round trip (at
        // most one per call of that burst); after that the breaker around Redis is open, so
        // more calls cost no round trip at all (at most one probe once OPEN_FOR has passed).
        let during = h.failures.load(Relaxed);
        assert!(
            during <= 20,
            "{mode}: {during} failed round trips for 20 calls"
        );
        let (_, _, slowest) = hammer(&execs, 20).await;
        assert!(
            slowest < Duration::from_millis(1000),
            "{mode}: a call took {slowest:?} while the breaker was open"
        );
        let after = h.failures.load(Relaxed);
        assert!(
            after - during <= 1,
            "{mode}: {} more failed round trips while the breaker around Redis was open",
            after - during
        );
        assert!(h.is_open(), "{mode}: breaker around Redis is open");
        drop(redis);
        let _redis = Redis::start_on(port);
        tokio::time::sleep(tollgate::exec::shared::OPEN_FOR + Duration::from_millis(500)).await;
        // Shared limiting resumes: a fresh Redis holds a full burst of 30 for all three.
        let mut ok = 0;
        for _ in 0..5 {
            let (a, _, _) = hammer(&execs, 20).await;
            ok += a;
            if ok > 0 {
                break;
            }
            tokio::time::sleep(tollgate::exec::shared::OPEN_FOR).await;
        }
        assert!(
            ok > 0 && ok <= 30 + 3 * 10,
            "{mode}: after recovery admitted {ok}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_budget_is_never_overspent() {
    let redis = Redis::start();
    let toml = r#"
version = 1
[state.redis]
url = { env = "TOLLGATE_TEST_REDIS_URL" }
timeout = "200ms"
key_prefix = "budget-test:"

[upstreams.main]
base_url = "https://api.example.com/v1"

[models.small]
upstream = "main"
price = { input_per_mtok = 1000, output_per_mtok = 1000 }

[[routes]]
name = "default"
targets = ["small"]

[budgets.daily]
limit_usd = 1.0
window = "1h"
state = "shared"
"#;
    let execs = executors(toml, &redis.url(), 3);
    let mut tasks = Vec::new();
    for e in &execs {
        for _ in 0..40 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                // Worst case 10 + 10 tokens at $0.001 = $0.02, and that is what it costs.
                let req = Request::new().input_tokens(10).max_tokens(10);
                e.execute(&req, |_t, _| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, Failure>(Done::with_usage((), 10, 10))
                })
                .await
                .map(|s| s.cost_usd)
            }));
        }
    }
    let mut spent = 0.0;
    let mut admitted = 0;
    for t in tasks {
        if let Ok(c) = t.await.expect("no panic") {
            spent += c;
            admitted += 1;
        }
    }
    assert!(spent <= 1.0 + 1e-9, "spent {spent} over a $1 budget");
    assert_eq!(
        admitted, 50,
        "exactly $1 / $0.02 calls fit, across all three"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_executors_share_one_token_limit() {
    let redis = Redis::start();
    // 6,000 tokens a minute (100 a second), a burst of one minute, for all three together.
    let toml = r#"
version = 1
[state.redis]
url = { env = "TOLLGATE_TEST_REDIS_URL" }
timeout = "200ms"
fail_mode = "closed"
key_prefix = "tokens-test:"

[upstreams.main]
base_url = "https://api.example.com/v1"
limits = { tokens_per_minute = 6000, state = "shared" }

[models.small]
upstream = "main"

[[routes]]
name = "default"
targets = ["small"]
"#;
    let execs = executors(toml, &redis.url(), 3);
    let t0 = Instant::now();
    // Two rounds of 3 × 40 concurrent calls, the second once the first one's settlements
    // (refunds) have landed.
    let mut admitted = 0u64;
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut tasks = Vec::new();
        for e in &execs {
            for _ in 0..40 {
                let e = e.clone();
                tasks.push(tokio::spawn(async move {
                    // Reserves 100 + 100 tokens, uses 50 + 50: settle refunds 100.
                    let req = Request::new().input_tokens(100).max_tokens(100);
                    e.execute(&req, |_t, _| async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok::<_, Failure>(Done::with_usage((), 50, 50))
                    })
                    .await
                    .is_ok()
                }));
            }
        }
        for t in tasks {
            admitted += t.await.expect("no panic") as u64;
        }
    }
    let elapsed = t0.elapsed();
    let used = admitted * 100;
    // Every token used was reserved (usage <= estimate) and never refunded, so the GCRA
    // bound holds for usage: tpm·w/60 s + burst (+ one µs of rounding per call).
    let bound = 6_000 + (100.0 * elapsed.as_secs_f64()).ceil() as u64 + admitted;
    eprintln!("admitted {admitted} calls = {used} tokens in {elapsed:?}, bound {bound}");
    assert!(used <= bound, "{used} tokens > bound {bound}");
    // Refunds are shared too: the first round reserves the whole minute (30 × 200) and
    // gives half of it back, so the second round fits about 15 more.
    assert!(
        admitted >= 44,
        "admitted only {admitted}: refunds not applied"
    );
    // Three local limiters would have admitted up to 3 × 6,000 tokens.
    assert!(used < 12_000, "{used} tokens: not shared");
    for e in &execs {
        let rt = e.runtime();
        let h = rt
            .shared_tokens(UpstreamId(0))
            .expect("shared tokens")
            .health();
        assert_eq!(h.failures.load(Relaxed), 0, "no Redis failure expected");
        assert_eq!(h.lost_settlements.load(Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spend_counts_in_a_shared_budget() {
    use tollgate::exec::price::{BudgetConfig, Usd};
    use tollgate::exec::shared::{Shared, SharedBudget};
    let redis = Redis::start();
    let plan = common::plan(&policy("closed", 1));
    let settings = plan.redis.clone().expect("[state.redis]");
    let b: Arc<dyn StateBackend> = Arc::new(RedisBackend::new(&redis.url(), &settings).unwrap());
    let cfg = BudgetConfig {
        limit: Usd::from_dollars(1.0).unwrap(),
        window: Duration::from_secs(3600),
    };
    let budget = SharedBudget::new(Shared::new(b, settings), "late", cfg).unwrap();
    // A stream: settled without usage at its first event, the usage recorded afterwards.
    let r = budget
        .reserve(Usd::from_dollars(0.5).unwrap(), 0)
        .await
        .unwrap();
    r.settle(Usd::ZERO);
    budget.record_spend(Usd::from_dollars(0.99).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(budget
        .reserve(Usd::from_dollars(0.02).unwrap(), 0)
        .await
        .is_none());
    let r = budget.reserve(Usd::from_dollars(0.01).unwrap(), 0).await;
    assert!(r.is_some(), "exactly $0.01 left");
}

/// A shared breaker: after instance A trips on an outage, instance B stops calling the
/// failing upstream within one poll interval (plus round trips), long before it would have
/// tripped on its own failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_tripped_on_one_instance_opens_on_the_other() {
    use std::sync::atomic::AtomicUsize;
    use tollgate::exec::breaker::BreakerState;
    use tollgate::exec::shared::signals::POLL;

    let redis = Redis::start();
    let toml = r#"
version = 1
[state.redis]
url = { env = "TOLLGATE_TEST_REDIS_URL" }
# Generous: the bound below is the healthy backend's; a timed-out round trip would open
# the backend's own breaker for `OPEN_FOR` (1 s), when shared breakers act as local ones.
timeout = "1s"

[breakers.shared]
consecutive_failures = 200
open_for = "5s"
state = "shared"

[retry.once]
max_attempts = 1

[upstreams.main]
base_url = "https://api.example.com/v1"
breaker = "shared"

[models.small]
upstream = "main"

[[routes]]
name = "default"
targets = ["small"]
retry = "once"
"#;
    let execs = executors(toml, &redis.url(), 2);
    let (a, b) = (&execs[0], &execs[1]);
    let calls_a = Arc::new(AtomicUsize::new(0));
    let calls_b = Arc::new(AtomicUsize::new(0));
    let failing = |n: Arc<AtomicUsize>| {
        move |_t, _| {
            n.fetch_add(1, Relaxed);
            async { Err::<Done<()>, _>(Failure::status(503)) }
        }
    };
    let state = |e: &Executor| {
        let rt = e.runtime();
        let b = rt
            .upstream(UpstreamId(0))
            .breaker
            .as_ref()
            .unwrap()
            .breaker
            .clone();
        b.state(e.clock().now())
    };
    // A sees the outage first: 200 failures in a row trip its breaker.
    while state(a) == BreakerState::Closed {
        let _ = a
            .execute(&Request::new().prompt("hi"), failing(calls_a.clone()))
            .await;
        assert!(calls_a.load(Relaxed) <= 200, "A's breaker did not trip");
    }
    let tripped = Instant::now();
    // B calls the same failing upstream every 5 ms for 1.2 s: on its own it would trip only
    // after 200 failures (≈ 1 s); told by A, it stops within one poll.
    let mut last_call = Duration::ZERO;
    while tripped.elapsed() < Duration::from_millis(1200) {
        let before = calls_b.load(Relaxed);
        let _ = b
            .execute(&Request::new().prompt("hi"), failing(calls_b.clone()))
            .await;
        if calls_b.load(Relaxed) > before {
            last_call = tripped.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n = calls_b.load(Relaxed);
    eprintln!("B called the failing upstream {n} times, the last {last_call:?} after A tripped");
    for e in [a, b] {
        let rt = e.runtime();
        let failures = rt.backend().unwrap().health.failures.load(Relaxed);
        assert_eq!(
            failures, 0,
            "a Redis round trip failed or took over 1s: the bound is the healthy backend's"
        );
    }
    assert_eq!(state(b), BreakerState::Open, "B learned A's trip");
    // One poll, the publish and the poll's round trips, and scheduling on a busy machine.
    let bound = POLL + Duration::from_millis(400);
    assert!(
        last_call <= bound,
        "B called the upstream {last_call:?} after A tripped (bound {bound:?})"
    );
    assert!(
        n < 200,
        "B tripped on its own failures ({n}), not on A's signal"
    );
}

/// The signal primitives on a real Redis: a signal lives for its time, a shorter one does
/// not cut a longer one short, and one pipeline reads them all (missing keys as `None`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_signals_keep_the_longest_and_read_back_in_one_call() {
    let redis = Redis::start();
    let plan = common::plan(&policy("open", 1));
    let settings = plan.redis.clone().expect("[state.redis]");
    let b = RedisBackend::new(&redis.url(), &settings).unwrap();
    let keys = vec![
        "t:breaker:upstream:a".to_string(),
        "t:breaker:none".to_string(),
    ];
    assert_eq!(b.open_signals(&keys).await.unwrap(), vec![None, None]);
    b.signal_open(&keys[0], Duration::from_secs(5))
        .await
        .unwrap();
    b.signal_open(&keys[0], Duration::from_millis(100))
        .await
        .unwrap();
    let left = b.open_signals(&keys).await.unwrap();
    let a = left[0].expect("a signal");
    assert!(
        a > Duration::from_secs(4) && a <= Duration::from_secs(5),
        "{a:?}"
    );
    assert_eq!(left[1], None);
    // A short one expires; a longer one extends the first.
    b.signal_open(&keys[1], Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(b.open_signals(&keys).await.unwrap()[1], None);
    b.signal_open(&keys[0], Duration::from_secs(20))
        .await
        .unwrap();
    let a = b.open_signals(&keys).await.unwrap()[0].expect("a signal");
    assert!(a > Duration::from_secs(19), "{a:?}");
    assert_eq!(
        b.open_signals(&[]).await.unwrap(),
        Vec::<Option<Duration>>::new()
    );
}
