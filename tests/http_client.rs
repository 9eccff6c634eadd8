//! `tollgate::http::Client` under the executor against fake upstreams on 127.0.0.1: the
//! classes a response becomes, and the upstream and route settings the client itself
//! applies (pool cap, connect timeout).

mod common;

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tollgate::exec::{Executor, StopReason};
use tollgate::http::Client;
use tollgate::server::fake::{Behavior, FakeUpstream};

fn no_keys() -> tollgate::http::EnvLookup {
    Arc::new(|_: &str| None)
}

fn chat(prompt: &str) -> Map<String, Value> {
    json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]})
        .as_object()
        .cloned()
        .unwrap()
}

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
        let client = Client::with_env(&plan, no_keys()).unwrap();
        let exec = Executor::builder(plan).seed(1).build().unwrap();
        let got = client.chat_completion(&exec, &chat("a long prompt")).await;
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
