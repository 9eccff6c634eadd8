//! Failure scenarios on paused time with scripted fake operations. Each asserts outcomes,
//! attempt counts and timings, and that no request exceeds its route's static bounds.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tollgate::exec::{Done, ExecError, Executor, Failure, Request, Served, SkipReason, StopReason};
use tollgate::plan::{route_bounds, Plan, TokenCounts, UpstreamId};

/// Calls per model, counted by the fake operation.
#[derive(Default, Clone)]
struct Calls(Arc<Mutex<HashMap<String, u32>>>);

impl Calls {
    fn hit(&self, model: &str) {
        *self.0.lock().unwrap().entry(model.to_string()).or_default() += 1;
    }
    fn get(&self, model: &str) -> u32 {
        self.0.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

/// Asserts a finished request stayed within its route's static bounds.
fn within_bounds(plan: &Plan, route: &str, attempts: u32, elapsed: Duration) {
    let id = plan.route_by_name(route).unwrap();
    let b = route_bounds(plan, id, TokenCounts::default());
    assert!(
        attempts <= b.attempts,
        "route {route}: {attempts} attempts > bound {}",
        b.attempts
    );
    assert!(
        elapsed <= b.latency,
        "route {route}: {elapsed:?} > bound {:?}",
        b.latency
    );
}

fn check_served<T>(plan: &Plan, s: &Served<T>, elapsed: Duration) {
    within_bounds(plan, s.route_name(), s.attempts, elapsed);
}

fn check_failed(plan: &Plan, e: &ExecError, elapsed: Duration) {
    if let Some(r) = &e.route {
        within_bounds(plan, r, e.attempts.len() as u32, elapsed);
    }
}

const OUTAGE: &str = r#"
[defaults]
timeouts = { per_try = "2s", total = "20s" }
[upstreams.a]
base_url = "http://127.0.0.1:1/a"
breaker = "quick"
[upstreams.b]
base_url = "http://127.0.0.1:1/b"
[models.ma]
upstream = "a"
price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
[models.mb]
upstream = "b"
price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
[retry.twice]
max_attempts = 2
backoff = { kind = "constant", base = "100ms", jitter = "none", max = "1s" }
[breakers.quick]
consecutive_failures = 3
open_for = "10s"
half_open = { probes = 1, successes_to_close = 1 }
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "twice"
"#;

#[tokio::test(start_paused = true)]
async fn full_outage_fails_over_opens_breaker_and_recovers_through_half_open() {
    let plan = common::plan(OUTAGE);
    let exec = Executor::builder(plan.clone()).seed(7).build().unwrap();
    let calls = Calls::default();
    let a_down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let run = |exec: Executor| {
        let calls = calls.clone();
        let a_down = a_down.clone();
        async move {
            let t0 = Instant::now();
            let r = exec
                .execute(&Request::new().prompt("hi"), |t, _| {
                    let calls = calls.clone();
                    let down = a_down.load(SeqCst) && t.model_name() == "ma";
                    calls.hit(t.model_name());
                    async move {
                        if down {
                            Err(Failure::status(503))
                        } else {
                            Ok(Done::with_usage("ok", 10, 10))
                        }
                    }
                })
                .await;
            (r, t0.elapsed())
        }
    };
    // First request: 2 attempts on ma (503, 503), fails over, served by mb.
    let (r, el) = run(exec.clone()).await;
    let s = r.unwrap();
    assert_eq!(s.model_name(), "mb");
    assert_eq!(s.attempts, 3);
    assert_eq!(s.failed.len(), 2);
    assert_eq!(
        s.failed[0].delay,
        Some(Duration::from_millis(100)),
        "constant backoff between the two tries on ma"
    );
    check_served(&plan, &s, el);
    // Second request: the third failure on ma opens its breaker, then mb serves.
    let (r, _) = run(exec.clone()).await;
    assert_eq!(r.unwrap().model_name(), "mb");
    assert_eq!(
        calls.get("ma"),
        3,
        "breaker opened after 3 consecutive failures"
    );
    // While open, ma is skipped: traffic stops hitting it.
    for _ in 0..10 {
        let (r, el) = run(exec.clone()).await;
        let s = r.unwrap();
        assert_eq!(s.model_name(), "mb");
        assert_eq!(s.attempts, 1);
        check_served(&plan, &s, el);
    }
    assert_eq!(
        calls.get("ma"),
        3,
        "no call reaches an upstream whose breaker is open"
    );
    // The stats snapshot shows it: a's breaker open, traffic and spend on mb.
    let st = exec.stats();
    let a = st.upstreams.iter().find(|u| u.name == "a").unwrap();
    let br = a.breaker.as_ref().unwrap();
    assert_eq!(br.state, "open");
    assert!(br.opens_probe_in.unwrap() <= Duration::from_secs(10));
    let ma = st.models.iter().find(|m| m.name == "ma").unwrap();
    let mb = st.models.iter().find(|m| m.name == "mb").unwrap();
    assert_eq!((ma.successes, ma.failures, ma.success_rate), (0, 3, 0.0));
    assert_eq!(mb.successes, 12);
    assert!(
        (mb.spend_usd - 12.0 * 30e-6).abs() < 1e-9,
        "12 calls of 10 in + 10 out at $1/$2 per Mtok: {}",
        mb.spend_usd
    );
    assert_eq!(st.routes[0].requests, 12);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["upstreams"][0]["breaker"]["state"], "open");
    // ma recovers; after open_for the half-open probe succeeds and closes the breaker.
    a_down.store(false, SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    let (r, _) = run(exec.clone()).await;
    assert_eq!(
        r.unwrap().model_name(),
        "ma",
        "the probe goes to ma and succeeds"
    );
    let (r, _) = run(exec.clone()).await;
    assert_eq!(
        r.unwrap().model_name(),
        "ma",
        "closed again: traffic is back on ma"
    );
    assert_eq!(calls.get("ma"), 5);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_is_reported_as_a_skip_when_every_target_is_down() {
    let plan = common::plan(&OUTAGE.replace("targets = [\"ma\", \"mb\"]", "targets = [\"ma\"]"));
    let exec = Executor::new(plan.clone()).unwrap();
    let op =
        |_t: tollgate::exec::Target, _| async { Err::<Done<()>, _>(Failure::connect("refused")) };
    let e = exec.execute(&Request::new(), op).await.unwrap_err();
    assert_eq!(e.reason, StopReason::AttemptsExhausted);
    assert_eq!(e.attempts.len(), 2);
    let _ = exec.execute(&Request::new(), op).await.unwrap_err(); // 3rd failure opens it
    let e = exec.execute(&Request::new(), op).await.unwrap_err();
    assert_eq!(e.reason, StopReason::NoTargetAvailable);
    assert!(e.attempts.is_empty());
    assert!(
        matches!(e.skipped[0].reason, SkipReason::BreakerOpen { .. }),
        "{e}"
    );
}

const STORM: &str = r#"
[defaults]
timeouts = { per_try = "5s", total = "60s" }
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[upstreams.v]
base_url = "http://127.0.0.1:1/v"
[models.m]
upstream = "u"
[models.n]
upstream = "v"
[retry.r]
max_attempts = 4
retry_on = ["429", "5xx"]
backoff = { kind = "exponential", base = "100ms", factor = 2.0, max = "1s", jitter = "none" }
retry_after = { honor = true, max = "10s" }
[retry.r.on.429]
backoff = { kind = "exponential", base = "1s", factor = 2.0, max = "8s", jitter = "none" }
[[routes]]
name = "main"
targets = ["m", "n"]
retry = "r"
"#;

#[tokio::test(start_paused = true)]
async fn rate_limit_storm_honours_retry_after_and_backs_off_harder() {
    let plan = common::plan(STORM);
    let exec = Executor::new(plan.clone()).unwrap();
    let n = Arc::new(AtomicU32::new(0));
    let t0 = Instant::now();
    let s = exec
        .execute(&Request::new(), |_t, _| {
            let k = n.fetch_add(1, SeqCst);
            async move {
                match k {
                    0 => Err(Failure::status(429).retry_after(Duration::from_secs(3))), // server asks 3s > backoff 1s
                    1 => Err(Failure::status(429)), // override: 2s
                    _ => Ok(Done::new("ok")),
                }
            }
        })
        .await
        .unwrap();
    let el = t0.elapsed();
    assert_eq!(s.attempts, 3);
    assert_eq!(s.model_name(), "m");
    let delays: Vec<_> = s.failed.iter().map(|a| a.delay.unwrap()).collect();
    assert_eq!(
        delays,
        [Duration::from_secs(3), Duration::from_secs(2)],
        "Retry-After honoured, then the 429 override"
    );
    assert_eq!(el, Duration::from_secs(5));
    check_served(&plan, &s, el);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_its_cap_fails_over_instead_of_waiting() {
    let plan = common::plan(STORM);
    let exec = Executor::new(plan.clone()).unwrap();
    let t0 = Instant::now();
    let s = exec
        .execute(&Request::new(), |t, _| {
            let on_m = t.model_name() == "m";
            async move {
                if on_m {
                    Err(Failure::status(429).retry_after(Duration::from_secs(120)))
                } else {
                    Ok(Done::new("from n"))
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(s.value, "from n");
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "did not wait the 120s the server asked"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_request_is_not_retried_nor_failed_over() {
    let plan = common::plan(STORM);
    let exec = Executor::new(plan).unwrap();
    let calls = Calls::default();
    let e = exec
        .execute(&Request::new(), |t, _| {
            calls.hit(t.model_name());
            async { Err::<Done<()>, _>(Failure::status(400).code("invalid_request_error")) }
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, StopReason::NotRetryable);
    assert_eq!((calls.get("m"), calls.get("n")), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_and_the_total_deadline_are_never_overrun() {
    let plan = common::plan(
        &STORM
            .replace(
                "timeouts = { per_try = \"5s\", total = \"60s\" }",
                "timeouts = { per_try = \"5s\", total = \"12s\" }",
            )
            .replace("retry_on = [\"429\", \"5xx\"]", "retry_on = [\"timeout\"]"),
    );
    let exec = Executor::new(plan.clone()).unwrap();
    let t0 = Instant::now();
    let e = exec
        .execute(&Request::new(), |_t, _| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Failure>(Done::new(()))
        })
        .await
        .unwrap_err();
    let el = t0.elapsed();
    assert!(el <= Duration::from_secs(12), "{el:?}");
    assert_eq!(e.reason, StopReason::Deadline, "{e}");
    assert!(e.attempts.iter().all(|a| a.failure.starts_with("timeout")));
    // 5s + 100ms + 5s + 200ms, then the third attempt gets what is left of 12s.
    assert_eq!(e.attempts.len(), 3, "{e}");
    check_failed(&plan, &e, el);
}

const SLOW: &str = r#"
[defaults]
timeouts = { per_try = "10s", total = "30s" }
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
breaker = "slow"
[upstreams.v]
base_url = "http://127.0.0.1:1/v"
[models.m]
upstream = "u"
[models.n]
upstream = "v"
[breakers.slow]
slow_call = { over = "1s", rate_threshold = 0.5, min_calls = 4, window = "1m" }
open_for = "30s"
[[routes]]
name = "main"
targets = ["m", "n"]
"#;

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_trips_the_slow_call_rule() {
    let plan = common::plan(SLOW);
    let exec = Executor::new(plan).unwrap();
    let calls = Calls::default();
    for _ in 0..8 {
        let s = exec
            .execute(&Request::new(), |t, _| {
                calls.hit(t.model_name());
                let slow = t.model_name() == "m";
                async move {
                    if slow {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Ok::<_, Failure>(Done::new(()))
                }
            })
            .await
            .unwrap();
        let _ = s;
    }
    assert_eq!(
        calls.get("m"),
        4,
        "after 4 slow calls (100% > 50%) the breaker opens"
    );
    assert_eq!(calls.get("n"), 4);
}

const FLAP: &str = r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
breaker = "rate"
[models.m]
upstream = "u"
[breakers.rate]
consecutive_failures = 5
failure_rate = { threshold = 0.5, min_calls = 10, window = "1m" }
open_for = "30s"
[[routes]]
name = "main"
targets = ["m"]
"#;

#[tokio::test(start_paused = true)]
async fn a_flapping_upstream_opens_on_failure_rate_not_on_consecutive_failures() {
    let plan = common::plan(FLAP);
    let exec = Executor::new(plan).unwrap();
    let k = AtomicU32::new(0);
    let mut outcomes = Vec::new();
    for _ in 0..14 {
        let r = exec
            .execute(&Request::new(), |_t, _| {
                let i = k.fetch_add(1, SeqCst);
                async move {
                    if i % 2 == 0 {
                        Err(Failure::status(502))
                    } else {
                        Ok(Done::new(()))
                    }
                }
            })
            .await;
        outcomes.push(match r {
            Ok(_) => "ok",
            Err(e) if e.reason == StopReason::NoTargetAvailable => "open",
            Err(_) => "fail",
        });
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // Never 5 failures in a row; once the window holds 10 calls at 50% failures, the next
    // recorded failure (the 11th call) opens the breaker.
    assert_eq!(k.load(SeqCst), 11, "{outcomes:?}");
    assert_eq!(&outcomes[11..], ["open"; 3]);
}

const BUDGET: &str = r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[models.premium]
upstream = "u"
price = { input_per_mtok = 10.0, output_per_mtok = 30.0 }
[models.cheap]
upstream = "u"
price = { input_per_mtok = 0.1, output_per_mtok = 0.3 }
[[routes]]
name = "complex"
when = { attr = "task", eq = "complex" }
targets = ["premium"]
[[routes]]
name = "bulk"
targets = ["cheap"]
[budgets.premium]
limit_usd = 0.05
window = "1d"
scope = { routes = ["complex"] }
on_exceed = { reroute = "bulk" }
[budgets.total]
limit_usd = 0.06
window = "1d"
"#;

#[tokio::test(start_paused = true)]
async fn a_budget_running_out_mid_run_reroutes_then_rejects() {
    let plan = common::plan(BUDGET);
    let exec = Executor::new(plan).unwrap();
    // Each premium call: 1000 in + 1000 out = 0.01 + 0.03 = $0.04 (reserved for max_tokens 1000).
    let req = Request::new()
        .task("complex")
        .input_tokens(1000)
        .max_tokens(1000);
    let mut served = Vec::new();
    let mut last_err = None;
    for _ in 0..200 {
        match exec
            .execute(&req, |_t, _| async {
                Ok::<_, Failure>(Done::with_usage((), 1000, 1000))
            })
            .await
        {
            Ok(s) => served.push(s.model_name().to_string()),
            Err(e) => {
                last_err = Some(e);
                break;
            }
        }
    }
    assert_eq!(served[0], "premium");
    assert_eq!(
        served[1], "cheap",
        "the premium budget ($0.05) cannot fit a second $0.04 call: rerouted to bulk"
    );
    let e = last_err.expect("the total budget runs out too");
    assert_eq!(
        e.reason,
        StopReason::BudgetExceeded {
            budget: "total".into()
        },
        "{e}"
    );
    let spent: f64 = 0.04 + 0.0004 * (served.len() - 1) as f64;
    assert!(
        spent <= 0.06 + 1e-9,
        "never more than the total budget: {spent}"
    );
    assert!(
        spent > 0.06 - 0.0004 - 1e-9,
        "until the next call would not fit"
    );
}

const HEDGE: &str = r#"
[defaults]
timeouts = { per_try = "10s", total = "30s" }
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[models.slow]
upstream = "u"
[models.fast]
upstream = "u"
[[routes]]
name = "main"
targets = ["slow", "fast"]
hedge = { after = "1s", max_extra = 1 }
"#;

#[tokio::test(start_paused = true)]
async fn a_hedge_races_a_slow_first_attempt_and_the_first_success_wins() {
    let plan = common::plan(HEDGE);
    let exec = Executor::new(plan.clone()).unwrap();
    let t0 = Instant::now();
    let s = exec
        .execute(&Request::new(), |t, _| {
            let slow = t.model_name() == "slow";
            let hedge = t.is_hedge();
            async move {
                tokio::time::sleep(Duration::from_millis(if slow { 5000 } else { 200 })).await;
                Ok::<_, Failure>(Done::new(hedge))
            }
        })
        .await
        .unwrap();
    assert_eq!(s.model_name(), "fast");
    assert!(s.value, "served by the hedge");
    assert_eq!(t0.elapsed(), Duration::from_millis(1200));
    assert_eq!(s.attempts, 2);
    assert_eq!(
        exec.runtime()
            .model(plan.model_by_name("slow").unwrap())
            .in_flight(),
        0,
        "the losing attempt was cancelled and its slot returned"
    );
}

const LIMITED: &str = r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
limits = { concurrency = 2, on_limit = "wait", queue_timeout = "500ms" }
[models.m]
upstream = "u"
[[routes]]
name = "main"
targets = ["m"]
"#;

#[tokio::test(start_paused = true)]
async fn concurrency_waits_up_to_the_queue_timeout_and_cancellation_returns_permits() {
    let plan = common::plan(LIMITED);
    let exec = Executor::new(plan.clone()).unwrap();
    let peak = Arc::new(AtomicU32::new(0));
    let now_in = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let exec = exec.clone();
        let (peak, now_in) = (peak.clone(), now_in.clone());
        tasks.push(tokio::spawn(async move {
            exec.execute(&Request::new(), move |_t, _| {
                let (peak, now_in) = (peak.clone(), now_in.clone());
                async move {
                    let n = now_in.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(n, SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    now_in.fetch_sub(1, SeqCst);
                    Ok::<_, Failure>(Done::new(()))
                }
            })
            .await
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e.skipped[0].reason, SkipReason::Limited(_)), "{e}");
                limited += 1;
            }
        }
    }
    assert_eq!(peak.load(SeqCst), 2, "never more than 2 in flight");
    assert_eq!(
        ok, 4,
        "two at once, two more after 300ms; the last two would wait 600ms > 500ms"
    );
    assert_eq!(limited, 2);
    // Cancel a request mid-call: its permit comes back.
    let exec2 = exec.clone();
    let h = tokio::spawn(async move {
        exec2
            .execute(&Request::new(), |_t, _| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Failure>(Done::new(()))
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.abort();
    let _ = h.await;
    let rt = exec.runtime();
    assert_eq!(
        rt.upstream(UpstreamId(0))
            .concurrency
            .as_ref()
            .unwrap()
            .in_flight(),
        0
    );
}

fn paced(limits: &str) -> Plan {
    common::plan(&format!(
        r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
limits = {{ {limits}, on_limit = "wait", queue_timeout = "2s" }}
[models.m]
upstream = "u"
[[routes]]
name = "main"
targets = ["m"]
"#
    ))
}

async fn call(exec: &Executor, req: &Request) -> Result<Served<()>, ExecError> {
    exec.execute(req, |_t, _| async { Ok::<_, Failure>(Done::new(())) })
        .await
}

#[tokio::test(start_paused = true)]
async fn rate_and_token_limiters_wait_when_the_policy_says_so() {
    // The request rate: one per 500 ms, no burst; the next call waits for its slot.
    let exec = Executor::new(paced("requests_per_second = 2.0, burst = 1")).unwrap();
    let req = Request::new();
    let t0 = Instant::now();
    call(&exec, &req).await.unwrap();
    call(&exec, &req).await.unwrap();
    call(&exec, &req).await.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(1000),
        "3 calls at 0, 500, 1000 ms"
    );

    // Tokens: 1,000 a second; a call that empties the bucket makes the next one wait for
    // its tokens (1 s for 1,000), and one that would wait past the queue timeout is refused.
    let exec = Executor::new(paced("tokens_per_minute = 60000.0")).unwrap();
    let t0 = Instant::now();
    call(
        &exec,
        &Request::new().input_tokens(40_000).max_tokens(20_000),
    )
    .await
    .unwrap();
    call(&exec, &Request::new().input_tokens(500).max_tokens(500))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    let e = call(&exec, &Request::new().input_tokens(2_500).max_tokens(2_500))
        .await
        .unwrap_err();
    assert!(matches!(e.skipped[0].reason, SkipReason::Limited(_)), "{e}");
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(1),
        "refused without waiting"
    );
}

/// A stream settles at its first byte with no usage: the token limiter keeps the
/// estimate until `record_late_usage` brings the actual usage, and then gives back the rest.
#[tokio::test(start_paused = true)]
async fn late_usage_gives_back_the_unused_token_estimate() {
    let exec = Executor::new(paced("tokens_per_minute = 60000.0")).unwrap();
    let stream = Request::new().input_tokens(10_000).max_tokens(50_000);
    let mut served = exec
        .execute(&stream, |_t, _| async {
            Ok::<_, Failure>(Done::new(()).pending())
        })
        .await
        .unwrap();
    assert_eq!(
        served.hold.reserved_tokens(),
        60_000,
        "the whole bucket, held"
    );
    exec.record_late_outcome(&served, None);
    exec.record_late_usage(
        &mut served,
        None,
        tollgate::exec::Usage {
            input_tokens: 10_000,
            output_tokens: 100,
        },
    );

    // 49,900 tokens came back: a 40,000-token call goes at once (without them it would
    // wait 40 s, past the 2 s queue timeout, and be refused).
    let t0 = Instant::now();
    call(
        &exec,
        &Request::new().input_tokens(20_000).max_tokens(20_000),
    )
    .await
    .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);

    // A call that reported its usage holds nothing to reconcile.
    let done = exec
        .execute(&Request::new().input_tokens(10), |_t, _| async {
            Ok::<_, Failure>(Done::with_usage((), 10, 5))
        })
        .await
        .unwrap();
    assert_eq!(done.hold.reserved_tokens(), 0);
}

const RETRY_BUDGET: &str = r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[models.m]
upstream = "u"
[retry.r]
max_attempts = 5
backoff = { kind = "constant", base = "10ms", max = "10ms", jitter = "none" }
budget = { ratio = 0.2, min_per_second = 1, ttl = "10s" }
[[routes]]
name = "main"
targets = ["m"]
retry = "r"
"#;

#[tokio::test(start_paused = true)]
async fn an_outage_cannot_multiply_load_beyond_the_retry_budget() {
    let plan = common::plan(RETRY_BUDGET);
    let exec = Executor::new(plan).unwrap();
    let calls = AtomicU32::new(0);
    let requests = 200u32;
    let t0 = Instant::now();
    for _ in 0..requests {
        let _ = exec
            .execute(&Request::new(), |_t, _| {
                calls.fetch_add(1, SeqCst);
                async { Err::<Done<()>, _>(Failure::status(503)) }
            })
            .await;
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let attempts = calls.load(SeqCst);
    // The budget's bound: retries <= ratio * requests + min_per_second * (elapsed + ttl).
    let elapsed = t0.elapsed().as_secs_f64();
    let bound = f64::from(requests) * (1.0 + 0.2) + 1.0 * (elapsed + 10.0);
    assert!(
        f64::from(attempts) <= bound,
        "{attempts} attempts > {bound}"
    );
    assert!(attempts > requests, "some retries were allowed");
    assert!(
        attempts < requests * 2,
        "without the budget, 5 attempts each would make {}",
        requests * 5
    );
}

#[tokio::test(start_paused = true)]
async fn weighted_routing_is_deterministic_under_a_seed_and_follows_weights() {
    let plan = common::plan(
        r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[models.a]
upstream = "u"
[models.b]
upstream = "u"
[[routes]]
name = "w"
strategy = "weighted"
targets = [{ model = "a", weight = 3.0 }, { model = "b", weight = 1.0 }]
"#,
    );
    let picks = |seed| {
        let plan = plan.clone();
        async move {
            let exec = Executor::builder(plan).seed(seed).build().unwrap();
            let mut v = Vec::new();
            for _ in 0..400 {
                let s = exec
                    .execute(&Request::new(), |t, _| {
                        let m = t.model_name().to_string();
                        async move { Ok::<_, Failure>(Done::new(m)) }
                    })
                    .await
                    .unwrap();
                v.push(s.value);
            }
            v
        }
    };
    let x = picks(42).await;
    assert_eq!(x, picks(42).await, "same seed, same choices");
    let a = x.iter().filter(|m| *m == "a").count();
    assert!((240..=360).contains(&a), "about 3/4 to a: {a}/400");
}

#[tokio::test(start_paused = true)]
async fn the_spend_report_shows_cost_by_model_and_savings_against_the_baseline() {
    let plan = common::plan(&BUDGET.replace(
        "[[routes]]\nname = \"complex\"",
        "[defaults]\nbaseline_model = \"premium\"\n\n[[routes]]\nname = \"complex\"",
    ));
    assert!(plan.baseline_model.is_some());
    let exec = Executor::new(plan.clone()).unwrap();
    for _ in 0..10 {
        exec.execute(
            &Request::new().task("bulk").max_tokens(100),
            |_t, _| async { Ok::<_, Failure>(Done::with_usage((), 1_000, 1_000)) },
        )
        .await
        .unwrap();
    }
    let (report, savings) = exec.spend_report(None);
    let cheap = plan.model_by_name("cheap").unwrap().index();
    assert_eq!(report.by_model[cheap].calls, 10);
    assert_eq!(report.by_model[cheap].input_tokens, 10_000);
    // 10 × (1000 × $0.1 + 1000 × $0.3) / 1M = $0.004; on premium: 10 × $0.04 = $0.4.
    let s = savings.expect("the plan names a baseline");
    assert!((s.actual.as_dollars() - 0.004).abs() < 1e-9, "{s}");
    assert!((s.baseline.as_dollars() - 0.4).abs() < 1e-9, "{s}");
    assert!((s.saved_dollars() - 0.396).abs() < 1e-9);
}

/// A hedge obeys `failover_on`: a first attempt that fails with a class that may not cross
/// targets (a 400) ends the request; no hedge starts because of it (issue 9 §3.7).
#[tokio::test(start_paused = true)]
async fn a_failure_that_may_not_cross_targets_launches_no_hedge() {
    let plan = common::plan(HEDGE);
    let exec = Executor::new(plan).unwrap();
    let calls = Calls::default();
    let e = exec
        .execute(&Request::new(), |t, _| {
            calls.hit(t.model_name());
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<Done<()>, _>(Failure::status(400).code("invalid_request_error"))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, StopReason::NotRetryable, "{e}");
    assert_eq!(
        calls.get("fast"),
        0,
        "the 400 was not failed over by a hedge"
    );
    assert_eq!(calls.get("slow"), 1);
}

/// A failure that may cross targets while a hedge is pending starts it at once: it is the
/// failover that would have come anyway.
#[tokio::test(start_paused = true)]
async fn a_failure_that_may_cross_targets_starts_the_hedge_at_once() {
    let plan = common::plan(HEDGE);
    let exec = Executor::new(plan).unwrap();
    let t0 = Instant::now();
    let s = exec
        .execute(&Request::new(), |t, _| {
            let slow = t.model_name() == "slow";
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if slow {
                    Err(Failure::status(503))
                } else {
                    Ok(Done::new(()))
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(s.model_name(), "fast");
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(100),
        "no wait for the hedge delay"
    );
}

/// `Served::failovers` counts moves to another target, skips included (an open breaker),
/// and the route's stats sum them (issue 9 §3.9).
#[tokio::test(start_paused = true)]
async fn failovers_count_moves_to_another_target_skips_included() {
    let plan = common::plan(OUTAGE);
    let exec = Executor::builder(plan).seed(7).build().unwrap();
    let down_a = |t: tollgate::exec::Target, _| async move {
        if t.model_name() == "ma" {
            Err(Failure::status(503))
        } else {
            Ok(Done::new(()))
        }
    };
    let s = exec.execute(&Request::new(), down_a).await.unwrap();
    assert_eq!(
        (s.model_name(), s.failovers),
        ("mb", 1),
        "ma failed twice: one move"
    );
    // The third failure on ma opens its breaker; from then on ma is skipped.
    let s = exec.execute(&Request::new(), down_a).await.unwrap();
    assert_eq!(s.failovers, 1);
    let s = exec.execute(&Request::new(), down_a).await.unwrap();
    assert_eq!(s.failed.len(), 0, "ma skipped, not called");
    assert_eq!(s.failovers, 1, "a skip is a move too");
    let ok = exec
        .execute(&Request::new(), |_t, _| async {
            Ok::<_, Failure>(Done::new(()))
        })
        .await;
    assert_eq!(ok.unwrap().failovers, 1, "ma still open");
    assert_eq!(exec.stats().routes[0].failovers, 4);
}

/// A first attempt that fails while the retry budget refuses the hedge ends the request
/// with that failure (the race used to wait forever for a racer that never came).
#[tokio::test(start_paused = true)]
async fn a_hedge_refused_by_the_retry_budget_after_a_failure_ends_the_race() {
    let plan = common::plan(&format!(
        "{HEDGE}retry = \"nobudget\"\n[retry.nobudget]\nmax_attempts = 1\n\
         budget = {{ ratio = 0.0, min_per_second = 0.0 }}\n"
    ));
    let exec = Executor::new(plan).unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        exec.execute(&Request::new(), |_t, _| async {
            Err::<Done<()>, _>(Failure::status(503))
        }),
    )
    .await
    .expect("the request ends");
    let e = r.unwrap_err();
    assert_eq!(e.attempts.len(), 1, "{e}");
}

/// A model's `max_tokens` is what a request without one is sent with (the HTTP client
/// fills it in), so it is what the budget reserves for such a request: here 100 tokens
/// ($0.001) fit a $0.01 budget that the default reservation (4,096 tokens, $0.041) does not.
#[tokio::test(start_paused = true)]
async fn a_budget_reserves_the_models_max_tokens_for_a_request_without_one() {
    let policy = |max_tokens: &str| {
        format!(
            r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/v1"
[models.m]
upstream = "u"
{max_tokens}
price = {{ input_per_mtok = 0.0, output_per_mtok = 10.0 }}
[budgets.small]
limit_usd = 0.01
window = "1d"
[[routes]]
name = "r"
targets = ["m"]
"#
        )
    };
    let op = |_t, _n| async { Ok::<_, Failure>(Done::with_usage((), 0, 50)) };
    let capped = Executor::new(common::plan(&policy("max_tokens = 100"))).unwrap();
    assert!(capped.execute(&Request::new(), op).await.is_ok());
    let open = Executor::new(common::plan(&policy(""))).unwrap();
    let e = open.execute(&Request::new(), op).await.unwrap_err();
    assert!(matches!(e.reason, StopReason::BudgetExceeded { .. }), "{e}");
    // A request's own max_tokens still decides.
    let asks_more = Request::new().max_tokens(4096);
    let e = capped.execute(&asks_more, op).await.unwrap_err();
    assert!(matches!(e.reason, StopReason::BudgetExceeded { .. }), "{e}");
}
