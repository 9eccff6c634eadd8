//! The routing strategies other than `failover` and `weighted` (tested in exec_scenarios):
//! `cheapest`, `lowest-latency` and `least-busy` (issue 9 §3.6, §3.10).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate::exec::{Done, Executor, Failure, Request};

fn policy(strategy: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ per_try = "5s", total = "20s" }}
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[models.dear]
upstream = "u"
price = {{ input_per_mtok = 10.0, output_per_mtok = 30.0 }}
[models.cheap]
upstream = "u"
price = {{ input_per_mtok = 0.1, output_per_mtok = 0.4 }}
[models.mid]
upstream = "u"
price = {{ input_per_mtok = 1.0, output_per_mtok = 4.0 }}
[[routes]]
name = "main"
strategy = "{strategy}"
targets = ["dear", "cheap", "mid"]
"#
    )
}

/// Runs one request; `behave(model)` gives the attempt's latency and whether it fails.
/// Returns the models called, in order, and the one that served.
async fn run(
    exec: &Executor,
    behave: impl Fn(&str) -> (u64, bool),
) -> (Vec<String>, Option<String>) {
    let called = Arc::new(Mutex::new(Vec::new()));
    let r = exec
        .execute(
            &Request::new().input_tokens(1000).max_tokens(100),
            |t, _| {
                let (ms, fails) = behave(t.model_name());
                called.lock().unwrap().push(t.model_name().to_string());
                async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if fails {
                        Err(Failure::connect("refused"))
                    } else {
                        Ok(Done::with_usage((), 1000, 100))
                    }
                }
            },
        )
        .await;
    let called = called.lock().unwrap().clone();
    (called, r.ok().map(|s| s.model_name().to_string()))
}

#[tokio::test(start_paused = true)]
async fn cheapest_tries_targets_by_estimated_cost() {
    let exec = Executor::new(common::plan(&policy("cheapest"))).unwrap();
    // Everything fails: the order of the attempts is the order of cost.
    let (called, served) = run(&exec, |_| (1, true)).await;
    assert_eq!(called, ["cheap", "mid", "dear"]);
    assert_eq!(served, None);
    let (called, served) = run(&exec, |_| (1, false)).await;
    assert_eq!(called, ["cheap"]);
    assert_eq!(served.as_deref(), Some("cheap"));
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_measures_every_target_then_prefers_the_fastest() {
    let exec = Executor::new(common::plan(&policy("lowest-latency"))).unwrap();
    let latency = |m: &str| match m {
        "dear" => 300,
        "cheap" => 100,
        _ => 200,
    };
    // Unmeasured targets count as fastest: the first requests measure them one by one.
    let mut first = Vec::new();
    for _ in 0..3 {
        let (called, _) = run(&exec, |m| (latency(m), false)).await;
        first.push(called[0].clone());
    }
    first.sort();
    assert_eq!(first, ["cheap", "dear", "mid"], "each target measured once");
    for _ in 0..5 {
        let (called, served) = run(&exec, |m| (latency(m), false)).await;
        assert_eq!(called, ["cheap"]);
        assert_eq!(served.as_deref(), Some("cheap"));
    }
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_does_not_keep_trying_a_target_that_always_fails_fast() {
    let exec = Executor::new(common::plan(&policy("lowest-latency"))).unwrap();
    // `cheap` refuses every connection within a millisecond; the others answer in 200 ms.
    let behave = |m: &str| {
        if m == "cheap" {
            (1, true)
        } else {
            (200, false)
        }
    };
    let mut first_on_cheap = 0;
    for _ in 0..20 {
        let (called, served) = run(&exec, behave).await;
        assert!(served.is_some());
        if called[0] == "cheap" {
            first_on_cheap += 1;
        }
    }
    assert!(
        first_on_cheap <= 1,
        "a failing target counts as slow, not as unmeasured: tried first {first_on_cheap} times of 20"
    );
}

#[tokio::test(start_paused = true)]
async fn least_busy_sends_to_the_target_with_fewest_calls_in_flight() {
    let exec = Executor::new(common::plan(&policy("least-busy"))).unwrap();
    // Three slow requests at once spread over the three targets (0, 1, 2 in flight seen).
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            run(&exec, |_| (1000, false)).await.1.unwrap()
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.unwrap());
    }
    served.sort();
    assert_eq!(served, ["cheap", "dear", "mid"], "one call on each");
    // With all idle again, ties keep the route's order.
    assert_eq!(run(&exec, |_| (1, false)).await.1.as_deref(), Some("dear"));
}
