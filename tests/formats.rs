//! Upstreams of other wire formats behind the relay: an OpenAI-format caller reaches the
//! strict fake Anthropic and Gemini upstreams (plain and streamed, usage priced), fails
//! over from an overloaded Anthropic upstream to a Gemini one with budgets adding up over
//! both, an Anthropic-format caller is served on `/v1/messages` by either, and bad input
//! (a stream cut mid-event, an HTML error body, malformed tool arguments, an oversized
//! request) gets a clear error in the caller's format with every permit returned.

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate::exec::Executor;
use tollgate::http::{Client, EnvLookup};
use tollgate::server::fake::anthropic::{AnthropicBehavior, FakeAnthropic};
use tollgate::server::fake::gemini::{FakeGemini, GeminiBehavior};
use tollgate::server::Relay;

mod common;

use common::relay::{header, serve};

const KEY: &str = "provider-test-key";

fn policy(anthropic: &str, gemini: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "3s", total = "10s" }}
retry = "once"
[upstreams.claude]
base_url = "{anthropic}"
api = "anthropic"
api_key = {{ env = "PROVIDER_KEY" }}
[upstreams.google]
base_url = "{gemini}"
api = "gemini"
api_key = {{ env = "PROVIDER_KEY" }}
[models.sonnet]
upstream = "claude"
upstream_model = "claude-sonnet-4-5"
max_tokens = 512
price = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}
[models.flash]
upstream = "google"
upstream_model = "gemini-2.5-flash"
price = {{ input_per_mtok = 0.3, output_per_mtok = 2.5 }}
[retry.once]
max_attempts = 1
[budgets.all]
limit_usd = 100.0
window = "1d"
[[routes]]
name = "gemini"
when = {{ attr = "model", eq = "gemini" }}
targets = ["flash"]
streaming = {{ first_byte = "2s", idle_chunk = "2s" }}
[[routes]]
name = "main"
targets = ["sonnet", "flash"]
streaming = {{ first_byte = "2s", idle_chunk = "2s" }}
"#
    )
}

fn keys() -> EnvLookup {
    Arc::new(|k: &str| (k == "PROVIDER_KEY").then(|| KEY.to_string()))
}

struct Setup {
    anthropic: FakeAnthropic,
    gemini: FakeGemini,
    exec: Executor,
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn setup() -> Setup {
    let anthropic = FakeAnthropic::start().await.unwrap();
    anthropic.expect_key(KEY);
    let gemini = FakeGemini::start().await.unwrap();
    let plan = common::plan(&policy(&anthropic.base_url(), &gemini.base_url()));
    let client = Client::with_env(&plan, keys()).unwrap();
    let exec = Executor::builder(plan).seed(1).build().unwrap();
    let (url, stop) = serve(Relay::new(exec.clone(), client)).await;
    Setup {
        anthropic,
        gemini,
        exec,
        url,
        _stop: stop,
    }
}

impl Setup {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The strict fakes saw only what their APIs accept: neither sent a 400.
    fn assert_no_rejections(&self) {
        let (a, g) = (self.anthropic.rejections(), self.gemini.rejections());
        assert!(
            a.is_empty() && g.is_empty(),
            "anthropic {a:?}, gemini {g:?}"
        );
    }

    /// No call in flight and no budget reservation left: every permit came back.
    fn assert_settled(&self) {
        let st = self.exec.stats();
        assert!(
            st.models.iter().all(|m| m.in_flight == 0),
            "{:?}",
            st.models
        );
        assert!(
            st.budgets.iter().all(|b| b.reserved_usd == 0.0),
            "{:?}",
            st.budgets
        );
    }
}

fn chat(route: &str, text: &str) -> Value {
    json!({"model": route, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": text}]})
}

/// The text of an OpenAI SSE body, and whether it ended with `[DONE]`.
fn stream_text(body: &str) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    (text, done)
}

#[tokio::test]
async fn an_openai_caller_is_served_by_anthropic_and_gemini_plain_and_streamed() {
    let s = setup().await;
    for (route, prefix) in [
        ("main", "anthropic/claude-sonnet-4-5"),
        ("gemini", "gemini/gemini-2.5-flash"),
    ] {
        let r = s.post("/v1/chat/completions", &chat(route, "hello")).await;
        assert_eq!(r.status(), 200, "{route}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            format!("{prefix}: hello")
        );
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
        let mut body = chat(route, "streamed");
        body["stream"] = json!(true);
        let r = s.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 200);
        let (text, done) = stream_text(&r.text().await.unwrap());
        assert_eq!(text, format!("{prefix}: streamed"));
        assert!(done, "the stream ends with [DONE]");
    }
    assert_eq!(
        s.gemini.last_api_key().as_deref(),
        Some(KEY),
        "x-goog-api-key"
    );
    s.assert_no_rejections();
    let st = s.exec.stats();
    let spent = |m: &str| st.models.iter().find(|x| x.name == m).unwrap().spend_usd;
    assert!(
        spent("sonnet") > 0.0 && spent("flash") > 0.0,
        "usage priced: {:?}",
        st.models
    );
    s.assert_settled();
}

#[tokio::test]
async fn an_overloaded_anthropic_upstream_fails_over_to_gemini_and_the_budget_counts_both() {
    let s = setup().await;
    s.anthropic.set(AnthropicBehavior {
        overloaded_share: 0.5,
        ..AnthropicBehavior::default()
    });
    let mut failovers = 0;
    for i in 0..40 {
        let r = s
            .post("/v1/chat/completions", &chat("main", &format!("q{i}")))
            .await;
        assert_eq!(r.status(), 200, "request {i}");
        if header(&r, "x-tollgate-model") == "flash" {
            failovers += 1;
            assert_eq!(header(&r, "x-tollgate-failovers"), "1");
        }
    }
    assert!(
        (5..35).contains(&failovers),
        "{failovers} of 40 failed over"
    );
    let st = s.exec.stats();
    let models: f64 = st.models.iter().map(|m| m.spend_usd).sum();
    let budget = st.budgets.iter().find(|b| b.name == "all").unwrap();
    assert!(
        (budget.spent_usd - models).abs() < 1e-9 && (st.spend_usd - models).abs() < 1e-9,
        "budget {budget:?}, models {models}, total {}",
        st.spend_usd
    );
    s.assert_settled();
}

#[tokio::test]
async fn an_anthropic_caller_is_served_on_v1_messages_by_either_format() {
    let s = setup().await;
    for (route, prefix) in [
        ("main", "anthropic/claude-sonnet-4-5"),
        ("gemini", "gemini/gemini-2.5-flash"),
    ] {
        let body = json!({"model": route, "max_tokens": 100, "system": "Be brief.",
                          "messages": [{"role": "user", "content": "hi"}]});
        let r = s.post("/v1/messages", &body).await;
        assert_eq!(r.status(), 200, "{route}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "message", "{v}");
        assert_eq!(v["content"][0]["text"], format!("{prefix}: hi"), "{v}");
        assert_eq!(v["stop_reason"], "end_turn", "{v}");
        assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0, "{v}");
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let text = s
            .post("/v1/messages", &streamed)
            .await
            .text()
            .await
            .unwrap();
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(events.first(), Some(&"message_start"), "{text}");
        assert_eq!(events.last(), Some(&"message_stop"), "{text}");
        let said: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["delta"]["text"].as_str().map(String::from))
            .collect();
        assert_eq!(said, format!("{prefix}: hi"), "{text}");
    }
    // Errors in Anthropic's format.
    let r = s
        .post("/v1/messages", &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error")),
        "{v}"
    );
    let r = s.post("/v1/messages/count_tokens", &json!({})).await;
    assert_eq!(r.status(), 404);
    s.assert_settled();
}

