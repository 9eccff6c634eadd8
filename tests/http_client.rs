//! `tollgate::http::Client` under the executor against fake upstreams on 127.0.0.1: the
//! classes a response becomes, and the upstream and route settings the client itself
//! applies (pool cap, connect timeout).

mod common;

use std::time::Duration;

use common::relay::{chat_body, exec_and_client, no_keys};
use tollgate::exec::StopReason;
use tollgate::server::fake::{Behavior, FakeUpstream};

/// Anthropic's way of saying the prompt is over the window: no `context_length_exceeded`
/// code, only a message.
const PROMPT_TOO_LONG: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
/// OpenAI's.
const OPENAI_TOO_LONG: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

/// A route over a small-window and a big-window model, on two upstreams.
fn window_policy(small: &str, big: &str, failover_on: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "5s" }}
[upstreams.s]
base_url = "{small}"
[upstreams.b]
base_url = "{big}"
[models.small]
upstream = "s"
context_window = 200_000
[models.big]
upstream = "b"
context_window = 1_000_000
[[routes]]
name = "main"
targets = ["small", "big"]
{failover_on}
"#
    )
}

#[tokio::test]
async fn a_context_length_400_fails_over_to_the_bigger_window_where_the_route_allows_it() {
    let small = FakeUpstream::start("s").await.unwrap();
    let big = FakeUpstream::start("b").await.unwrap();
    for (failover_on, body, fails_over) in [
        (r#"failover_on = ["context_length"]"#, PROMPT_TOO_LONG, true),
        (r#"failover_on = ["context_length"]"#, OPENAI_TOO_LONG, true),
        // The provider's code, named as a code, still works.
        (
            r#"failover_on = ["context_length_exceeded"]"#,
            OPENAI_TOO_LONG,
            true,
        ),
        (
            r#"failover_on = ["context_length_exceeded"]"#,
            PROMPT_TOO_LONG,
            true,
        ),
        // The default list has it.
        ("", PROMPT_TOO_LONG, true),
        // A route that does not name it stops there.
        (
            r#"failover_on = ["5xx", "connect"]"#,
            PROMPT_TOO_LONG,
            false,
        ),
    ] {
        small.set(
            "small",
            Behavior {
                raw: Some((400, body.into())),
                ..Behavior::default()
            },
        );
        let before = (small.calls("small"), big.calls("big"));
        let plan = common::plan(&window_policy(
            &small.base_url(),
            &big.base_url(),
            failover_on,
        ));
        let (exec, client) = exec_and_client(plan, no_keys());
        let got = client
            .chat_completion(&exec, &chat_body("a long prompt"))
            .await;
        let calls = (small.calls("small") - before.0, big.calls("big") - before.1);
        let case = format!("{failover_on:?} with {body}");
        assert_eq!(
            calls.0, 1,
            "{case}: the 400 is not retried on the same model"
        );
        if fails_over {
            let served = got.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(served.model_name(), "big", "{case}");
            assert_eq!(served.attempts, 2, "{case}");
            assert!(
                served.failed[0]
                    .failure
                    .starts_with("400 context_length_exceeded"),
                "{case}: {}",
                served.failed[0].failure
            );
            assert_eq!(calls.1, 1, "{case}");
        } else {
            let e = got.map(|s| s.model_name().to_string()).unwrap_err();
            assert_eq!(e.reason, StopReason::NotRetryable, "{case}");
            assert_eq!(calls.1, 0, "{case}");
        }
    }
}

/// An address whose connections never complete: a listener with a backlog of 0, never
/// accepting, its queue filled. Keep the returned values alive while it is used.
fn hanging_address() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>, String) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Fill the accept queue until a connection attempt hangs.
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err(),
        "the listener's queue should be full"
    );
    (listener, held, format!("http://{addr}/v1"))
}

#[tokio::test]
async fn connect_timeouts_reach_the_connection_attempt_from_the_route_and_the_upstream() {
    let (_l, _held, url) = hanging_address();
    let toml = format!(
        r#"
[defaults]
timeouts = {{ connect = "30s", per_try = "20s", total = "25s" }}
[upstreams.h]
base_url = "{url}"
[upstreams.quick]
base_url = "{url}"
timeouts = {{ connect = "300ms" }}
[models.mh]
upstream = "h"
[models.mq]
upstream = "quick"
[[routes]]
name = "route-connect"
when = {{ attr = "task", eq = "route" }}
targets = ["mh"]
timeouts = {{ connect = "200ms" }}
[[routes]]
name = "upstream-connect"
targets = ["mq"]
"#
    );
    let plan = common::plan(&toml);
    let (exec, client) = exec_and_client(plan, no_keys());
    for (task, route, connect) in [
        ("route", "route-connect", Duration::from_millis(200)),
        ("", "upstream-connect", Duration::from_millis(300)),
    ] {
        let mut req = tollgate::exec::Request::new();
        if !task.is_empty() {
            req = req.task(task);
        }
        let t0 = std::time::Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            client.chat_completion_for(&exec, &req, &chat_body("hi")),
        )
        .await
        .unwrap_or_else(|_| panic!("{route}: the {connect:?} connect timeout was not applied"));
        let took = t0.elapsed();
        let e = got.map(|_| ()).unwrap_err();
        assert_eq!(e.route.as_deref(), Some(route));
        let f = &e.attempts[0].failure;
        // A connection that never opened is a `connect` failure: nothing was sent.
        assert!(f.starts_with("connect"), "{route}: {f}");
        assert!(took >= connect, "{route}: {took:?}");
    }
}

