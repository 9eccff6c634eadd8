//! The relay end to end on loopback: `tollgate::server` in front of in-process fake
//! upstreams with injected faults. Every test is bounded in requests and time.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::relay::{chat, env, exec_and_client, header, two_upstream_policy, TwoUpstreams};
use serde_json::{json, Value};
use tollgate::http::{Client, ClientError, KeyError};
use tollgate::plan::Plan;
use tollgate::server::fake::{Behavior, FakeUpstream};
use tollgate::server::{CallerKeys, Relay};

struct Setup {
    a: FakeUpstream,
    b: FakeUpstream,
    url: String,
    relay: Relay,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn setup_with(extra: &str, keys: Option<CallerKeys>) -> Setup {
    let up = TwoUpstreams::start().await;
    let relay = relay_for(up.plan(extra), keys);
    let TwoUpstreams { a, b } = up;
    let (url, stop) = start(relay.clone()).await;
    Setup {
        a,
        b,
        url,
        relay,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

async fn setup() -> Setup {
    setup_with("", None).await
}

fn relay_for(plan: Plan, keys: Option<CallerKeys>) -> Relay {
    let (exec, client) = exec_and_client(plan, env());
    let r = Relay::new(exec, client).max_body(64 * 1024);
    match keys {
        Some(k) => r.caller_keys(k),
        None => r,
    }
}

async fn start(relay: Relay) -> (String, tokio::sync::oneshot::Sender<()>) {
    common::relay::serve(relay).await
}

impl Setup {
    async fn post(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("an OpenAI-style JSON error body");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn plain_call_rewrites_the_model_sends_the_key_and_reports_what_served_it() {
    let s = setup().await;
    let r = s.post(&chat("hello there")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-route"), "main");
    assert_eq!(header(&r, "x-tollgate-model"), "ma");
    assert_eq!(header(&r, "x-tollgate-upstream"), "a");
    assert_eq!(header(&r, "x-tollgate-attempts"), "1");
    assert_eq!(header(&r, "x-tollgate-failovers"), "0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "a/up-a: hello there");
    assert_eq!(s.a.last_body().unwrap()["model"], "up-a");
    assert_eq!(
        s.a.last_authorization().as_deref(),
        Some("Bearer sk-test-123")
    );
    // Upstream b has no api_key: nothing is sent.
    s.a.set_down(true);
    let r = s.post(&chat("x")).await;
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert_eq!(header(&r, "x-tollgate-failovers"), "1", "one move, a → b");
    assert_eq!(s.b.last_authorization(), None);
    let st = s.relay.executor().stats();
    assert!(st.spend_usd > 0.0);
}

/// Every failure class on `a`: where the request ends up, with how many calls to `a`.
#[tokio::test]
async fn each_failure_class_retries_fails_over_or_stops_as_the_plan_says() {
    let dead = common::process::dead_url();
    struct Case {
        name: &'static str,
        behavior: Behavior,
        /// (status, model serving it or error code, calls to a)
        want: (u16, &'static str, u64),
    }
    let b = Behavior::default;
    let cases = [
        Case {
            name: "500 retried then failover",
            behavior: Behavior { fail_rate: 1.0, fail_status: 500, ..b() },
            want: (200, "mb", 2),
        },
        Case {
            name: "429 with a Retry-After over the cap fails over at once",
            behavior: Behavior { rate_limit_per_sec: Some(0), retry_after_secs: 5, ..b() },
            want: (200, "mb", 1),
        },
        Case {
            name: "non-JSON 200 is a 502 and fails over",
            behavior: Behavior { raw: Some((200, "<html>oops</html>".into())), ..b() },
            want: (200, "mb", 2),
        },
        Case {
            name: "truncated body fails over",
            behavior: Behavior { truncate: true, ..b() },
            want: (200, "mb", 2),
        },
        Case {
            name: "enormous body fails over",
            behavior: Behavior { huge: Some(17 << 20), ..b() },
            want: (200, "mb", 2),
        },
        Case {
            name: "timeout fails over",
            behavior: Behavior { latency: Duration::from_secs(5), ..b() },
            want: (200, "mb", 2),
        },
        Case {
            name: "400 is not retried and does not fail over",
            behavior: Behavior {
                raw: Some((400, r#"{"error":{"message":"bad","type":"invalid_request_error","code":"invalid_value"}}"#.into())),
                ..b()
            },
            want: (400, "upstream_rejected", 1),
        },
        Case {
            name: "400 context_length_exceeded is not retried but fails over (default failover_on)",
            behavior: Behavior {
                raw: Some((400, r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#.into())),
                ..b()
            },
            want: (200, "mb", 1),
        },
        Case {
            name: "401 from upstream is not retried",
            behavior: Behavior {
                raw: Some((401, r#"{"error":{"message":"Incorrect API key provided: sk-test-123","code":"invalid_api_key"}}"#.into())),
                ..b()
            },
            want: (401, "upstream_rejected", 1),
        },
    ];
    for c in cases {
        let s = setup().await;
        s.a.set("up-a", c.behavior.clone());
        let r = s.post(&chat("hi")).await;
        let status = r.status().as_u16();
        let got = if status == 200 {
            header(&r, "x-tollgate-model").to_string()
        } else {
            let text = r.text().await.unwrap();
            assert!(
                !text.contains("sk-test-123"),
                "{}: key leaked: {text}",
                c.name
            );
            let v: Value = serde_json::from_str(&text).unwrap();
            v["error"]["code"].as_str().unwrap().to_string()
        };
        assert_eq!(
            (status, got.as_str(), s.a.calls("up-a")),
            c.want,
            "{}",
            c.name
        );
    }
    // Connection refused: a connect failure, failover to b.
    let b_up = FakeUpstream::start("b").await.unwrap();
    let plan = common::plan(&two_upstream_policy(&dead, &b_up.base_url(), ""));
    let (url, _stop) = start(relay_for(plan, None)).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert_eq!(header(&r, "x-tollgate-failovers"), "1");
}

#[tokio::test]
async fn everything_down_is_a_clean_5xx_with_the_executors_account() {
    let s = setup().await;
    s.a.set_down(true);
    s.b.set_down(true);
    let r = s.post(&chat("hi")).await;
    assert_eq!(r.status(), 502);
    // What was tried, in the headers a served answer has.
    assert_eq!(header(&r, "x-tollgate-route"), "main");
    assert_eq!(header(&r, "x-tollgate-attempts"), "4");
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert_eq!(header(&r, "x-tollgate-upstream"), "b");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_failed");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("ma#1 503") && msg.contains("mb#2 503"),
        "{msg}"
    );
}

/// The answer when every attempt failed is the last failure's kind and status: a timeout
/// is 504, a 429 is 429.
#[tokio::test]
async fn the_last_failures_kind_and_status_decide_the_answer_when_every_target_gives_up() {
    let s = setup().await;
    let toml = two_upstream_policy(&s.a.base_url(), &s.b.base_url(), "")
        .replace(r#"per_try = "2s""#, r#"per_try = "200ms""#);
    let (url, _stop) = start(relay_for(common::plan(&toml), None)).await;
    let post = || {
        s.http
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat("hi"))
            .send()
    };
    let slow = Behavior {
        latency: Duration::from_secs(1),
        ..Behavior::default()
    };
    s.a.set_default(slow.clone());
    s.b.set_default(slow);
    let (status, code) = error_code(post().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    let limited = Behavior {
        rate_limit_per_sec: Some(0),
        retry_after_secs: 0,
        ..Behavior::default()
    };
    s.a.set_default(limited.clone());
    s.b.set_default(limited);
    let (status, code) = error_code(post().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "upstream_rate_limited"));
}

#[tokio::test]
async fn budget_spent_is_429() {
    let s = setup_with(
        r#"[budgets.tiny]
limit_usd = 0.000001
window = "1d"
on_exceed = "reject""#,
        None,
    )
    .await;
    let r = s.post(&chat("hi")).await;
    let (status, code) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "budget_exceeded"));
}

async fn read_stream(r: reqwest::Response) -> (String, Vec<Value>, bool) {
    let text = r.text().await.unwrap();
    let mut content = String::new();
    let mut events = Vec::new();
    let mut done = false;
    for ev in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = ev.trim().strip_prefix("data: ").expect(ev);
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
        events.push(v);
    }
    (content, events, done)
}

#[tokio::test]
async fn streaming_passes_events_through_and_prices_the_final_usage() {
    let s = setup().await;
    let mut body = chat("stream me please");
    body["stream"] = json!(true);
    let r = s.post(&body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let (content, events, done) = read_stream(r).await;
    assert_eq!(content, "a/up-a: stream me please");
    assert!(done);
    assert!(
        events.iter().all(|e| e.get("usage").is_none()),
        "usage chunk held back: the caller did not ask for it"
    );
    // Upstream was asked for usage; the relay priced it once the stream ended.
    assert_eq!(
        s.a.last_body().unwrap()["stream_options"]["include_usage"],
        true
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let st = s.relay.executor().stats();
    let ma = st.models.iter().find(|m| m.name == "ma").unwrap();
    assert!(ma.tokens.0 > 0 && ma.tokens.1 > 0, "{ma:?}");
    assert!(ma.spend_usd > 0.0);
    // Asked for: forwarded.
    body["stream_options"] = json!({"include_usage": true});
    let (_, events, _) = read_stream(s.post(&body).await).await;
    assert!(
        events.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn streaming_fails_over_before_the_first_byte_only() {
    let s = setup().await;
    let mut body = chat("hello");
    body["stream"] = json!(true);
    // 503 before any event: retried, then failed over.
    s.a.set_down(true);
    let r = s.post(&body).await;
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert_eq!(read_stream(r).await.0, "b/mb: hello");
    // No first event within first_byte (500ms): a timeout, failed over.
    s.a.set(
        "up-a",
        Behavior {
            latency: Duration::from_secs(3),
            ..Behavior::default()
        },
    );
    let t0 = std::time::Instant::now();
    let r = s.post(&body).await;
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // An upstream stalling after its first chunks: the caller gets an error event, no retry.
    tokio::time::sleep(Duration::from_millis(150)).await; // a's breaker (open 100ms) half-opens
    s.a.set(
        "up-a",
        Behavior {
            stall_after_chunks: Some(2),
            ..Behavior::default()
        },
    );
    let before = s.b.calls("mb");
    let t0 = std::time::Instant::now();
    let r = s.post(&body).await;
    assert_eq!(header(&r, "x-tollgate-model"), "ma");
    let (content, events, done) = read_stream(r).await;
    assert!(!done);
    assert_eq!(content, "a/up-a: ");
    assert_eq!(
        events.last().unwrap()["error"]["code"],
        "stream_idle_timeout"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(s.b.calls("mb"), before, "no failover after the first byte");
}

#[tokio::test]
async fn bad_clients_get_clean_openai_style_4xx() {
    let keys = CallerKeys::parse("team-a=tk-good").unwrap();
    let s = setup_with("", Some(keys)).await;
    let post = |body: Vec<u8>, key: Option<&str>| {
        let mut rb = s
            .http
            .post(format!("{}/v1/chat/completions", s.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send()
    };
    let ok = serde_json::to_vec(&chat("hi")).unwrap();
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no key", ok.clone(), None, 401, "missing_api_key"),
        (
            "wrong key",
            ok.clone(),
            Some("tk-bad"),
            401,
            "invalid_api_key",
        ),
        (
            "malformed JSON",
            b"{\"model\": ".to_vec(),
            Some("tk-good"),
            400,
            "invalid_json",
        ),
        (
            "not an object",
            b"[1]".to_vec(),
            Some("tk-good"),
            400,
            "invalid_request",
        ),
        (
            "no messages",
            b"{\"model\":\"main\"}".to_vec(),
            Some("tk-good"),
            400,
            "invalid_request",
        ),
        (
            "unknown model",
            serde_json::to_vec(&json!({"model": "gpt-9", "messages": []})).unwrap(),
            Some("tk-good"),
            404,
            "model_not_found",
        ),
        (
            "oversized",
            vec![b' '; 100 * 1024],
            Some("tk-good"),
            413,
            "request_too_large",
        ),
    ];
    for (name, body, key, status, code) in cases {
        let r = post(body, key).await.unwrap();
        assert_eq!(error_code(r).await, (status, code.to_string()), "{name}");
    }
    let r = post(ok, Some("tk-good")).await.unwrap();
    assert_eq!(r.status(), 200);
    // Model names, route names and `auto` are all accepted.
    for m in ["ma", "auto", "main"] {
        let body =
            serde_json::to_vec(&json!({"model": m, "messages": [{"role":"user","content":"x"}]}))
                .unwrap();
        assert_eq!(
            post(body, Some("tk-good")).await.unwrap().status(),
            200,
            "{m}"
        );
    }
}

#[tokio::test]
async fn models_health_status_and_metrics() {
    let s = setup().await;
    s.post(&chat("one")).await;
    s.a.set_down(true);
    s.post(&chat("two")).await;
    let get = |p: &str| s.http.get(format!("{}{p}", s.url)).send();
    let v: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["main", "ma", "mb"]);
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
    let st: Value = get("/status").await.unwrap().json().await.unwrap();
    assert_eq!(st["plan_version"], 1);
    assert_eq!(st["stats"]["routes"][0]["requests"], 2);
    assert_eq!(
        st["stats"]["routes"][0]["failovers"], 1,
        "as the headers said"
    );
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        r#"tollgate_requests_total{route="main",model="ma",upstream="a",outcome="ok"} 1"#,
        r#"tollgate_requests_total{route="main",model="mb",upstream="b",outcome="ok"} 1"#,
        r#"tollgate_attempts_total{upstream="a",model="ma",outcome="503"} 2"#,
        r#"tollgate_retries_total{route="main"} 2"#,
        r#"tollgate_attempt_duration_seconds_count{upstream="a"} 3"#,
        "tollgate_plan_reloads_total 0",
    ] {
        assert!(m.contains(line), "missing {line}\n{m}");
    }
    assert!(m.contains("tollgate_spend_usd{model=\"ma\"}"));
    let r = get("/nope").await.unwrap();
    assert_eq!(error_code(r).await.0, 404);
}

#[tokio::test]
async fn apply_plan_swaps_plans_and_keeps_the_old_one_on_key_errors() {
    let s = setup().await;
    let plan2 = common::plan(&two_upstream_policy(&s.b.base_url(), &s.b.base_url(), ""));
    assert_eq!(s.relay.apply_plan(plan2).unwrap(), 2);
    let r = s.post(&chat("x")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "b/up-a: x");
    // A plan naming a key that is unset is refused; version 2 keeps serving.
    let bad = common::plan(
        &two_upstream_policy(&s.a.base_url(), &s.b.base_url(), "").replace("A_KEY", "NOT_SET_KEY"),
    );
    assert!(s.relay.apply_plan(bad).is_err());
    assert_eq!(s.relay.executor().stats().plan_version, 2);
}

#[test]
fn keys_are_checked_at_start_up_and_never_shown() {
    let plan = common::plan(&two_upstream_policy(
        "http://127.0.0.1:1/v1",
        "http://127.0.0.1:1/v1",
        "",
    ));
    let err = Client::with_env(&plan, Arc::new(|_: &str| None)).unwrap_err();
    assert!(matches!(&err, ClientError::Keys(k) if matches!(k[0], KeyError::Unset { .. })));
    assert!(err.to_string().contains("A_KEY"));
    let err =
        Client::with_env(&plan, Arc::new(|_: &str| Some("pk-live-secret".into()))).unwrap_err();
    assert!(err.to_string().contains("`sk-`"));
    assert!(!err.to_string().contains("pk-live-secret"));
    assert!(!format!("{err:?}").contains("pk-live-secret"));
}

/// 5,000 requests, 64 at a time; upstream `a` dies a quarter of the way in and comes
/// back at three quarters. Nothing is lost, and upstream calls stay within the retry
/// budget's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_an_upstream_dying_mid_run_loses_nothing() {
    const N: usize = 5_000;
    const C: usize = 64;
    let s = Arc::new(
        setup_with(
            r#"[retry.quick.budget]
ratio = 0.2
min_per_second = 10"#,
            None,
        )
        .await,
    );
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..C {
        let s = s.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut out: HashMap<u16, usize> = HashMap::new();
            loop {
                let i = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= N {
                    break;
                }
                if i == N / 4 {
                    s.a.set_down(true);
                }
                if i == 3 * N / 4 {
                    s.a.set_down(false);
                }
                let r = s.post(&chat(&format!("req {i}"))).await;
                let status = r.status().as_u16();
                if status == 200 {
                    let v: Value = r.json().await.unwrap();
                    let c = v["choices"][0]["message"]["content"].as_str().unwrap();
                    assert!(c.ends_with(&format!(": req {i}")), "{c}");
                }
                *out.entry(status).or_default() += 1;
            }
            out
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *by_status.entry(k).or_default() += v;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(by_status.get(&200), Some(&N), "{by_status:?}");
    let calls = s.a.total_calls() + s.b.total_calls();
    let bound = N as f64 * 1.2 + 10.0 * (secs + 10.0);
    assert!(
        (calls as f64) <= bound,
        "{calls} upstream calls for {N} requests in {secs:.1}s: over the budget bound {bound:.0}"
    );
    assert!(s.a.calls("up-a") > 0 && s.b.calls("mb") > 0);
    assert!(secs < 60.0, "{secs}");
}

/// `[callers]` for [`two_upstream_policy`]'s `extra`: team-a and team-b (keys `team-a-key`,
/// `team-b-key`, stored hashed), each with a budget of its own; team-b's is spent at once.
fn callers_policy(extra_callers: &str) -> String {
    let h = tollgate::server::hash_key_hex;
    format!(
        r#"[callers.team-a]
key_sha256 = "{}"
[callers.team-b]
key_sha256 = "{}"
{extra_callers}
[budgets.team-a-daily]
limit_usd = 1.0
window = "1d"
scope = {{ keys = ["team-a"] }}
[budgets.team-b-daily]
limit_usd = 0.000001
window = "1d"
scope = {{ keys = ["team-b"] }}
"#,
        h("team-a-key"),
        h("team-b-key")
    )
}

#[tokio::test]
async fn policy_callers_are_authenticated_charged_to_their_own_budget_and_reloaded() {
    let env_keys = CallerKeys::parse("ops=ops-key").unwrap();
    let s = setup_with(&callers_policy(""), Some(env_keys)).await;
    let post = |key: Option<&str>| {
        let mut rb = s
            .http
            .post(format!("{}/v1/chat/completions", s.url))
            .json(&chat("hi"));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send()
    };
    let budget = |name: &str| {
        let st = s.relay.executor().stats();
        let b = st.budgets.iter().find(|b| b.name == name).unwrap();
        b.spent_usd + b.reserved_usd
    };
    // No key, an unknown key, and the hash itself presented as a key: 401, OpenAI-style.
    let hash = tollgate::server::hash_key_hex("team-a-key");
    for (key, code) in [
        (None, "missing_api_key"),
        (Some("nope"), "invalid_api_key"),
        (Some(hash.as_str()), "invalid_api_key"),
    ] {
        let r = post(key).await.unwrap();
        assert_eq!(error_code(r).await, (401, code.to_string()), "{key:?}");
    }
    // team-a: served, and charged to its budget only.
    let r = post(Some("team-a-key")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(budget("team-a-daily") > 0.0);
    assert_eq!(budget("team-b-daily"), 0.0);
    // team-b's own budget is spent: refused as documented, while team-a and ops go on.
    let r = post(Some("team-b-key")).await.unwrap();
    assert_eq!(error_code(r).await, (429, "budget_exceeded".to_string()));
    assert_eq!(post(Some("team-a-key")).await.unwrap().status(), 200);
    assert_eq!(post(Some("ops-key")).await.unwrap().status(), 200);
    // Reload: team-c is added and admitted at once.
    let url = |u: &FakeUpstream| u.base_url();
    let with_c = format!(
        "[callers.team-c]\nkey_sha256 = \"{}\"",
        tollgate::server::hash_key_hex("team-c-key")
    );
    let p2 = two_upstream_policy(&url(&s.a), &url(&s.b), &callers_policy(&with_c));
    assert_eq!(
        error_code(post(Some("team-c-key")).await.unwrap()).await.0,
        401
    );
    assert_eq!(s.relay.apply_plan(common::plan(&p2)).unwrap(), 2);
    assert_eq!(post(Some("team-c-key")).await.unwrap().status(), 200);
    let p3 = p2
        .replace("[callers.team-b]", "[callers.team-b-gone]")
        .replace("keys = [\"team-b\"]", "keys = [\"team-b-gone\"]");
    s.relay.apply_plan(common::plan(&p3)).unwrap();
    let r = post(Some("team-b-key")).await.unwrap();
    assert_eq!(
        error_code(r).await,
        (429, "budget_exceeded".to_string()),
        "renamed: its key, its (spent) budget"
    );
    // Removed: its key stops working.
    let team_b = format!(
        "[callers.team-b-gone]\nkey_sha256 = \"{}\"\n",
        tollgate::server::hash_key_hex("team-b-key")
    );
    assert!(p3.contains(&team_b));
    let p3b = p3
        .replace(&team_b, "")
        .replace("[\"team-b-gone\"]", "[\"team-c\"]");
    assert_eq!(s.relay.apply_plan(common::plan(&p3b)).unwrap(), 4);
    let r = post(Some("team-b-key")).await.unwrap();
    assert_eq!(error_code(r).await, (401, "invalid_api_key".to_string()));
    // A caller of the policy that also has a key in the relay's list: refused, plan kept.
    let clash = format!(
        "[callers.ops]\nkey_sha256 = \"{}\"",
        tollgate::server::hash_key_hex("other-ops-key")
    );
    let p4 = two_upstream_policy(&url(&s.a), &url(&s.b), &callers_policy(&clash));
    let e = s.relay.apply_plan(common::plan(&p4)).unwrap_err();
    assert!(e.to_string().contains("caller `ops`"), "{e}");
    assert_eq!(s.relay.executor().stats().plan_version, 4);
    // The same key under another name in the policy: refused too.
    let same = format!(
        "[callers.ops2]\nkey_sha256 = \"{}\"",
        tollgate::server::hash_key_hex("ops-key")
    );
    let p5 = two_upstream_policy(&url(&s.a), &url(&s.b), &callers_policy(&same));
    assert!(s.relay.apply_plan(common::plan(&p5)).is_err());
    assert_eq!(post(Some("ops-key")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn streams_breaking_mid_way_count_as_failures_and_open_the_breaker() {
    let s = setup().await;
    let mut body = chat("one two three four five six");
    body["stream"] = json!(true);
    let breaking = Behavior {
        truncate: true,
        ..Behavior::default()
    };
    let stats = |s: &Setup| {
        let st = s.relay.executor().stats();
        let a = st.upstreams.iter().find(|u| u.name == "a").unwrap();
        let ma = st.models.iter().find(|m| m.name == "ma").unwrap();
        (
            a.breaker.as_ref().unwrap().state,
            a.breaker.as_ref().unwrap().consecutive_failures,
            ma.failures,
        )
    };
    s.a.set("up-a", breaking.clone());
    broken_stream(&s, &body).await;
    broken_stream(&s, &body).await;
    assert_eq!(stats(&s), ("closed", 2, 2));
    // A stream that ends well ends the run of failures (its success was provisional).
    s.a.set("up-a", Behavior::default());
    let r = s.post(&body).await;
    assert!(read_stream(r).await.2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(stats(&s), ("closed", 0, 2));
    // Three in a row (the breaker's consecutive_failures) open it: the next stream fails
    // over to b before its first byte.
    s.a.set("up-a", breaking);
    for _ in 0..3 {
        broken_stream(&s, &body).await;
    }
    assert_eq!(stats(&s).0, "open");
    assert_eq!(stats(&s).2, 5);
    let before = s.a.calls("up-a");
    let r = s.post(&body).await;
    assert_eq!(header(&r, "x-tollgate-model"), "mb");
    assert!(read_stream(r).await.2);
    assert_eq!(s.a.calls("up-a"), before, "a is not called while open");
}

/// One stream that breaks mid-way: the caller gets the error event; no retry.
async fn broken_stream(s: &Setup, body: &Value) {
    let r = s.post(body).await;
    assert_eq!(header(&r, "x-tollgate-model"), "ma");
    let (_, events, done) = read_stream(r).await;
    assert!(!done);
    assert_eq!(
        events.last().unwrap()["error"]["code"],
        "upstream_stream_interrupted"
    );
    // The relay settles the account when it drops the stream: give it a moment.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// A stream ends by its attempt's time (the per-try timeout, cut by the request's total
/// deadline), however steadily the upstream keeps sending: the deadline holds for
/// streams too, and the caller gets an error event, not a silent cut.
#[tokio::test]
async fn a_stream_that_runs_past_its_attempts_time_is_cut_there() {
    let s = setup().await;
    // 40 words, a chunk each every 250 ms (under the 300 ms idle timeout): 10 s of stream
    // against a per-try timeout of 2 s.
    s.a.set_default(Behavior {
        chunk_delay: Duration::from_millis(250),
        ..Behavior::default()
    });
    let mut body = chat(&["word"; 40].join(" "));
    body["stream"] = json!(true);
    let t0 = std::time::Instant::now();
    let r = s.post(&body).await;
    assert_eq!(r.status(), 200);
    let (_, events, done) = read_stream(r).await;
    let took = t0.elapsed();
    assert!(!done, "cut before [DONE]");
    assert!(
        took < Duration::from_millis(2_500),
        "the stream ran {took:?}, past its attempt's 2 s"
    );
    let last = events.last().unwrap();
    assert_eq!(
        last["error"]["code"], "stream_timeout",
        "an error event ends it: {last}"
    );
}
