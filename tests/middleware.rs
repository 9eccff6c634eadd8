//! `tollgate::http::TollgateMiddleware` under a `reqwest_middleware::ClientWithMiddleware`,
//! against in-process fake upstreams on 127.0.0.1.
#![cfg(feature = "reqwest-middleware")]

mod common;

use common::relay::{chat, env, exec_and_client, header, no_keys, TwoUpstreams};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::Value;
use tollgate::exec::Executor;
use tollgate::http::TollgateMiddleware;
use tollgate::server::fake::{Behavior, FakeUpstream};

struct Setup {
    a: FakeUpstream,
    b: FakeUpstream,
    exec: Executor,
    http: ClientWithMiddleware,
}

async fn setup() -> Setup {
    let up = TwoUpstreams::start().await;
    let (exec, client) = exec_and_client(up.plan(""), env());
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(TollgateMiddleware::new(exec.clone(), client))
        .build();
    let TwoUpstreams { a, b } = up;
    Setup { a, b, exec, http }
}

const URL: &str = "http://tollgate.invalid/v1/chat/completions";

#[tokio::test]
async fn requests_are_routed_keyed_retried_and_failed_over() {
    let s = setup().await;
    // Routed to a: the model rewritten, a's key sent instead of the service's.
    let r = s
        .http
        .post(URL)
        .bearer_auth("service-own-key")
        .json(&chat("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-model"), "ma");
    assert_eq!(header(&r, "x-tollgate-attempts"), "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "a/up-a: hello");
    assert_eq!(s.a.last_body().unwrap()["model"], "up-a");
    assert_eq!(
        s.a.last_authorization().as_deref(),
        Some("Bearer sk-test-123")
    );
    // a down: retried, then failed over to b, which gets no key at all.
    s.a.set_down(true);
    let r = s
        .http
        .post(URL)
        .bearer_auth("service-own-key")
        .json(&chat("again"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert_eq!(header(&r, "x-tollgate-attempts"), "3");
    assert!(r.text().await.unwrap().contains("b/mb: again"));
    assert_eq!(s.b.last_authorization(), None);
    assert_eq!(s.a.calls("up-a"), 3);
    assert!(s.exec.stats().spend_usd > 0.0);
}

#[tokio::test]
async fn an_upstream_answer_is_returned_as_is_when_the_executor_gives_up() {
    let s = setup().await;
    let bad = Behavior {
        raw: Some((
            400,
            r#"{"error":{"message":"bad","code":"invalid_request"}}"#.into(),
        )),
        ..Behavior::default()
    };
    s.a.set("up-a", bad);
    let r = s.http.post(URL).json(&chat("x")).send().await.unwrap();
    assert_eq!(r.status(), 400, "a 400 is not retried nor failed over");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(s.b.total_calls(), 0);
}

#[tokio::test]
async fn no_answer_at_all_is_an_error_with_the_executors_account() {
    let s = setup().await;
    drop((s.a, s.b)); // both upstreams gone: connect failures only
    let e = s.http.post(URL).json(&chat("x")).send().await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("tollgate: "), "{msg}");
    assert!(msg.contains("connect"), "{msg}");
    assert!(!msg.contains("sk-test-123"));
}

#[tokio::test]
async fn a_streaming_body_is_refused_before_anything_is_sent() {
    let s = setup().await;
    let body =
        reqwest::Body::wrap_stream(futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            serde_json::to_vec(&chat("x")).unwrap(),
        )]));
    let e = s.http.post(URL).body(body).send().await.unwrap_err();
    assert!(e.to_string().contains("cannot be re-sent"), "{e}");
    assert_eq!(s.a.total_calls() + s.b.total_calls(), 0);
}

#[tokio::test]
async fn max_connections_caps_the_attempts_in_flight_through_the_middleware() {
    use std::sync::atomic::Ordering::SeqCst;
    let g = common::gauge(std::time::Duration::from_millis(150)).await;
    let plan = common::plan(&common::pool_policy(&g.url, 2, "5s"));
    let (exec, client) = exec_and_client(plan, no_keys());
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(TollgateMiddleware::new(exec, client))
        .build();
    let calls = (0..6).map(|i| {
        let http = http.clone();
        tokio::spawn(async move { http.post(URL).json(&chat(&format!("n{i}"))).send().await })
    });
    for c in futures_util::future::join_all(calls).await {
        assert_eq!(c.unwrap().unwrap().status(), 200);
    }
    assert_eq!(g.max.load(SeqCst), 2);
}
