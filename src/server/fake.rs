//! Simulated OpenAI-compatible upstreams, in-process on 127.0.0.1: for `tollgate demo`,
//! the tests and the benchmarks. Public only with the cargo feature `testing` (test
//! support, not part of the relay's API). Each model served can be given its own [`Behavior`]
//! (latency, random 5xx, an outage, a rate limit with `Retry-After`, broken bodies,
//! stalled streams), changed at any time while it runs.
//!
//! Answers are deterministic: the reply to a prompt is `"{upstream}/{model}: {last user
//! message}"`, with usage `prompt_tokens` = ⌈prompt bytes / 4⌉ and `completion_tokens` =
//! the reply's words.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tollgate::server::fake::{Behavior, FakeUpstream};
//! let fake = FakeUpstream::start("relay").await.unwrap();
//! fake.set("deepseek-v3.2", Behavior { fail_rate: 0.3, ..Behavior::default() });
//! assert!(fake.base_url().starts_with("http://127.0.0.1:"));
//! # }
//! ```

pub mod anthropic;
pub mod gemini;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

/// How a simulated upstream answers calls for one model (or all).
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Delay before answering.
    pub latency: Duration,
    /// Share of calls answered with `fail_status` (0.0–1.0).
    pub fail_rate: f64,
    /// Status of random failures (500 and 503 alternate when this is 0).
    pub fail_status: u16,
    /// Down: every call gets 503 at once.
    pub down: bool,
    /// Calls admitted per second before 429 with `Retry-After`.
    pub rate_limit_per_sec: Option<u32>,
    /// `Retry-After` seconds sent with 429s.
    pub retry_after_secs: u32,
    /// With `rate_limit_per_sec`: send `x-ratelimit-remaining-requests` / `-reset-requests`
    /// (they describe this model's window, but a policy reads them per upstream).
    pub rate_limit_headers: bool,
    /// Answer every call with this status and body instead.
    pub raw: Option<(u16, String)>,
    /// Send half the body (of a stream: half its events, at least one), then break the
    /// connection.
    pub truncate: bool,
    /// Send a body of this many bytes (not JSON).
    pub huge: Option<usize>,
    /// For streams: stop sending (but keep the connection) after this many chunks.
    pub stall_after_chunks: Option<usize>,
    /// Delay between stream chunks.
    pub chunk_delay: Duration,
    /// Report `completion_tokens` = the request's `max_tokens` when it has one (an answer
    /// as long as it may be, the usage `tollgate simulate` draws around) instead of the
    /// reply's words.
    pub full_length: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            latency: Duration::ZERO,
            fail_rate: 0.0,
            fail_status: 0,
            down: false,
            rate_limit_per_sec: None,
            retry_after_secs: 1,
            rate_limit_headers: true,
            raw: None,
            truncate: false,
            huge: None,
            stall_after_chunks: None,
            chunk_delay: Duration::ZERO,
            full_length: false,
        }
    }
}

#[derive(Default)]
struct Window {
    second: u64,
    count: u32,
}

struct Inner {
    name: String,
    default: Mutex<Behavior>,
    by_model: Mutex<HashMap<String, Behavior>>,
    windows: Mutex<HashMap<String, Window>>,
    calls: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    last_auth: Mutex<Option<String>>,
    last_body: Mutex<Option<Value>>,
    /// Per `Authorization` header: the status to answer with instead (a key-level 429, 401).
    key_status: Mutex<HashMap<String, u16>>,
    /// Calls received per `Authorization` header.
    calls_by_auth: Mutex<HashMap<String, u64>>,
    started: Instant,
    rng: Mutex<fastrand::Rng>,
}

/// A fake's HTTP server on 127.0.0.1, serving its app until dropped (dropping the sender
/// ends the graceful shutdown's wait). One copy for every fake upstream.
pub(crate) struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// Binds `addr` and serves `app` there, small answers sent at once (no Nagle delay).
    pub(crate) async fn start(
        addr: impl tokio::net::ToSocketAddrs,
        app: Router,
    ) -> std::io::Result<Server> {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Server { addr, _stop: tx })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A running simulated upstream. Stops when dropped.
