//! Two in-process fake upstreams with a failover policy over them, and the chat and header
//! helpers of the tests that call them through the HTTP client, the relay, the reqwest
//! middleware or the tower layer.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tollgate::exec::Executor;
use tollgate::http::{Client, EnvLookup};
use tollgate::plan::Plan;
use tollgate::server::fake::FakeUpstream;

/// The key upstream `a` is given, from `A_KEY` (see [`env`]).
pub const A_KEY: &str = "sk-test-123";

/// A policy with upstreams `a` (keyed by `A_KEY`, prefix `sk-`, breaker `quick`) and `b`,
/// models `ma` → `up-a` and `mb` (priced), retry `quick` (2 attempts 1 ms apart, a
/// `Retry-After` honoured up to 100 ms), and one failover route `main` over `ma` then
/// `mb` with streaming timeouts; `extra` goes before the route.
pub fn two_upstream_policy(a: &str, b: &str, extra: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "10s" }}
retry = "quick"
[upstreams.a]
base_url = "{a}"
api_key = {{ env = "A_KEY", prefixes = ["sk-"] }}
breaker = "quick"
[upstreams.b]
base_url = "{b}"
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
retry_after = {{ honor = true, max = "100ms" }}
[breakers.quick]
consecutive_failures = 3
open_for = "100ms"
half_open = {{ probes = 1, successes_to_close = 1 }}
{extra}
[[routes]]
name = "main"
targets = ["ma", "mb"]
streaming = {{ first_byte = "500ms", idle_chunk = "300ms" }}
"#
    )
}

/// The environment keys are read from: `A_KEY` = [`A_KEY`], nothing else.
pub fn env() -> EnvLookup {
    Arc::new(|k: &str| (k == "A_KEY").then(|| A_KEY.to_string()))
}

/// An environment with no variable set.
pub fn no_keys() -> EnvLookup {
    Arc::new(|_: &str| None)
}

/// The executor (seed 1) and the HTTP client for `plan`, keys looked up in `env`.
pub fn exec_and_client(plan: Plan, env: EnvLookup) -> (Executor, Client) {
    let client = Client::with_env(&plan, env).unwrap();
    let exec = Executor::builder(plan).seed(1).build().unwrap();
    (exec, client)
}

/// Fake upstreams `a` and `b`, running until dropped.
pub struct TwoUpstreams {
    pub a: FakeUpstream,
    pub b: FakeUpstream,
}

impl TwoUpstreams {
    pub async fn start() -> TwoUpstreams {
        TwoUpstreams {
            a: FakeUpstream::start("a").await.unwrap(),
            b: FakeUpstream::start("b").await.unwrap(),
        }
    }

    /// [`two_upstream_policy`] over these two, compiled.
    pub fn plan(&self, extra: &str) -> Plan {
        super::plan(&two_upstream_policy(
            &self.a.base_url(),
            &self.b.base_url(),
            extra,
        ))
    }
}

/// A chat request for route `main`.
pub fn chat(prompt: &str) -> Value {
    json!({"model": "main", "messages": [{"role": "user", "content": prompt}]})
}

/// A chat-completions body with model `auto`, as the HTTP client and the layer take it.
pub fn chat_body(prompt: &str) -> Map<String, Value> {
    match json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// A response header as text ("" when absent or not text).
pub fn header<'r>(r: &'r reqwest::Response, k: &str) -> &'r str {
    r.headers()
        .get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Serves `relay` on a free 127.0.0.1 port until the returned sender is dropped or sent
/// to; returns its base URL (`http://ADDR`).
pub async fn serve(relay: tollgate::server::Relay) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tollgate::server::serve(listener, relay, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}
