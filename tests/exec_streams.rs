//! Streams and budgets: a streamed call holds its budget reservation until the stream ends
//! and then settles with the usage it reported, or with the reservation when it reported
//! none (issue 9 §3.1). Without the hold, concurrent streams overspend a small budget
//! several times over.

mod common;

use std::time::Duration;

use tollgate::exec::{Done, Executor, Failure, Request, Served, StopReason, Usage};

/// $1 a day; every request reserves 1,000 in + 1,000 out at $200 per million each = $0.40.
const POLICY: &str = r#"
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
[models.m]
upstream = "u"
price = { input_per_mtok = 200.0, output_per_mtok = 200.0 }
[budgets.small]
limit_usd = 1.0
window = "1d"
[[routes]]
name = "main"
targets = ["m"]
"#;

fn req() -> Request {
    Request::new().input_tokens(1_000).max_tokens(1_000)
}

async fn open_stream(exec: &Executor) -> Result<Served<()>, tollgate::exec::ExecError> {
    exec.execute(&req(), |_t, _| async {
        Ok::<_, Failure>(Done::new(()).pending())
    })
    .await
}

fn spent(exec: &Executor) -> f64 {
    exec.stats().budgets[0].spent_usd
}

fn reserved(exec: &Executor) -> f64 {
    exec.stats().budgets[0].reserved_usd
}

#[tokio::test(start_paused = true)]
async fn concurrent_streams_cannot_overspend_a_budget() {
    let exec = Executor::new(common::plan(POLICY)).unwrap();
    // Ten streams open at once, each reporting its whole reservation's worth at the end.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        match open_stream(&exec).await {
            Ok(s) => open.push(s),
            Err(e) => {
                assert!(matches!(e.reason, StopReason::BudgetExceeded { .. }), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        open.len(),
        2,
        "two reservations of $0.40 fit in $1, not ten"
    );
    assert_eq!(refused, 8);
    assert!(
        (reserved(&exec) - 0.8).abs() < 1e-6,
        "both streams hold their reservations"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for mut s in open {
        let usage = Usage {
            input_tokens: 1_000,
            output_tokens: 1_000,
        };
        exec.record_late_usage(&mut s, None, usage);
        exec.record_late_outcome(&s, None);
    }
    let spent = spent(&exec);
    assert!(
        (spent - 0.8).abs() < 1e-6,
        "spend is what the streams reported: {spent}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_reports_less_gives_the_rest_back() {
    let exec = Executor::new(common::plan(POLICY)).unwrap();
    let mut s = open_stream(&exec).await.unwrap();
    let usage = Usage {
        input_tokens: 1_000,
        output_tokens: 10,
    };
    exec.record_late_usage(&mut s, None, usage);
    drop(s);
    assert!((spent(&exec) - 0.202).abs() < 1e-6, "{}", spent(&exec));
    assert_eq!(
        reserved(&exec),
        0.0,
        "nothing is held once the usage is known"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_ends_without_usage_is_charged_its_reservation() {
    let exec = Executor::new(common::plan(POLICY)).unwrap();
    let s = open_stream(&exec).await.unwrap();
    exec.record_late_outcome(&s, Some(&Failure::timeout()));
    assert!((reserved(&exec) - 0.4).abs() < 1e-6);
    drop(s);
    assert_eq!(reserved(&exec), 0.0);
    assert!(
        (spent(&exec) - 0.4).abs() < 1e-6,
        "no usage reported: the reservation is what it may have cost: {}",
        spent(&exec)
    );
}