pub struct FakeUpstream {
    server: Server,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("name", &self.inner.name)
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl FakeUpstream {
    /// Starts one on a free port of 127.0.0.1, healthy for every model.
    pub async fn start(name: &str) -> std::io::Result<FakeUpstream> {
        Self::start_on(name, "127.0.0.1:0").await
    }

    /// Starts one on a chosen address (e.g. a fixed port another proxy is pointed at).
    pub async fn start_on(
        name: &str,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> std::io::Result<FakeUpstream> {
        let inner = Arc::new(Inner {
            name: name.to_string(),
            default: Mutex::new(Behavior::default()),
            by_model: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            last_auth: Mutex::new(None),
            last_body: Mutex::new(None),
            key_status: Mutex::new(HashMap::new()),
            calls_by_auth: Mutex::new(HashMap::new()),
            started: Instant::now(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed_of(name))),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/completions", post(handle))
            .route("/v1/embeddings", post(handle))
            .with_state(inner.clone());
        let server = Server::start(addr, app).await?;
        Ok(FakeUpstream { server, inner })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Its base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    /// Seeds its random failures (by default the seed comes from its name, so two runs
    /// that send the same calls in the same order get the same answers).
    pub fn seed(&self, seed: u64) {
        *lock(&self.inner.rng) = fastrand::Rng::with_seed(seed ^ seed_of(&self.inner.name));
    }

    /// Sets the behaviour for one model (by the id sent upstream).
    pub fn set(&self, model: &str, b: Behavior) {
        lock(&self.inner.by_model).insert(model.to_string(), b);
    }

    /// Sets the behaviour for models without their own.
    pub fn set_default(&self, b: Behavior) {
        *lock(&self.inner.default) = b;
    }

    /// Takes every model down (`true`) or brings them back, keeping the rest of each
    /// behaviour.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner.default).down = down;
        for b in lock(&self.inner.by_model).values_mut() {
            b.down = down;
        }
    }

    /// Calls received for a model.
    pub fn calls(&self, model: &str) -> u64 {
        lock(&self.inner.calls).get(model).copied().unwrap_or(0)
    }

    /// Calls received in all.
    pub fn total_calls(&self) -> u64 {
        self.inner.total.load(Relaxed)
    }

    /// The `Authorization` header of the last call.
    pub fn last_authorization(&self) -> Option<String> {
        lock(&self.inner.last_auth).clone()
    }

    /// Answers every call made with `Bearer {key}` with `status` (429 with `retry-after:
    /// 30`, or any other, e.g. 401): a key-level refusal; `None` serves it again.
    pub fn answer_key(&self, key: &str, status: Option<u16>) {
        let auth = format!("Bearer {key}");
        match status {
            Some(st) => lock(&self.inner.key_status).insert(auth, st),
            None => lock(&self.inner.key_status).remove(&auth),
        };
    }

    /// Calls received with `Bearer {key}`.
    pub fn calls_with_key(&self, key: &str) -> u64 {
        let auth = format!("Bearer {key}");
        lock(&self.inner.calls_by_auth)
            .get(&auth)
            .copied()
            .unwrap_or(0)
    }

    /// The JSON body of the last call.
    pub fn last_body(&self) -> Option<Value> {
        lock(&self.inner.last_body).clone()
    }
}

/// A stable seed from a name (FNV-1a): not the port, which differs from run to run.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The answer of `/v1/embeddings` (a small vector per input, priced by input tokens) and of
/// a plain `/v1/completions` (the text completion format); `None` for chat completions (and
/// a streamed legacy completion, answered in the chat stream's format).
fn other_endpoint(path: &str, name: &str, model: &str, req: &Value) -> Option<Response> {
    let texts = |field: &str| -> Vec<String> {
        match req.get(field) {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    };
    let tokens = |t: &[String]| t.iter().map(|s| (s.len() as u64).div_ceil(4)).sum::<u64>();
    let body = if path.ends_with("/embeddings") {
        let input = texts("input");
        let data: Vec<Value> = input
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len() as f64, 0.5, -0.5]}))
            .collect();
        let n = tokens(&input);
        json!({"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": n, "total_tokens": n}})
    } else if path.ends_with("/v1/completions")
        && !req.get("stream").and_then(Value::as_bool).unwrap_or(false)
    {
        let prompt = texts("prompt");
        let text = format!("{name}/{model}: {}", prompt.join(" "));
        let (p, c) = (tokens(&prompt), text.split_whitespace().count() as u64);
        json!({"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model,
               "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
    } else {
        return None;
    };
    Some((StatusCode::OK, axum::Json(body)).into_response())
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "server_error", "code": code}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

async fn handle(
    State(s): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.total.fetch_add(1, Relaxed);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    *lock(&s.last_auth) = auth.clone();
    if let Some(a) = &auth {
        *lock(&s.calls_by_auth).entry(a.clone()).or_default() += 1;
        let refused = lock(&s.key_status).get(a).copied();
        match refused {
            Some(429) => {
                let mut r = error(429, "rate_limit_exceeded", "rate limit for this key");
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("30"));
                return r;
            }
            Some(st) => return error(st, "invalid_api_key", "key refused"),
            None => {}
        }
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_json", "body is not JSON");
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    *lock(&s.last_body) = Some(req.clone());
    *lock(&s.calls).entry(model.clone()).or_default() += 1;
    let b = lock(&s.by_model)
        .get(&model)
        .cloned()
        .unwrap_or_else(|| lock(&s.default).clone());
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if b.down {
        return error(503, "unavailable", "upstream is down");
    }
    if let Some((status, text)) = &b.raw {
        return Response::builder()
            .status(*status)
            .header("content-type", "application/json")
            .body(Body::from(text.clone()))
            .unwrap_or_else(|_| error(500, "bad_raw", "bad raw response"));
    }
    let mut rl_headers: Vec<(&str, String)> = Vec::new();
    if let Some(limit) = b.rate_limit_per_sec {
        let second = s.started.elapsed().as_secs();
        let mut w = lock(&s.windows);
        let w = w.entry(model.clone()).or_default();
        if w.second != second {
            *w = Window { second, count: 0 };
        }
        w.count += 1;
        let remaining = limit.saturating_sub(w.count);
        let reset_ms = 1000 - (s.started.elapsed().as_millis() % 1000) as u64;
        if w.count > limit {
            let mut r = error(
                429,
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            );
            let h = r.headers_mut();
            h.insert("retry-after", b.retry_after_secs.into());
            if b.rate_limit_headers {
                h.insert("x-ratelimit-remaining-requests", 0.into());
                if let Ok(v) = format!("{reset_ms}ms").parse() {
                    h.insert("x-ratelimit-reset-requests", v);
                }
            }
            return r;
        }
        if b.rate_limit_headers {
            rl_headers.push(("x-ratelimit-remaining-requests", remaining.to_string()));
            rl_headers.push(("x-ratelimit-reset-requests", format!("{reset_ms}ms")));
        }
    }
    if b.fail_rate > 0.0 && lock(&s.rng).f64() < b.fail_rate {
        let status = match b.fail_status {
            0 if lock(&s.rng).bool() => 500,
            0 => 503,
            st => st,
        };
        return error(status, "server_error", "simulated failure");
    }
    if let Some(n) = b.huge {
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let chunks = n.div_ceil(1 << 20);
        let stream = futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, Infallible>(chunk.clone())),
        );
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| error(500, "x", "x"));
    }
    if let Some(r) = other_endpoint(uri.path(), &s.name, &model, &req) {
        return r;
    }
    let prompt_text = last_user_message(&req);
    let reply = format!("{}/{}: {}", s.name, model, prompt_text);
    let prompt_tokens = (all_text(&req).len() as u64).div_ceil(4);
    let completion_tokens = match req.get("max_tokens").and_then(Value::as_u64) {
        Some(n) if b.full_length => n,
        _ => reply.split_whitespace().count() as u64,
    };
    let streaming = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut resp = if streaming {
        let include_usage = req
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        stream_response(
            &model,
            &reply,
            include_usage.then_some((prompt_tokens, completion_tokens)),
            &b,
        )
    } else {
        let body = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        });
        let text = body.to_string();
        if b.truncate {
            let half = Bytes::from(text.into_bytes()).slice(..body.to_string().len() / 2);
            let stream = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(half),
                Err(std::io::Error::other("simulated connection break")),
            ]);
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| error(500, "x", "x"))
        } else {
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(text))
                .unwrap_or_else(|_| error(500, "x", "x"))
        }
    };
    for (k, v) in rl_headers {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn stream_response(model: &str, reply: &str, usage: Option<(u64, u64)>, b: &Behavior) -> Response {
    let mut events: Vec<String> = Vec::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null).to_string());
    let words: Vec<&str> = reply.split_inclusive(' ').collect();
    for w in words {
        events.push(chunk(json!({"content": w}), Value::Null).to_string());
    }
    events.push(chunk(json!({}), json!("stop")).to_string());
    if let Some((p, c)) = usage {
        events.push(
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
            .to_string(),
        );
    }
    events.push("[DONE]".into());
    let stall = b.stall_after_chunks;
    let delay = b.chunk_delay;
    let break_at = b.truncate.then(|| (events.len() / 2).max(1));
    let stream = futures_util::stream::unfold(
        (events.into_iter().enumerate(), false),
        move |(mut it, stalled)| async move {
            if stalled {
                return None;
            }
            let (i, ev) = it.next()?;
            if break_at.is_some_and(|n| i >= n) {
                // Let the events sent so far reach the client before the connection breaks
                // (a reset may discard data the client has not read yet).
                tokio::time::sleep(Duration::from_millis(30)).await;
                let e = std::io::Error::other("simulated connection break");
                return Some((Err(e), (it, true)));
            }
            if stall.is_some_and(|n| i >= n) {
                // Hold the connection open without sending: a stalled upstream.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return None;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(format!("data: {ev}\n\n"))),
                (it, false),
            ))
        },
    );
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(500, "x", "x"))
}

fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn last_user_message(req: &Value) -> String {
    req.get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(message_text)
        .unwrap_or_default()
}

fn all_text(req: &Value) -> String {
    req.get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(message_text).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}
