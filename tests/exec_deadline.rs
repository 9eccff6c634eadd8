//! The total deadline holds whatever the request waits for: a limiter's queue (concurrency,
//! rate, tokens), a backoff, a hedge. Each test fails if waiting is not charged to the
//! request (issue 9 §3.2).

mod common;

use std::time::Duration;

use tokio::time::Instant;
use tollgate::exec::{Done, Executor, Failure, Request};

/// One tick of the scheduler: what a deadline may be overrun by.
const TICK: Duration = Duration::from_millis(1);

fn policy(limits: &str, hedge: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ per_try = "2s", total = "2s" }}
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
limits = {{ {limits}, on_limit = "wait", queue_timeout = "1500ms" }}
[upstreams.v]
base_url = "http://127.0.0.1:1/v"
limits = {{ {limits}, on_limit = "wait", queue_timeout = "1500ms" }}
[models.m]
upstream = "u"
[models.n]
upstream = "v"
[[routes]]
name = "main"
targets = ["m", "n"]
{hedge}
"#
    )
}

/// Runs the requests at once: the first holds its permit for 1 s, the others call an
/// upstream that never answers in time; returns how long each took.
async fn hung_calls(exec: &Executor, reqs: &[Request]) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let (exec, req) = (exec.clone(), req.clone());
        let hold = Duration::from_secs(if i == 0 { 1 } else { 60 });
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let _ = exec
                .execute(&req, |_t, _| async move {
                    tokio::time::sleep(hold).await;
                    Ok::<_, Failure>(Done::new(()))
                })
                .await;
            t0.elapsed()
        }));
        tokio::task::yield_now().await;
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn assert_within(total: Duration, elapsed: &[Duration]) {
    for e in elapsed {
        assert!(
            *e <= total + TICK,
            "a request took {e:?}, past its total deadline {total:?}: {elapsed:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_concurrency_permit_counts_towards_the_deadline() {
    let exec = Executor::new(common::plan(&policy("concurrency = 1", ""))).unwrap();
    let reqs = [Request::new(), Request::new()];
    assert_within(Duration::from_secs(2), &hung_calls(&exec, &reqs).await);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_request_rate_counts_towards_the_deadline() {
    let exec = Executor::new(common::plan(&policy(
        "requests_per_second = 1.0, burst = 1",
        "",
    )))
    .unwrap();
    let reqs = [Request::new(), Request::new()];
    assert_within(Duration::from_secs(2), &hung_calls(&exec, &reqs).await);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_tokens_counts_towards_the_deadline() {
    // 10,000 tokens a second, a minute's worth in the bucket: the first request takes
    // nearly all of it, the second waits 0.8 s for its 18,000.
    let exec = Executor::new(common::plan(&policy("tokens_per_minute = 600000.0", ""))).unwrap();
    let reqs = [
        Request::new().input_tokens(500_000).max_tokens(90_000),
        Request::new().input_tokens(10_000).max_tokens(8_000),
    ];
    assert_within(Duration::from_secs(2), &hung_calls(&exec, &reqs).await);
}

/// Takes n's only permit for a second: a request that fails on m at once fails over to n
/// and holds it there.
async fn occupy_n(exec: &Executor) -> tokio::task::JoinHandle<()> {
    let exec = exec.clone();
    let busy = tokio::spawn(async move {
        let _ = exec
            .execute(&Request::new(), |t, _| {
                let on_m = t.model_name() == "m";
                async move {
                    if on_m {
                        return Err(Failure::status(503));
                    }
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    Ok::<_, Failure>(Done::new(()))
                }
            })
            .await;
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    busy
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_waited_for_its_permit_still_ends_by_the_deadline() {
    // The hedge's upstream is busy: the hedge waits for its permit, then must get only what
    // is left of the deadline.
    let exec = Executor::new(common::plan(&policy(
        "concurrency = 1",
        "hedge = { after = \"200ms\", max_extra = 1 }",
    )))
    .unwrap();
    let busy = occupy_n(&exec).await;
    let t0 = Instant::now();
    let _ = exec
        .execute(&Request::new(), |_t, _| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Failure>(Done::new(()))
        })
        .await;
    assert_within(Duration::from_secs(2), &[t0.elapsed()]);
    let _ = busy.await;
}

/// A hedge waiting for its permit does not hold up the attempt it races: the first attempt
/// answers on time while the hedge still queues (found by the simulation:
/// tests/sim_regressions/per-try-39.json). And a racer that failed gives its concurrency
/// permit back at once: the busy request's failed first attempt held m's only permit for
/// the whole race before, so this request queued for it until 990 ms.
#[tokio::test(start_paused = true)]
async fn a_hedge_queueing_for_its_permit_does_not_stall_the_first_attempt() {
    let exec = Executor::new(common::plan(&policy(
        "concurrency = 1",
        "hedge = { after = \"100ms\", max_extra = 1 }",
    )))
    .unwrap();
    let busy = occupy_n(&exec).await;
    let t0 = Instant::now();
    let s = exec
        .execute(&Request::new(), |t, _| {
            let on_m = t.model_name() == "m";
            async move {
                tokio::time::sleep(Duration::from_millis(if on_m { 300 } else { 10 })).await;
                Ok::<_, Failure>(Done::new(()))
            }
        })
        .await
        .unwrap();
    assert_eq!(s.model_name(), "m");
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(300),
        "answered when m answered"
    );
    let _ = busy.await;
}

/// A breaker that opens while a call waits for its limiter permit refuses that call: no
/// call starts while its breaker is open (found by the simulation).
#[tokio::test(start_paused = true)]
async fn a_breaker_that_opened_during_the_wait_refuses_the_call() {
    let exec = Executor::new(common::plan(
        r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
limits = { concurrency = 1, on_limit = "wait", queue_timeout = "2s" }
breaker = "once"
[breakers.once]
consecutive_failures = 1
open_for = "10s"
[models.m]
upstream = "u"
[[routes]]
name = "main"
targets = ["m"]
"#,
    ))
    .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (exec, calls) = (exec.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            exec.execute(&Request::new(), move |_t, _| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Err::<Done<()>, _>(Failure::status(503))
                }
            })
            .await
        }));
        tokio::task::yield_now().await;
    }
    let mut skipped = 0;
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        skipped += e
            .skipped
            .iter()
            .filter(|s| matches!(s.reason, tollgate::exec::SkipReason::BreakerOpen { .. }))
            .count();
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the second call waited while the first opened the breaker: it must not start"
    );
    assert_eq!(skipped, 1);
}
