//! `tollgate serve`: an OpenAI-compatible relay that runs every call under the plan.
//!
//! # Endpoints
//! - `POST /v1/chat/completions` — plain and streaming (`"stream": true`). Request
//!   attributes for routing: `model`, `max_tokens` (or `max_completion_tokens`), the prompt
//!   (every message's text, joined), the `x-tollgate-task` header as `task`, and the
//!   `x-tollgate-tags` header (comma-separated) as `tags`. The upstream gets the body with
//!   `model` replaced by the chosen target's `upstream_model`. Responses carry
//!   `x-tollgate-route`, `-model`, `-upstream`, `-attempts`, `-failovers` (moves to another
//!   target: [`Served::failovers`](crate::exec::Served::failovers)) and `-cost-usd`; an
//!   answer the executor gave up on carries `-route`, `-attempts` and the last attempt's
//!   `-model` and `-upstream` (`-` where there is none).
//! - `POST /v1/completions` — the legacy text completions (`prompt` a string or an array;
//!   plain and streaming), passed through to the target's upstream under the policy.
//! - `POST /v1/embeddings` — `input` a string or an array; priced by input tokens (no
//!   output is reserved), under the same limits, breakers, budgets and failover; never
//!   streamed (a `"stream": true` is a 400).
//! - `GET /v1/models` — every route and every model, as OpenAI model objects
//!   (`owned_by` is `tollgate-route` or the model's upstream).
//! - `GET /healthz` — `ok`.
//! - `GET /status` — JSON: the plan version, the executor's [`Stats`], and each upstream
//!   key's state (`keys`).
//! - `GET /metrics` — Prometheus text (see [`metrics`]).
//!
//! # Which `model` names are accepted
//! The executor picks the route named by `model`, else the first route whose `when`
//! matches. The relay accepts a `model` that is a route name, a model name of the plan,
//! `auto`, or a value some route's `when` tests `model` against; a request without
//! `model` is routed by its other attributes. Any other name gets **404
//! `model_not_found`**: a typo should not silently land on the catch-all route. Note that
//! a model name does not pin that model: routes decide (name a route to choose one).
//!
//! # Errors
//! Always `{"error": {"message", "type", "code"}}`: malformed JSON or a body that is not a
//! chat request → 400; missing or unknown caller key → 401 (only when caller keys are
//! configured); unknown model → 404; body over the limit → 413. When the executor gives up:
//! budget spent → 429 `budget_exceeded`; every target limited → 429 `rate_limited`;
//! breakers open / retry budget spent → 503; deadline → 504; attempts exhausted → the last
//! upstream failure's client error (4xx) as is, a timeout as 504, anything else 502.
//! The message is the executor's account of every attempt (keys are never in it).
//!
//! # Caller keys
//! Optional: from the policy (`[callers.NAME] key_sha256`, updated by hot reload) and from
//! the relay's own list ([`CallerKeys`], `TOLLGATE_CALLER_KEYS` for `tollgate serve`).
//! When either has a key, every request needs `Authorization: Bearer KEY` (a missing key is
//! 401 `missing_api_key`, an unknown one 401 `invalid_api_key`); the key's caller name
//! becomes the request's `caller`, which budgets (`scope.keys`) and routes
//! (`attr = "caller"`) use. A caller with a budget of its own
//! (`[budgets.X] scope.keys = ["NAME"]`) is refused with 429 `budget_exceeded` once it is
//! spent, while other callers go on.
//!
//! # Streaming
//! Retries and failover happen until the first event reaches the caller; after that, an
//! upstream that stalls past the route's `streaming.idle_chunk` or breaks gets an error
//! event (`stream_idle_timeout` / `upstream_stream_interrupted`) and the stream ends; so
//! does a stream still running when its attempt's time is up (the per-try timeout, cut by
//! the request's total deadline: `stream_timeout`). Such a
//! break is not retried, but it counts as a failure of the upstream (a stall or a stream
//! out of time as `timeout`,
//! a broken connection as `connect`, an oversized event as `502`): on its breakers, which
//! it may open, and in its stats. The final chunk's usage (tollgate always asks upstream
//! for it) is priced when the stream ends, or when the caller goes away.
//!
//! # Shutdown
//! [`serve`] stops accepting on its shutdown signal and drains requests in flight.

// The simulated upstreams: `tollgate demo` runs on them; public (for tests, examples and
// benchmarks) only with the `testing` feature, which this crate's own tests, examples and
// benches turn on through a dev-dependency on itself.
#[cfg(feature = "testing")]
pub mod fake;
// Without `testing` only the demo uses it, and not every part.
#[cfg(not(feature = "testing"))]
#[allow(dead_code)]
pub(crate) mod fake;
mod keys;
mod messages;
pub mod metrics;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