#[tokio::test]
async fn bad_answers_and_bad_requests_get_clear_errors_and_return_every_permit() {
    let s = setup().await;
    // A stream cut mid-way by the Anthropic upstream: the caller sees an error event.
    s.anthropic.set(AnthropicBehavior {
        cut_stream: true,
        ..AnthropicBehavior::default()
    });
    let mut body = chat("main", "cut me");
    body["stream"] = json!(true);
    let text = s
        .post("/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"error\""), "the cut is reported: {text}");
    assert!(
        !text.lines().any(|l| l == "data: [DONE]"),
        "a cut stream does not claim to be done: {text}"
    );
    // An HTML error page from Gemini still gets a class: a 5xx, failed over or reported.
    s.gemini.set(GeminiBehavior {
        html_error: Some(502),
        ..GeminiBehavior::default()
    });
    let r = s
        .post("/v1/chat/completions", &chat("gemini", "html"))
        .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("502"),
        "{v}"
    );
    // A tool call whose arguments are not JSON: a 400 for the caller, not sent upstream.
    let calls = s.anthropic.calls();
    let body = json!({"model": "main", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"}]});
    let r = s.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());
    assert_eq!(s.anthropic.calls(), calls, "nothing was sent");
    // An oversized request on /v1/messages: 413 in Anthropic's format.
    let huge = "x".repeat(5 << 20);
    let r = s
        .post("/v1/messages", &json!({"model": "main", "max_tokens": 5, "messages": [{"role": "user", "content": huge}]}))
        .await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    s.assert_settled();
}

/// Tools across formats: the definitions reach each provider in its shape, the model's call
/// comes back as OpenAI `tool_calls` (plain and streamed), and the conversation that
/// answers it (an assistant `tool_calls` message and a `tool` result) is accepted by the
/// strict fakes on the next turn.
#[tokio::test]
async fn tool_calls_round_trip_through_anthropic_and_gemini() {
    let s = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "search", "description": "Search",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]);
    for route in ["main", "gemini"] {
        let ask = json!({"model": route, "tools": tools,
                         "messages": [{"role": "user", "content": "please use tool now"}]});
        let r = s.post("/v1/chat/completions", &ask).await;
        assert_eq!(r.status(), 200, "{route}");
        let v: Value = r.json().await.unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{route}: {v}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "search", "{v}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["q"], "please use tool now", "{v}");
        // Streamed: the call arrives in `delta.tool_calls`.
        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let text = s
            .post("/v1/chat/completions", &streamed)
            .await
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("\"tool_calls\"") && text.contains("search"),
            "{route}: {text}"
        );
        // The next turn carries the call and its result.
        let next = json!({"model": route, "tools": tools, "messages": [
            {"role": "user", "content": "please use tool now"},
            choice["message"].clone(),
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"hits\": 3}"},
            {"role": "user", "content": "thanks"}]});
        let r = s.post("/v1/chat/completions", &next).await;
        assert_eq!(r.status(), 200, "{route}: {}", r.text().await.unwrap());
    }
    s.assert_no_rejections();
    // The key and the version header went as Anthropic's API wants them.
    let h = s.anthropic.last_headers().unwrap();
    assert_eq!(h.get("x-api-key").unwrap(), KEY);
    assert_eq!(h.get("anthropic-version").unwrap(), "2023-06-01");
    assert!(h.get("authorization").is_none());
    s.assert_settled();
}
