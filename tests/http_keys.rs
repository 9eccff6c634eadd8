//! Several API keys per upstream (`api_keys`): calls spread over the keys, a key answered
//! with 429 rests while the others carry the calls (the attempt moves to another key before
//! it counts as the upstream's failure), a key answered with 401/403 leaves the rotation,
//! and every key's state is visible by its variable's name — against an in-process fake
//! upstream that refuses chosen keys.

mod common;

use std::sync::Arc;

use serde_json::json;
use tollgate::exec::Executor;
use tollgate::http::Client;
use tollgate::server::fake::FakeUpstream;

const K1: &str = "sk-one-111";
const K2: &str = "sk-two-222";
const K3: &str = "sk-three-333";

fn policy(url: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "5s" }}
[upstreams.up]
base_url = "{url}"
api_keys = [{{ env = "K1" }}, {{ env = "K2", prefixes = ["sk-"] }}, {{ env = "K3" }}]
[upstreams.up.limits]
requests_per_second = 1000
[models.m]
upstream = "up"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[retry.once]
max_attempts = 1
[[routes]]
name = "main"
targets = ["m"]
retry = "once"
"#
    )
}

async fn setup() -> (FakeUpstream, Executor, Client) {
    let fake = FakeUpstream::start("up").await.unwrap();
    let plan = common::plan(&policy(&fake.base_url()));
    let env = Arc::new(|k: &str| match k {
        "K1" => Some(K1.to_string()),
        "K2" => Some(K2.to_string()),
        "K3" => Some(K3.to_string()),
        _ => None,
    });
    let client = Client::with_env(&plan, env).unwrap();
    (fake, Executor::new(plan).unwrap(), client)
}

fn body() -> serde_json::Map<String, serde_json::Value> {
    json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]})
        .as_object()
        .unwrap()
        .clone()
}

fn states(client: &Client) -> Vec<(String, &'static str)> {
    client
        .key_states("up")
        .into_iter()
        .map(|k| (k.env, k.state))
        .collect()
}

#[tokio::test]
async fn calls_spread_over_the_keys() {
    let (fake, exec, client) = setup().await;
    for _ in 0..9 {
        client.chat_completion(&exec, &body()).await.unwrap();
    }
    let counts = [K1, K2, K3].map(|k| fake.calls_with_key(k));
    assert_eq!(counts, [3, 3, 3], "round-robin over three keys");
}

#[tokio::test]
async fn a_429_moves_the_attempt_to_another_key_and_rests_the_key() {
    let (fake, exec, client) = setup().await;
    fake.answer_key(K1, Some(429));
    for _ in 0..6 {
        let served = client.chat_completion(&exec, &body()).await.unwrap();
        assert_eq!(
            served.attempts, 1,
            "the key's 429 is not the upstream's failure"
        );
    }
    assert_eq!(
        fake.calls_with_key(K1),
        1,
        "K1 rests after its 429 (retry-after 30 s)"
    );
    assert_eq!(fake.calls_with_key(K2) + fake.calls_with_key(K3), 6);
    let st = states(&client);
    assert_eq!(st[0], ("K1".to_string(), "resting"));
    assert_eq!(st[1].1, "active");
}

#[tokio::test]
async fn a_401_takes_the_key_out_of_rotation_and_the_last_refusal_fails_the_call() {
    let (fake, exec, client) = setup().await;
    fake.answer_key(K2, Some(401));
    for _ in 0..6 {
        client.chat_completion(&exec, &body()).await.unwrap();
    }
    assert_eq!(
        fake.calls_with_key(K2),
        1,
        "refused once, then never used again"
    );
    assert_eq!(states(&client)[1], ("K2".to_string(), "revoked"));
    fake.answer_key(K1, Some(403));
    fake.answer_key(K3, Some(401));
    let err = client.chat_completion(&exec, &body()).await.unwrap_err();
    let text = format!("{err}");
    assert!(!text.contains("sk-"), "no key in the error: {text}");
    let all: Vec<&str> = states(&client).iter().map(|s| s.1).collect();
    assert_eq!(all, ["revoked", "revoked", "revoked"]);
    let sent = fake.total_calls();
    let again = client.chat_completion(&exec, &body()).await.unwrap_err();
    assert!(
        format!("{again:?}").contains("none left in rotation"),
        "with every key revoked the call fails without being sent: {again:?}"
    );
    assert_eq!(fake.total_calls(), sent, "nothing was sent");
}