pub use keys::{hash_key_hex, CallerKeyError, CallerKeys};
pub use metrics::Metrics;

use crate::exec::{
    ExecError, Executor, Failure, FailureKind, Request, Served, SkipReason, Stats, StopReason,
};
use crate::http::{self, Client, Endpoint, SseStream};
use crate::plan::Plan;

/// Default request body limit (4 MiB).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// The relay's shared state.
#[derive(Clone, Debug)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    exec: Executor,
    client: Client,
    /// Keys given besides the policy's `[callers]` (`TOLLGATE_CALLER_KEYS`).
    keys: CallerKeys,
    metrics: Arc<Metrics>,
    max_body: usize,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Relay {
    /// A relay running calls under `exec` through `client`.
    pub fn new(exec: Executor, client: Client) -> Relay {
        Relay {
            inner: Arc::new(Inner {
                exec,
                client,
                keys: CallerKeys::default(),
                metrics: Arc::new(Metrics::default()),
                max_body: DEFAULT_MAX_BODY,
            }),
        }
    }

    /// Caller keys besides the plan's `[callers]`. Keys are required when either set is
    /// not empty. Check them first with [`CallerKeys::check_against`] the plan: a caller in
    /// both is refused at reload ([`Relay::prepare_plan`]).
    pub fn caller_keys(self, keys: CallerKeys) -> Relay {
        self.map(|i| i.keys = keys)
    }

    /// Sets the request body limit.
    pub fn max_body(self, bytes: usize) -> Relay {
        self.map(|i| i.max_body = bytes)
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Relay {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|a| Inner {
            exec: a.exec.clone(),
            client: a.client.clone(),
            keys: a.keys.clone(),
            metrics: a.metrics.clone(),
            max_body: a.max_body,
        });
        f(&mut inner);
        Relay {
            inner: Arc::new(inner),
        }
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.inner.exec
    }

    /// The HTTP client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Swaps in a new plan: the HTTP clients first (keys checked), then the executor's plan.
    /// On an error the old plan stays.
    pub fn apply_plan(&self, plan: Plan) -> Result<u64, ApplyError> {
        self.prepare_plan(&plan)?;
        Ok(self.inner.exec.swap_plan(plan)?)
    }

    /// Builds the HTTP clients a new plan needs (keys checked) without swapping the plan:
    /// the `prepare` hook of hot reload ([`crate::reload::watch_with`]), which swaps the
    /// executor's plan itself once this succeeds.
    pub fn prepare_plan(&self, plan: &Plan) -> Result<(), ApplyError> {
        self.inner.keys.check_against(plan)?;
        self.inner.client.update(plan)?;
        Ok(())
    }

    /// The axum router.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/v1/chat/completions",
                openai_route(Endpoint::ChatCompletions),
            )
            .route("/v1/completions", openai_route(Endpoint::Completions))
            .route("/v1/embeddings", openai_route(Endpoint::Embeddings))
            .route("/v1/messages", post(messages::messages))
            .route(
                "/v1/messages/{*rest}",
                axum::routing::any(messages::not_found),
            )
            .route("/v1/models", get(models))
            .route("/healthz", get(|| async { "ok" }))
            .route("/status", get(status))
            .route("/metrics", get(metrics_text))
            .fallback(|| async {
                error_response(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "not_found",
                    "no such endpoint",
                )
            })
            .layer(DefaultBodyLimit::max(self.inner.max_body))
            .with_state(self.clone())
    }
}

/// Why a plan could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The HTTP clients (keys) could not be built.
    #[error(transparent)]
    Client(#[from] http::ClientError),
    /// The executor's state could not be built.
    #[error(transparent)]
    Exec(#[from] crate::exec::state::BuildError),
    /// A caller of the plan also has a key in the relay's own list.
    #[error(transparent)]
    CallerKeys(#[from] CallerKeyError),
}

/// Serves `relay` on `listener` until `shutdown` resolves, then drains requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    relay: Relay,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small responses: send them at once (no Nagle delay waiting for the client's ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, relay.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// An OpenAI-style error response.
pub fn error_response(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code}});
    (status, axum::Json(body)).into_response()
}

fn bad_request(code: &str, message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
}

/// The route of an OpenAI-format endpoint: [`openai_call`] for `endpoint`.
fn openai_route(endpoint: Endpoint) -> axum::routing::MethodRouter<Relay> {
    post(
        move |State(relay): State<Relay>,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| {
            openai_call(relay, headers, body, endpoint)
        },
    )
}

