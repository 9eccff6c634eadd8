//! Every permit comes back, however an attempt ends: success, failure, timeout, the caller
//! dropping the request, or a panic in the operation.

mod common;

use std::time::Duration;

use tollgate::exec::{Done, Executor, Failure, Request};

const POLICY: &str = r#"
[defaults]
timeouts = { per_try = "1s", total = "5s" }
[upstreams.u]
base_url = "http://127.0.0.1:1/u"
limits = { concurrency = 2, tokens_per_minute = 600000.0 }
[models.m]
upstream = "u"
price = { input_per_mtok = 1.0, output_per_mtok = 1.0 }
[budgets.b]
limit_usd = 100.0
window = "1d"
[[routes]]
name = "main"
targets = ["m"]
"#;

/// Asserts nothing is held: no call in flight, no budget reserved, the token bucket empty
/// but for `tokens`.
fn assert_idle(exec: &Executor, what: &str) {
    let rt = exec.runtime();
    let st = exec.stats();
    assert_eq!(
        rt.upstream(tollgate::plan::UpstreamId(0))
            .concurrency
            .as_ref()
            .unwrap()
            .in_flight(),
        0,
        "{what}: concurrency"
    );
    assert_eq!(
        rt.model(tollgate::plan::ModelId(0)).in_flight(),
        0,
        "{what}: in flight"
    );
    assert_eq!(
        st.budgets[0].reserved_usd, 0.0,
        "{what}: budget reservation"
    );
}

#[tokio::test(start_paused = true)]
async fn permits_come_back_after_a_panic_in_the_operation() {
    let exec = Executor::new(common::plan(POLICY)).unwrap();
    let e = exec.clone();
    let h = tokio::spawn(async move {
        e.execute(&Request::new(), |_t, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("the operation panicked");
            #[allow(unreachable_code)]
            Ok::<_, Failure>(Done::new(()))
        })
        .await
    });
    assert!(h.await.unwrap_err().is_panic());
    assert_idle(&exec, "after a panic");
}

#[tokio::test(start_paused = true)]
async fn permits_come_back_when_the_caller_drops_the_request() {
    let exec = Executor::new(common::plan(POLICY)).unwrap();
    let req = Request::new();
    let slow = exec.execute(&req, |_t, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Failure>(Done::new(()))
    });
    assert!(tokio::time::timeout(Duration::from_millis(100), slow)
        .await
        .is_err());
    assert_idle(&exec, "after the caller left");
}

#[tokio::test(start_paused = true)]
async fn permits_come_back_after_success_failure_and_timeout() {
    let exec = Executor::new(common::plan(POLICY)).unwrap();
    exec.execute(&Request::new(), |_t, _| async {
        Ok::<_, Failure>(Done::with_usage((), 10, 10))
    })
    .await
    .unwrap();
    assert_idle(&exec, "after a success");
    exec.execute(&Request::new(), |_t, _| async {
        Err::<Done<()>, _>(Failure::status(503))
    })
    .await
    .unwrap_err();
    assert_idle(&exec, "after a failure");
    exec.execute(&Request::new(), |_t, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Failure>(Done::new(()))
    })
    .await
    .unwrap_err();
    assert_idle(&exec, "after a timeout");
}