#[tokio::test]
async fn the_policy_rejects_both_forms_an_empty_list_and_a_variable_twice() {
    for (keys, code) in [
        (
            "api_key = { env = \"K1\" }\napi_keys = [{ env = \"K2\" }]",
            "conflicting-keys",
        ),
        ("api_keys = []", "invalid-value"),
        (
            "api_keys = [{ env = \"K1\" }, { env = \"K1\" }]",
            "invalid-value",
        ),
    ] {
        let toml = format!(
            "[upstreams.up]\nbase_url = \"http://127.0.0.1:1/v1\"\n{keys}\n[models.m]\nupstream = \"up\"\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n"
        );
        let opts = tollgate::policy::LoadOptions::from_text("p.toml", toml).with_env(Vec::<(
            String,
            String,
        )>::new(
        ));
        let d = tollgate::plan::Plan::load(&opts).unwrap_err();
        let rendered = d.render(false);
        assert!(rendered.contains(code), "{keys}: {rendered}");
    }
}

#[tokio::test]
async fn the_relay_shows_each_key_by_its_variable_in_status_and_metrics() {
    let (fake, exec, client) = setup().await;
    fake.answer_key(K3, Some(401));
    let relay = tollgate::server::Relay::new(exec, client);
    let (url, tx) = common::relay::serve(relay).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .post(format!("{url}/v1/chat/completions"))
            .json(&serde_json::Value::Object(body()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let status: serde_json::Value = http
        .get(format!("{url}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["keys"]["up"],
        json!([
            {"env": "K1", "state": "active"},
            {"env": "K2", "state": "active"},
            {"env": "K3", "state": "revoked"}
        ])
    );
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics
        .contains(r#"tollgate_upstream_key_state{upstream="up",key_env="K3",state="revoked"} 1"#));
    for text in [status.to_string(), metrics] {
        assert!(!text.contains("sk-"), "a key value leaked");
    }
    let _ = tx.send(());
}

#[test]
fn a_literal_key_in_api_keys_is_never_echoed() {
    for toml in [
        "[upstreams.up]\nbase_url = \"https://x.example/v1\"\napi_keys = [\"sk-literal-secret-123\", { env = \"K\" }]\n[models.m]\nupstream = \"up\"\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n",
        "[upstreams.up]\nbase_url = \"https://x.example/v1\"\n[[upstreams.up.api_keys]]\nenv = \"K\"\nkey = \"sk-literal-secret-123\"\n[models.m]\nupstream = \"up\"\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\n",
    ] {
        let opts = tollgate::policy::LoadOptions::from_text("p.toml", toml)
            .with_env(Vec::<(String, String)>::new());
        let d = tollgate::plan::Plan::load(&opts).unwrap_err();
        for text in [d.render(false), format!("{d:?}")] {
            assert!(!text.contains("sk-literal"), "{text}");
        }
    }
}

/// The headroom of the upstream's request-rate limiter after one call whose answer says
/// `x-ratelimit-remaining-requests: 0`, for a policy with `keys` (`api_key` or `api_keys`).
async fn headroom_after_an_exhausted_window(keys: &str) -> u32 {
    let fake = FakeUpstream::start("up").await.unwrap();
    fake.set_default(tollgate::server::fake::Behavior {
        rate_limit_per_sec: Some(1),
        rate_limit_headers: true,
        ..Default::default()
    });
    let toml = format!(
        "[upstreams.up]\nbase_url = \"{}\"\n{keys}\nrate_limit_headers = true\n[upstreams.up.limits]\nrequests_per_second = 100\nburst = 10\n[models.m]\nupstream = \"up\"\n[[routes]]\nname = \"main\"\ntargets = [\"m\"]\n",
        fake.base_url()
    );
    let plan = common::plan(&toml);
    let env = Arc::new(|k: &str| match k {
        "K1" => Some(K1.to_string()),
        "K2" => Some(K2.to_string()),
        _ => None,
    });
    let client = Client::with_env(&plan, env).unwrap();
    let exec = Executor::new(plan).unwrap();
    client.chat_completion(&exec, &body()).await.unwrap();
    exec.stats().upstreams[0].rate_headroom.unwrap()
}

#[tokio::test]
async fn one_keys_exhausted_window_rests_that_key_and_does_not_tighten_the_upstream() {
    let one = headroom_after_an_exhausted_window("api_key = { env = \"K1\" }").await;
    assert_eq!(
        one, 0,
        "with one key the headers describe the upstream: it is tightened"
    );
    let two =
        headroom_after_an_exhausted_window("api_keys = [{ env = \"K1\" }, { env = \"K2\" }]").await;
    assert!(
        two > 0,
        "with two keys one key's window must not close the upstream ({two})"
    );
}