/// What a call to `endpoint` must carry: its error when it does not.
fn check_shape(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(), &'static str> {
    let text_or_list = |v: Option<&Value>| v.is_some_and(|v| v.is_string() || v.is_array());
    match endpoint {
        Endpoint::ChatCompletions if !body.get("messages").is_some_and(Value::is_array) => {
            Err("`messages` must be an array")
        }
        Endpoint::Completions if !text_or_list(body.get("prompt")) => {
            Err("`prompt` must be a string or an array")
        }
        Endpoint::Embeddings if !text_or_list(body.get("input")) => {
            Err("`input` must be a string or an array")
        }
        _ => Ok(()),
    }
}

/// One OpenAI-format call to `endpoint`: authenticated, checked, routed and run under the
/// plan, plain or streamed.
async fn openai_call(
    relay: Relay,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let body = match json_body(&relay, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    call(relay, headers, body, endpoint, Dialect::OpenAi).await
}

/// The format a caller speaks: OpenAI's on `/v1/chat/completions` and the others,
/// Anthropic's on `/v1/messages` (its body translated to a chat before [`call`], its
/// answers back by [`messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

/// The request body as a JSON object, or the 400/413 that says why not.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn json_body(
    relay: &Relay,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, Response> {
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                &format!("the body is over {} bytes", relay.inner.max_body),
            ))
        }
        Err(e) => return Err(bad_request("invalid_body", &e.body_text())),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request(
            "invalid_request",
            "the body must be a JSON object",
        )),
        Err(e) => Err(bad_request(
            "invalid_json",
            &format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// A call with an OpenAI-format `body`, answered in `dialect`.
async fn call(
    relay: Relay,
    headers: HeaderMap,
    body: Map<String, Value>,
    endpoint: Endpoint,
    dialect: Dialect,
) -> Response {
    let inner = &relay.inner;
    let _in_flight = inner.metrics.start();
    // The plan the checks below use, loaded once (the executor takes its own snapshot).
    let plan = inner.exec.plan();
    let caller = match authenticate(inner, &plan, &headers) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(why) = check_shape(endpoint, &body) {
        return bad_request("invalid_request", why);
    }
    let mut req = http::request_attributes_for(endpoint, &body);
    req.task = headers
        .get("x-tollgate-task")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(tags) = headers.get("x-tollgate-tags").and_then(|v| v.to_str().ok()) {
        req.tags = tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
    }
    req.caller = caller;
    if let Some(m) = &req.model {
        if !model_known(&plan, m) {
            return error_response(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                &format!("the model `{m}` is not a route or model of this relay (GET /v1/models lists them)"),
            );
        }
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream && endpoint == Endpoint::Embeddings {
        return bad_request("invalid_request", "embeddings do not stream");
    }
    if stream {
        stream_completion(relay.clone(), req, body, endpoint, dialect).await
    } else {
        plain_completion(&relay, &req, &body, endpoint, dialect).await
    }
}

/// The caller presenting `headers`' key: `None` when no key is configured (neither in the
/// plan's `[callers]` nor in the relay's list), else its name, or a 401.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn authenticate(
    inner: &Inner,
    plan: &Plan,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    if inner.keys.is_empty() && plan.callers.is_empty() {
        return Ok(None);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    // Anthropic's clients send theirs in `x-api-key`.
    let x_api_key = || headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let presented = bearer
        .or_else(x_api_key)
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = presented else {
        return Err(error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            "send your key as `Authorization: Bearer KEY` (or `x-api-key: KEY`)",
        ));
    };
    let h = keys::hash(key);
    match inner
        .keys
        .caller_by_hash(&h)
        .or_else(|| plan.caller_by_key_hash(&h))
    {
        Some(name) => Ok(Some(name.to_string())),
        None => Err(error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "the key is not known to this relay",
        )),
    }
}

/// Records an attempt's metrics when it finishes or is cancelled (a per-try timeout drops
/// the attempt's future).
struct AttemptGuard {
    metrics: Arc<Metrics>,
    upstream: String,
    model: String,
    started: Instant,
    outcome: Option<String>,
}

impl AttemptGuard {
    fn finish(&mut self, outcome: String) {
        self.outcome = Some(outcome);
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let outcome = self.outcome.as_deref().unwrap_or("timeout");
        self.metrics
            .attempt(&self.upstream, &self.model, outcome, self.started.elapsed());
    }
}

fn attempt_guard(metrics: &Arc<Metrics>, t: &crate::exec::Target) -> AttemptGuard {
    AttemptGuard {
        metrics: metrics.clone(),
        upstream: t.upstream_name().to_string(),
        model: t.model_name().to_string(),
        started: Instant::now(),
        outcome: None,
    }
}

fn outcome_label<T>(r: &Result<T, Failure>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(f) => match (f.kind, f.status) {
            (FailureKind::Connect, _) => "connect".into(),
            (FailureKind::Timeout, _) => "timeout".into(),
            (_, Some(s)) => s.to_string(),
            _ => "error".into(),
        },
    }
}

