//! The relay's other OpenAI endpoints: `/v1/embeddings` (priced by input tokens, under the
//! same budgets and failover) and `/v1/completions` (the legacy text completions), against
//! two in-process fake upstreams; anything else is a 404 in the OpenAI format.

mod common;

use common::relay::{exec_and_client, header, no_keys};
use serde_json::{json, Value};
use tollgate::server::fake::FakeUpstream;
use tollgate::server::Relay;

fn policy(a: &str, b: &str, budget: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "5s" }}
[upstreams.a]
base_url = "{a}"
[upstreams.b]
base_url = "{b}"
[models.embed-a]
upstream = "a"
price = {{ input_per_mtok = 1000.0, output_per_mtok = 0.0 }}
[models.embed-b]
upstream = "b"
price = {{ input_per_mtok = 1000.0, output_per_mtok = 0.0 }}
[[routes]]
name = "embed"
targets = ["embed-a", "embed-b"]
{budget}
"#
    )
}

struct Setup {
    a: FakeUpstream,
    _b: FakeUpstream,
    url: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn setup(budget: &str) -> Setup {
    let a = FakeUpstream::start("a").await.unwrap();
    let b = FakeUpstream::start("b").await.unwrap();
    let plan = common::plan(&policy(&a.base_url(), &b.base_url(), budget));
    let (exec, client) = exec_and_client(plan, no_keys());
    let (url, tx) = common::relay::serve(Relay::new(exec, client)).await;
    Setup {
        a,
        _b: b,
        url,
        http: reqwest::Client::new(),
        _stop: tx,
    }
}

impl Setup {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        let url = format!("{}{path}", self.url);
        self.http.post(url).json(&body).send().await.unwrap()
    }
}

#[tokio::test]
async fn embeddings_are_priced_by_input_tokens_and_fail_over() {
    let s = setup("").await;
    // 40 characters of input: 10 tokens at $1,000 per million = $0.01.
    let input = "a".repeat(40);
    let r = s
        .post("/v1/embeddings", json!({"model": "embed", "input": input}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-upstream"), "a");
    let cost: f64 = header(&r, "x-tollgate-cost-usd").parse().unwrap();
    assert!((cost - 0.01).abs() < 1e-9, "cost {cost}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(
        s.a.last_body().unwrap()["model"],
        "embed-a",
        "the upstream model is sent"
    );
    s.a.set_down(true);
    let r = s
        .post(
            "/v1/embeddings",
            json!({"model": "embed", "input": ["one", "two"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-upstream"), "b", "failed over");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_spent_budget_refuses_embeddings_too() {
    // $0.015: the first call ($0.01) fits, the second's worst case does not.
    let s = setup("[budgets.tiny]\nlimit_usd = 0.015\nwindow = \"1h\"\n").await;
    let input = "a".repeat(40);
    let r = s
        .post("/v1/embeddings", json!({"model": "embed", "input": input}))
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .post("/v1/embeddings", json!({"model": "embed", "input": input}))
        .await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded");
}

#[tokio::test]
async fn legacy_completions_pass_through_and_bad_shapes_are_400() {
    let s = setup("").await;
    let r = s
        .post(
            "/v1/completions",
            json!({"model": "embed", "prompt": "say hi", "max_tokens": 5}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].as_str().unwrap().contains("say hi"));
    for (path, body, want) in [
        ("/v1/embeddings", json!({"model": "embed"}), "`input`"),
        (
            "/v1/completions",
            json!({"model": "embed", "prompt": 3}),
            "`prompt`",
        ),
        (
            "/v1/embeddings",
            json!({"model": "embed", "input": "x", "stream": true}),
            "stream",
        ),
    ] {
        let r = s.post(path, body).await;
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{v}"
        );
    }
    let r = s.post("/v1/images/generations", json!({})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}
