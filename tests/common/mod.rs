//! Shared helpers for the integration tests (`mod common;` in each file): compile a policy
//! from TOML text; a fake upstream that counts the requests it has in flight; the
//! two-fake-upstream setup and chat helpers ([`relay`]); free ports and child processes
//! killed on drop ([`process`]); running the binary ([`cli`]).
//!
//! Each test file is its own crate and uses only some of these helpers, so the rest would
//! be dead code there: the usual `allow(dead_code)` of a `tests/common` module.
#![allow(dead_code)]

pub mod cli;
pub mod process;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;

/// Compiles `toml` with no environment overrides; panics with the rendered diagnostics if
/// it does not compile.
pub fn plan(toml: &str) -> Plan {
    let opts = LoadOptions::from_text("policy.toml", toml).with_env(Vec::<(String, String)>::new());
    match Plan::load(&opts) {
        Ok(c) => c.plan,
        Err(d) => panic!("test policy does not compile:\n{}", d.render(false)),
    }
}

/// A fake upstream that answers every chat completion after `latency` and records the
/// most requests it ever had in flight at once, and the connections they came on.
pub struct Gauge {
    /// Its base URL.
    pub url: String,
    /// Requests in flight now.
    pub now: Arc<std::sync::atomic::AtomicUsize>,
    /// The most requests ever in flight at once.
    pub max: Arc<std::sync::atomic::AtomicUsize>,
    /// The client address of every request (one per connection used).
    pub peers: Arc<std::sync::Mutex<std::collections::HashSet<std::net::SocketAddr>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn gauge(latency: Duration) -> Gauge {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let peers = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let (n, m, p) = (now.clone(), max.clone(), peers.clone());
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
            let (n, m, p) = (n.clone(), m.clone(), p.clone());
            async move {
                p.lock().unwrap().insert(peer);
                let inside = n.fetch_add(1, SeqCst) + 1;
                m.fetch_max(inside, SeqCst);
                tokio::time::sleep(latency).await;
                n.fetch_sub(1, SeqCst);
                axum::Json(serde_json::json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
    });
    Gauge {
        url: format!("http://{addr}/v1"),
        now,
        max,
        peers,
        _stop: tx,
    }
}

/// One upstream `u` at `url` with this pool cap, one model `m`, one route `main`.
pub fn pool_policy(url: &str, max_connections: u32, per_try: &str) -> String {
    format!(
        r#"
[defaults]
timeouts = {{ connect = "1s", per_try = "{per_try}", total = "10s" }}
[upstreams.u]
base_url = "{url}"
pool = {{ max_connections = {max_connections} }}
[models.m]
upstream = "u"
[[routes]]
name = "main"
targets = ["m"]
"#
    )
}