async fn plain_completion(
    relay: &Relay,
    req: &Request,
    body: &Map<String, Value>,
    endpoint: Endpoint,
    dialect: Dialect,
) -> Response {
    let inner = &relay.inner;
    let result = inner
        .exec
        .execute(req, |t, _| {
            let mut g = attempt_guard(&inner.metrics, &t);
            async move {
                let r = inner.client.send_to(&t, endpoint, body).await;
                g.finish(outcome_label(&r));
                r
            }
        })
        .await;
    match result {
        Ok(served) => {
            record_served(&inner.metrics, &served);
            let value = match dialect {
                Dialect::OpenAi => served.value.clone(),
                Dialect::Anthropic => match messages::answer(&served.value, served.model_name()) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                },
            };
            let mut resp = Response::new(Body::from(value));
            *resp.status_mut() = StatusCode::OK;
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            http::headers::write_served(resp.headers_mut(), &served);
            resp
        }
        Err(e) => exec_error(&inner.metrics, &e),
    }
}

async fn stream_completion(
    relay: Relay,
    req: Request,
    body: Map<String, Value>,
    endpoint: Endpoint,
    dialect: Dialect,
) -> Response {
    let inner = &relay.inner;
    let result = inner
        .exec
        .execute(&req, |t, _| {
            let mut g = attempt_guard(&inner.metrics, &t);
            let body = &body;
            async move {
                let timeouts = http::streaming_timeouts(&t);
                let r = inner
                    .client
                    .send_stream_to(&t, endpoint, body, timeouts)
                    .await;
                g.finish(outcome_label(&r));
                r
            }
        })
        .await;
    let served = match result {
        Ok(s) => s,
        Err(e) => return exec_error(&inner.metrics, &e),
    };
    record_served(&inner.metrics, &served);
    let (stream, meta) = served.into_parts();
    let mut headers = HeaderMap::new();
    http::headers::write_served(&mut headers, &meta);
    let events = (dialect == Dialect::Anthropic)
        .then(|| crate::http::wire::anthropic::MessagesEvents::new(meta.model_name()));
    let acct = StreamAccount {
        exec: inner.exec.clone(),
        meta,
        req,
        stream,
        finished: false,
        events,
    };
    let body = futures_util::stream::unfold(acct, |mut acct| async move {
        if acct.finished {
            return None;
        }
        let ev = match acct.stream.next_event().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::warn!(target: "tollgate::server", route = %acct.meta.route_name(), model = %acct.meta.model_name(), error = %e, "stream ended early");
                acct.finished = true;
                e.to_event()
            }
            None => {
                // An Anthropic caller's last events, if the chunks have not closed it yet
                // (they are Anthropic's already: not translated again below).
                acct.finished = true;
                let last = acct.events.as_mut().map(|m| m.finish())?;
                return (!last.is_empty()).then(|| (Ok(Bytes::from(last.concat())), acct));
            }
        };
        let ev = match acct.events.as_mut() {
            Some(m) => Bytes::from(m.chunk(&ev).concat()),
            None => ev,
        };
        Some((Ok::<_, Infallible>(ev), acct))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.extend(headers);
    resp
}

/// A stream to the caller; when it is dropped (ended or abandoned) prices its usage and
/// reports how it ended (a break mid-way counts on the upstream's breakers and stats).
struct StreamAccount {
    exec: Executor,
    meta: Served<()>,
    req: Request,
    stream: SseStream,
    finished: bool,
    /// For an Anthropic-format caller: its events, made from the OpenAI chunks.
    events: Option<crate::http::wire::anthropic::MessagesEvents>,
}

impl Drop for StreamAccount {
    fn drop(&mut self) {
        if let Some(u) = self.stream.usage() {
            self.exec
                .record_late_usage(&mut self.meta, self.req.caller.as_deref(), u);
        }
        self.exec
            .record_late_outcome(&self.meta, self.stream.failure());
    }
}