#[tokio::test]
async fn max_connections_caps_the_requests_in_flight_to_an_upstream() {
    use std::sync::atomic::Ordering::SeqCst;
    for cap in [1, 2] {
        let g = common::gauge(Duration::from_millis(150)).await;
        let plan = common::plan(&common::pool_policy(&g.url, cap, "5s"));
        let (exec, client) = exec_and_client(plan, no_keys());
        let calls = (0..6).map(|i| {
            let (client, exec) = (client.clone(), exec.clone());
            tokio::spawn(async move {
                client
                    .chat_completion(&exec, &chat_body(&format!("n{i}")))
                    .await
            })
        });
        for c in futures_util::future::join_all(calls).await {
            let served = c.unwrap().expect("every call is served, waiting its turn");
            assert_eq!(served.attempts, 1);
        }
        assert_eq!(g.max.load(SeqCst), cap as usize, "max_connections = {cap}");
        assert_eq!(g.now.load(SeqCst), 0);
    }
}

#[tokio::test]
async fn a_call_waits_for_a_connection_within_its_attempt_and_a_stream_holds_one_until_dropped() {
    let fake = FakeUpstream::start("u").await.unwrap();
    fake.set(
        "m",
        Behavior {
            stall_after_chunks: Some(1),
            ..Behavior::default()
        },
    );
    let plan = common::plan(&common::pool_policy(&fake.base_url(), 1, "300ms"));
    let (exec, client) = exec_and_client(plan, no_keys());
    let req = tollgate::exec::Request::new();
    let stream = client
        .chat_completion_stream(&exec, &req, &chat_body("stream"))
        .await
        .expect("the stream's first event");
    assert_eq!(fake.calls("m"), 1);
    // The stream holds the only connection: a second call waits its attempt's 300ms, then
    // fails as a timeout without reaching the upstream.
    let t0 = std::time::Instant::now();
    let e = client
        .chat_completion(&exec, &chat_body("second"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let f = &e.attempts[0].failure;
    assert!(f.starts_with("timeout"), "{f}");
    assert!(f.contains("max_connections"), "{f}");
    assert_eq!(fake.calls("m"), 1);
    // Dropping the stream gives the connection back.
    drop(stream);
    fake.set("m", Behavior::default());
    client
        .chat_completion(&exec, &chat_body("third"))
        .await
        .expect("served once the stream is gone");
    assert_eq!(fake.calls("m"), 2);
}

#[tokio::test]
async fn the_connection_count_survives_an_update_that_keeps_max_connections() {
    let fake = FakeUpstream::start("u").await.unwrap();
    fake.set(
        "m",
        Behavior {
            stall_after_chunks: Some(1),
            ..Behavior::default()
        },
    );
    let toml = common::pool_policy(&fake.base_url(), 1, "300ms");
    let plan = common::plan(&toml);
    let (exec, client) = exec_and_client(plan, no_keys());
    let stream = client
        .chat_completion_stream(&exec, &tollgate::exec::Request::new(), &chat_body("s"))
        .await
        .expect("the stream's first event");
    // A reload that rebuilds the upstream's clients (a route now sets its own connect
    // timeout) but keeps max_connections: the stream still holds the only slot.
    let plan2 = common::plan(&toml.replace(
        r#"targets = ["m"]"#,
        "targets = [\"m\"]\ntimeouts = { connect = \"2s\" }",
    ));
    client.update(&plan2).unwrap();
    exec.swap_plan(plan2).unwrap();
    let e = client
        .chat_completion(&exec, &chat_body("second"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(e.attempts[0].failure.contains("max_connections"), "{e}");
    assert_eq!(fake.calls("m"), 1);
    drop(stream);
    // A reload that raises the cap starts a new count.
    let plan3 = common::plan(&common::pool_policy(&fake.base_url(), 2, "300ms"));
    client.update(&plan3).unwrap();
    exec.swap_plan(plan3).unwrap();
    fake.set("m", Behavior::default());
    client
        .chat_completion(&exec, &chat_body("third"))
        .await
        .unwrap();
}

#[tokio::test]
async fn max_idle_and_idle_timeout_decide_whether_a_connection_is_reused() {
    // Three calls one after another, 300ms apart: connections the upstream saw.
    for (pool, connections) in [
        ("max_connections = 4", 1),
        ("max_connections = 4, max_idle = 0", 3),
        ("max_connections = 4, idle_timeout = \"100ms\"", 3),
    ] {
        let g = common::gauge(Duration::ZERO).await;
        let toml = common::pool_policy(&g.url, 4, "5s").replace(
            "pool = { max_connections = 4 }",
            &format!("pool = {{ {pool} }}"),
        );
        let plan = common::plan(&toml);
        let (exec, client) = exec_and_client(plan, no_keys());
        for i in 0..3 {
            client
                .chat_completion(&exec, &chat_body(&format!("n{i}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            g.peers.lock().unwrap().len(),
            connections,
            "pool = {{ {pool} }}"
        );
    }
}
