//! `tollgate::http::TollgateMiddleware` under a `reqwest_middleware::ClientWithMiddleware`,
//! against in-process fake upstreams on 127.0.0.1.
#![cfg(feature = "reqwest-middleware")]

mod common;

use std::sync::Arc;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::{json, Value};
use tollgate::exec::Executor;
use tollgate::http::{Client, TollgateMiddleware};
use tollgate::server::fake::{Behavior, FakeUpstream};

struct Setup {
    a: FakeUpstream,
    b: FakeUpstream,
    exec: Executor,
    http: ClientWithMiddleware,
}

async fn setup() -> Setup {
    let a = FakeUpstream::start("a").await.unwrap();
    let b = FakeUpstream::start("b").await.unwrap();
    let plan = common::plan(&format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "10s" }}
retry = "quick"
[upstreams.a]
base_url = "{}"
api_key = {{ env = "A_KEY" }}
[upstreams.b]
base_url = "{}"
[models.ma]
upstream = "a"
upstream_model = "up-a"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[models.mb]
upstream = "b"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[retry.quick]
max_attempts = 2
backoff = {{ kind = "constant", base = "1ms", max = "1ms", jitter = "none" }}
[[routes]]
name = "main"
targets = ["ma", "mb"]
"#,
        a.base_url(),
        b.base_url()
    ));
    let env: tollgate::http::EnvLookup =
        Arc::new(|k: &str| (k == "A_KEY").then(|| "sk-test-123".to_string()));
    let client = Client::with_env(&plan, env).unwrap();
    let exec = Executor::builder(plan).seed(1).build().unwrap();
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(TollgateMiddleware::new(exec.clone(), client))
        .build();
    Setup { a, b, exec, http }
}

fn chat(prompt: &str) -> Value {
    json!({"model": "main", "messages": [{"role": "user", "content": prompt}]})
}

const URL: &str = "http://tollgate.invalid/v1/chat/completions";

fn header<'r>(r: &'r reqwest::Response, k: &str) -> &'r str {
    r.headers()
        .get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

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
    let client = Client::with_env(&plan, Arc::new(|_: &str| None)).unwrap();
    let exec = Executor::builder(plan).seed(1).build().unwrap();
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