fn record_served<T>(metrics: &Metrics, s: &Served<T>) {
    metrics.request(
        s.route_name(),
        s.model_name(),
        s.upstream_name(),
        "ok",
        s.attempts,
    );
}

/// The HTTP answer for a request the executor gave up on.
fn exec_error(metrics: &Metrics, e: &ExecError) -> Response {
    let (status, kind, code) = match &e.reason {
        StopReason::NoRoute => (StatusCode::BAD_REQUEST, "invalid_request_error", "no_route"),
        StopReason::BudgetExceeded { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "budget_exceeded",
        ),
        StopReason::RetryBudgetExhausted => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_error",
            "retry_budget_exhausted",
        ),
        StopReason::Deadline => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_error",
            "deadline_exceeded",
        ),
        StopReason::NoTargetAvailable => {
            let limited = !e.skipped.is_empty()
                && e.skipped
                    .iter()
                    .all(|s| matches!(s.reason, SkipReason::Limited(_)));
            if limited && e.attempts.is_empty() {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limited",
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_error",
                    "no_target_available",
                )
            }
        }
        StopReason::AttemptsExhausted | StopReason::NotRetryable => {
            match e.last_failure().map(|a| (a.kind, a.status)) {
                Some((FailureKind::Timeout, _)) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_error",
                    "upstream_timeout",
                ),
                Some((FailureKind::Response, Some(429))) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "upstream_rate_limited",
                ),
                Some((FailureKind::Response, Some(s @ 400..=499))) => (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
                    "invalid_request_error",
                    "upstream_rejected",
                ),
                _ => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_failed"),
            }
        }
    };
    let route = e.route.as_deref().unwrap_or("-");
    let (model, upstream) = e
        .last_failure()
        .map_or(("-", "-"), |a| (a.model.as_str(), a.upstream.as_str()));
    metrics.request(route, model, upstream, code, e.attempts.len() as u32);
    let mut resp = error_response(status, kind, code, &e.to_string());
    // What was tried, as a served answer says it (not `-cost-usd`: failed attempts are not
    // billed by the relay's accounting).
    let tried = http::headers::Tried {
        route,
        model,
        upstream,
        attempts: e.attempts.len() as u32,
    };
    http::headers::write_tried(resp.headers_mut(), &tried);
    // Tell the caller when an open breaker will let traffic through again.
    let retry_in = e
        .skipped
        .iter()
        .filter_map(|s| match &s.reason {
            SkipReason::BreakerOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .min();
    if let Some(d) = retry_in {
        let secs = d.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut().insert("retry-after", secs.into());
    }
    resp
}

/// Whether `m` may be asked for (see the module docs): `auto`, or a name the plan knows
/// ([`Plan::knows_model_name`], indexed when it was compiled).
pub fn model_known(plan: &Plan, m: &str) -> bool {
    m == "auto" || plan.knows_model_name(m)
}

async fn models(State(relay): State<Relay>) -> Response {
    let plan = relay.inner.exec.plan();
    let mut data: Vec<Value> = plan
        .routes
        .iter()
        .map(|r| json!({"id": r.name, "object": "model", "created": 0, "owned_by": "tollgate-route"}))
        .collect();
    data.extend(plan.models.iter().map(|m| {
        json!({"id": m.name, "object": "model", "created": 0, "owned_by": plan.upstream(m.upstream).name})
    }));
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// The `/status` document.
#[derive(serde::Serialize)]
struct StatusDoc {
    plan_version: u64,
    stats: Stats,
    /// Per upstream with keys: each key's state by its variable's name (`api_keys`).
    keys: std::collections::BTreeMap<String, Vec<crate::http::KeyView>>,
}

/// Each upstream's key states, for upstreams with keys.
fn key_states(relay: &Relay) -> Vec<(String, Vec<crate::http::KeyView>)> {
    relay
        .inner
        .exec
        .plan()
        .upstreams
        .iter()
        .map(|u| (u.name.clone(), relay.inner.client.key_states(&u.name)))
        .filter(|(_, k)| !k.is_empty())
        .collect()
}

async fn status(State(relay): State<Relay>) -> Response {
    let stats = relay.inner.exec.stats();
    axum::Json(StatusDoc {
        plan_version: stats.plan_version,
        stats,
        keys: key_states(&relay).into_iter().collect(),
    })
    .into_response()
}

async fn metrics_text(State(relay): State<Relay>) -> Response {
    let mut text = relay.inner.metrics.render(&relay.inner.exec.stats());
    metrics::render_keys(&mut text, &key_states(&relay));
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}
