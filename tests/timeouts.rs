//! How the timeouts resolve, seen from a request: `total` field by field (route →
//! upstream → defaults), on paused time with scripted operations.

mod common;

use std::time::Duration;

use tokio::time::Instant;
use tollgate::exec::{Done, Executor, Failure, Request, StopReason};

/// Upstream `a` (total `ta`) and `b` (total `tb`); a `fast` route on `a` alone, a `both`
/// route over `a` then `b`, each with `route_extra` (e.g. its own `timeouts`). Defaults:
/// per_try 30s, total 2m; ten attempts per target, on timeouts and 5xx.
fn policy(ta: &str, tb: &str, route_extra: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ per_try = "30s", total = "2m" }}
retry = "many"
[retry.many]
max_attempts = 10
backoff = {{ kind = "constant", base = "1ms", max = "1ms", jitter = "none" }}
[upstreams.a]
base_url = "http://127.0.0.1:1/a"
{ta}
[upstreams.b]
base_url = "http://127.0.0.1:1/b"
{tb}
[models.ma]
upstream = "a"
[models.mb]
upstream = "b"
[[routes]]
name = "fast"
when = {{ attr = "task", eq = "fast" }}
targets = ["ma"]
{route_extra}
[[routes]]
name = "both"
targets = ["ma", "mb"]
{route_extra}
"#
    )
}

/// Runs one request whose attempts on `a` fail at once with a 500 and on `b` never
/// answer; returns how long it took and why it stopped.
async fn run(toml: &str, task: &str) -> (Duration, StopReason) {
    let plan = common::plan(toml);
    let exec = Executor::builder(plan).seed(3).build().unwrap();
    let t0 = Instant::now();
    let mut req = Request::new();
    if !task.is_empty() {
        req = req.task(task);
    }
    let e = exec
        .execute(&req, |t, _| async move {
            if t.upstream_name() == "a" && task != "fast" {
                return Err::<Done<()>, _>(Failure::status(500));
            }
            std::future::pending::<()>().await;
            unreachable!()
        })
        .await
        .unwrap_err();
    (t0.elapsed(), e.reason)
}

fn near(got: Duration, want: Duration) -> bool {
    got >= want && got <= want + Duration::from_millis(5)
}

#[tokio::test(start_paused = true)]
async fn an_upstreams_total_is_the_deadline_of_routes_that_set_none() {
    let toml = policy(
        r#"timeouts = { total = "3s" }"#,
        r#"timeouts = { total = "7s" }"#,
        "",
    );
    let plan = common::plan(&toml);
    let total = |r: &str| plan.route(plan.route_by_name(r).unwrap()).total_timeout;
    assert_eq!(total("fast"), Duration::from_secs(3));
    // Targets on several upstreams: the longest of theirs, so failing over to `b` is not
    // cut by `a`'s shorter deadline.
    assert_eq!(total("both"), Duration::from_secs(7));

    let (took, why) = run(&toml, "fast").await;
    assert!(near(took, Duration::from_secs(3)), "fast took {took:?}");
    assert_eq!(why, StopReason::Deadline);
    let (took, why) = run(&toml, "").await;
    assert!(near(took, Duration::from_secs(7)), "both took {took:?}");
    assert_eq!(why, StopReason::Deadline);
}

#[tokio::test(start_paused = true)]
async fn a_routes_total_beats_its_upstreams_and_the_defaults_come_last() {
    let toml = policy(
        r#"timeouts = { total = "3s" }"#,
        r#"timeouts = { total = "7s" }"#,
        r#"timeouts = { total = "1s" }"#,
    );
    for task in ["fast", ""] {
        let (took, why) = run(&toml, task).await;
        assert!(near(took, Duration::from_secs(1)), "{task:?} took {took:?}");
        assert_eq!(why, StopReason::Deadline);
    }
    // An upstream without a total of its own takes the defaults' (2m) into the maximum.
    let toml = policy(r#"timeouts = { total = "3s" }"#, "", "");
    let (took, _) = run(&toml, "").await;
    assert!(near(took, Duration::from_secs(120)), "took {took:?}");
}
