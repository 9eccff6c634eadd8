//! `tollgate::http::ChatLayer` (the tower layer) around `tollgate::http::Client`, against
//! in-process fake upstreams on 127.0.0.1: what the reqwest middleware's tests check, seen
//! through `tower::Service`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::relay::{chat_body, env, exec_and_client, two_upstream_policy, TwoUpstreams};
use serde_json::{Map, Value};
use tollgate::exec::{ExecError, Executor, FailureKind, Served, StopReason};
use tollgate::http::{Attempt, ChatLayer, Client};
use tollgate::plan::Plan;
use tollgate::server::fake::Behavior;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Sends `body` (routed to `main`) through the layer around `inner`.
async fn call<S>(exec: &Executor, inner: S, prompt: &str) -> Result<Served<Bytes>, ExecError>
where
    S: Service<Attempt, Response = tollgate::exec::Done<Bytes>, Error = tollgate::exec::Failure>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let mut svc = ServiceBuilder::new()
        .layer(ChatLayer::new(exec.clone()))
        .service(inner);
    svc.ready().await?.call(main(prompt)).await
}

/// A chat body for route `main`.
fn main(prompt: &str) -> Map<String, Value> {
    let mut b = chat_body(prompt);
    b.insert("model".into(), "main".into());
    b
}

fn content(s: &Served<Bytes>) -> String {
    let v: Value = serde_json::from_slice(&s.value).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

struct Setup {
    up: TwoUpstreams,
    exec: Executor,
    client: Client,
}

async fn setup(extra: &str) -> Setup {
    let up = TwoUpstreams::start().await;
    let (exec, client) = exec_and_client(up.plan(extra), env());
    Setup { up, exec, client }
}

#[tokio::test]
async fn a_call_is_routed_keyed_and_priced() {
    let s = setup("").await;
    let served = call(&s.exec, s.client.clone(), "hello").await.unwrap();
    assert_eq!(served.model_name(), "ma");
    assert_eq!(served.route_name(), "main");
    assert_eq!((served.attempts, served.failovers), (1, 0));
    assert_eq!(content(&served), "a/up-a: hello");
    assert!(served.cost_usd > 0.0);
    assert_eq!(s.up.a.last_body().unwrap()["model"], "up-a");
    assert_eq!(
        s.up.a.last_authorization().as_deref(),
        Some(format!("Bearer {}", common::relay::A_KEY).as_str())
    );
    assert_eq!(s.up.b.total_calls(), 0);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_on_the_same_target() {
    let s = setup("").await;
    s.up.a.set_down(true);
    // The attempt service brings `a` back before the second attempt: the first gets a 503,
    // the retry is served.
    let a = std::sync::Arc::new(s.up.a);
    let (client, up_a) = (s.client.clone(), a.clone());
    let inner = tower::service_fn(move |at: Attempt| {
        if at.target.attempt() == 2 {
            up_a.set_down(false);
        }
        client.clone().oneshot(at)
    });
    let served = call(&s.exec, inner, "again").await.unwrap();
    assert_eq!(served.model_name(), "ma");
    assert_eq!((served.attempts, served.failovers), (2, 0));
    assert_eq!(served.failed.len(), 1);
    let f = &served.failed[0];
    assert!(f.failure.starts_with("503"), "{f:?}");
    assert_eq!((f.kind, f.status), (FailureKind::Response, Some(503)));
    assert_eq!(a.calls("up-a"), 2);
    assert_eq!(s.up.b.total_calls(), 0);
}

#[tokio::test]
async fn a_target_that_keeps_failing_is_failed_over() {
    let s = setup("").await;
    s.up.a.set_down(true);
    let served = call(&s.exec, s.client.clone(), "over").await.unwrap();
    assert_eq!(served.model_name(), "mb");
    assert_eq!((served.attempts, served.failovers), (3, 1));
    assert_eq!(content(&served), "b/mb: over");
    assert_eq!(s.up.a.calls("up-a"), 2, "both of a's attempts");
    assert_eq!(s.up.b.last_authorization(), None, "b has no key");
}

#[tokio::test]
async fn the_total_deadline_ends_a_call_on_slow_upstreams() {
    let up = TwoUpstreams::start().await;
    let slow = Behavior {
        latency: Duration::from_secs(3),
        ..Behavior::default()
    };
    up.a.set_default(slow.clone());
    up.b.set_default(slow);
    let toml = two_upstream_policy(&up.a.base_url(), &up.b.base_url(), "")
        .replace(r#"total = "10s""#, r#"total = "300ms""#);
    let plan: Plan = common::plan(&toml);
    let (exec, client) = exec_and_client(plan, env());
    let t0 = Instant::now();
    let e = call(&exec, client, "late").await.unwrap_err();
    assert_eq!(e.reason, StopReason::Deadline, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn a_call_over_the_budget_is_refused_before_anything_is_sent() {
    let s = setup("[budgets.tiny]\nlimit_usd = 0.000001\nwindow = \"1d\"\non_exceed = \"reject\"")
        .await;
    let e = call(&s.exec, s.client.clone(), "hi").await.unwrap_err();
    assert!(
        matches!(&e.reason, StopReason::BudgetExceeded { budget } if budget == "tiny"),
        "{e}"
    );
    assert!(e.attempts.is_empty());
    assert_eq!(s.up.a.total_calls() + s.up.b.total_calls(), 0);
}

/// `a` has one concurrency permit, one connection and a budget: after a success, a
/// failure and a call its caller dropped mid-way, nothing is held, and the next call
/// gets `a` at once.
#[tokio::test]
async fn permits_connections_and_reservations_come_back() {
    let s = setup(
        "[upstreams.a.limits]\nconcurrency = 1\n[upstreams.a.pool]\nmax_connections = 1\n\
         [budgets.day]\nlimit_usd = 100.0\nwindow = \"1d\"",
    )
    .await;
    let idle = |what: &str| {
        let st = s.exec.stats();
        let a = st.upstreams.iter().find(|u| u.name == "a").unwrap();
        assert_eq!(a.concurrency, Some((0, 1)), "{what}: a's concurrency");
        assert!(
            st.models.iter().all(|m| m.in_flight == 0),
            "{what}: in flight"
        );
        assert_eq!(st.budgets[0].reserved_usd, 0.0, "{what}: reservation");
    };
    call(&s.exec, s.client.clone(), "ok").await.unwrap();
    idle("after a success");
    // A 400: not retried, not failed over.
    let bad = Behavior {
        raw: Some((
            400,
            r#"{"error":{"message":"no","code":"invalid_request"}}"#.into(),
        )),
        ..Behavior::default()
    };
    s.up.a.set("up-a", bad);
    let e = call(&s.exec, s.client.clone(), "bad").await.unwrap_err();
    assert_eq!(e.reason, StopReason::NotRetryable, "{e}");
    idle("after a failure");
    // Slow: the caller gives up after 100 ms, dropping the call in flight.
    s.up.a.set(
        "up-a",
        Behavior {
            latency: Duration::from_secs(1),
            ..Behavior::default()
        },
    );
    let gone = tokio::time::timeout(
        Duration::from_millis(100),
        call(&s.exec, s.client.clone(), "slow"),
    )
    .await;
    assert!(gone.is_err());
    idle("after the caller left");
    s.up.a.set("up-a", Behavior::default());
    let t0 = Instant::now();
    let served = call(&s.exec, s.client.clone(), "next").await.unwrap();
    assert_eq!((served.model_name(), served.attempts), ("ma", 1));
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}
