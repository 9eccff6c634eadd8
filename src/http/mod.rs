//! The HTTP upstream client: connection pools per upstream (hyper over rustls, see
//! `transport`), built from the plan, and the classification of what comes back.
//!
//! [`Client`] holds connection pools per upstream (rustls, idle pool size and timeout from
//! the plan, no redirects: a redirect would carry the key to another host): one per
//! distinct connect timeout its calls use — the upstream's, and any a route sets — since
//! the connector applies a connect timeout per pool. Each attempt's timeout is the executor's [`Target::timeout`]. Keys come
//! from the environment variables the policy names, are checked at construction (an unset
//! key is an error there, not a warning as at `tollgate check`), and are held as
//! [`Secret`]s: never in `Debug`, logs or error messages.
//!
//! The plan's `pool.max_connections` is enforced here, since hyper's pool has no cap on
//! connections per host: each call holds one of the upstream's `max_connections` permits
//! from before it is sent until its response body is read (a stream: until it ends or is
//! dropped), and a call that finds none free waits for one within its attempt's time, then
//! fails as a `timeout`. The permits are shared by the upstream's pools (one per connect
//! timeout) and by [`TollgateMiddleware`]'s attempts.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate::exec::Executor;
//! use tollgate::http::Client;
//! use tollgate::plan::Plan;
//! use tollgate::policy::LoadOptions;
//!
//! let plan = Plan::load(&LoadOptions::new(["policies/relay.toml"]))
//!     .map_err(|d| d.render(false))?
//!     .plan;
//! let client = Client::from_plan(&plan)?; // reads RELAY_API_KEY, ANTHROPIC_API_KEY
//! let exec = Executor::new(plan)?;
//! let body = serde_json::json!({
//!     "model": "auto",
//!     "messages": [{"role": "user", "content": "Summarize this thread, quick"}],
//! });
//! let served = client.chat_completion(&exec, body.as_object().unwrap()).await?;
//! println!("{} answered in {} attempt(s) for ${:.6}", served.model_name(), served.attempts, served.cost_usd);
//! let json: serde_json::Value = serde_json::from_slice(&served.value)?;
//! # let _ = json; Ok(()) }
//! ```

pub mod classify;
pub mod headers;
mod key;
mod layer;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod stream;
mod transport;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use key::KeyPool;
pub use key::{resolve as resolve_key, KeyError, KeyView};
pub use layer::{Attempt, ChatLayer, ChatService};
#[cfg(feature = "reqwest-middleware")]
pub use middleware::{MiddlewareError, TollgateMiddleware};
pub use stream::{SseStream, StreamError, STREAM_IDLE, STREAM_INTERRUPTED};
pub use transport::BuildError;
use transport::{BodyError, ByteStream, SendError, Transport};

use crate::exec::{Done, ExecError, Executor, Failure, Request, Served, Target};
use crate::plan::{Plan, Upstream};
use crate::policy::Secret;
use classify::{classify, BODY_INCOMPLETE, BODY_TOO_LARGE, MAX_BODY_BYTES};

/// Looks up an environment variable.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why a [`Client`] could not be built. Never contains a key.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// One or more keys are missing or invalid (all are listed).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Keys(Vec<KeyError>),
    /// An upstream's connection pool could not be built (its TLS configuration).
    #[error("upstream `{upstream}`: cannot build the HTTP client: {source}")]
    Build {
        /// The upstream.
        upstream: String,
        /// The cause.
        #[source]
        source: BuildError,
    },
}

/// One upstream's pools and credentials.
struct UpstreamClient {
    settings: Upstream,
    /// One pool per connect timeout the plan's calls to this upstream use (the connector
    /// sets it per pool, not per request): the upstream's own first, then those routes set
    /// (`routes[].timeouts.connect`).
    http: Vec<(Duration, Transport)>,
    /// `pool.max_connections` permits: one held by each request in flight, from before it
    /// is sent until its response body is read (a stream: until it ends or is dropped).
    /// Kept across updates while `max_connections` is unchanged.
    connections: Arc<Semaphore>,
    /// Its keys in rotation (empty: calls go without `Authorization`).
    keys: KeyPool,
    /// `settings.base_url` parsed once (`None` if it does not parse: then each call parses
    /// and fails on its own), so a call does not parse the host again.
    base: Option<reqwest::Url>,
    /// The URIs of the fixed paths ([`FIXED_PATHS`]) under `base`, built once: most calls
    /// take theirs from here instead of joining and parsing one.
    fixed: Vec<(&'static str, hyper::Uri)>,
}

/// The paths calls use that do not depend on the request (Gemini's name the model).
const FIXED_PATHS: [&str; 4] = ["chat/completions", "completions", "embeddings", "messages"];

/// [`FIXED_PATHS`] under `base`, those that make a valid URI.
fn fixed_uris(base: Option<&reqwest::Url>) -> Vec<(&'static str, hyper::Uri)> {
    let join = |p: &'static str| {
        let url = join_path(base?.clone(), p)?;
        Some((p, hyper::Uri::try_from(url.as_str()).ok()?))
    };
    FIXED_PATHS.into_iter().filter_map(join).collect()
}

/// The OpenAI-format endpoints a call can go to, under `{base_url}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `chat/completions`.
    ChatCompletions,
    /// `completions` (the legacy text completions).
    Completions,
    /// `embeddings` (priced by input tokens; nothing is generated).
    Embeddings,
}

impl Endpoint {
    /// The path under the upstream's `base_url`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// HTTP clients for every upstream of a plan. Cheap to clone; clones share pools.
#[derive(Clone)]
pub struct Client {
    upstreams: Arc<ArcSwap<HashMap<String, Arc<UpstreamClient>>>>,
    env: EnvLookup,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.upstreams.load().keys().cloned().collect();
        names.sort();
        f.debug_struct("Client")
            .field("upstreams", &names)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Clients for every upstream of `plan`, keys read from the process environment.
    pub fn from_plan(plan: &Plan) -> Result<Client, ClientError> {
        Self::with_env(plan, Arc::new(|k: &str| std::env::var(k).ok()))
    }

    /// Like [`Client::from_plan`], with keys looked up by `env` (tests, demos, secret stores).
    pub fn with_env(plan: &Plan, env: EnvLookup) -> Result<Client, ClientError> {
        let c = Client {
            upstreams: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            env,
        };
        c.update(plan)?;
        Ok(c)
    }

    /// Rebuilds the clients of upstreams that are new or whose settings changed (pools of
    /// unchanged upstreams are kept) — the hook for a plan reload. On an error nothing
    /// changes, so the old plan keeps being served.
    pub fn update(&self, plan: &Plan) -> Result<(), ClientError> {
        let old = self.upstreams.load();
        let mut next = HashMap::with_capacity(plan.upstreams.len());
        let mut key_errors = Vec::new();
        for u in &plan.upstreams {
            let mut keys = Vec::with_capacity(u.api_keys.len());
            for k in &u.api_keys {
                match key::resolve(&u.name, k, &*self.env) {
                    Ok(secret) => keys.push((k.env.clone(), secret)),
                    Err(e) => key_errors.push(e),
                }
            }
            if keys.len() != u.api_keys.len() {
                continue;
            }
            if let Some(prev) = old.get(&u.name) {
                // The same keys: the pool (its rests and revocations) is kept too.
                let same_keys = prev
                    .keys
                    .secrets()
                    .map(Secret::expose)
                    .eq(keys.iter().map(|(_, k)| k.expose()));
                let connects = connect_timeouts(plan, u);
                let same_connects = prev.http.iter().map(|(d, _)| *d).eq(connects);
                if prev.settings == *u && same_keys && same_connects {
                    next.insert(u.name.clone(), prev.clone());
                    continue;
                }
            }
            let http = connect_timeouts(plan, u)
                .into_iter()
                .map(|d| Ok((d, build_http(u, d)?)))
                .collect::<Result<Vec<_>, ClientError>>()?;
            let base = reqwest::Url::parse(&u.base_url).ok();
            next.insert(
                u.name.clone(),
                Arc::new(UpstreamClient {
                    settings: u.clone(),
                    connections: old
                        .get(&u.name)
                        .filter(|p| p.settings.max_connections == u.max_connections)
                        .map_or_else(
                            || Arc::new(Semaphore::new(u.max_connections as usize)),
                            |p| p.connections.clone(),
                        ),
                    http,
                    keys: KeyPool::new(keys, u.api),
                    fixed: fixed_uris(base.as_ref()),
                    base,
                }),
            );
        }
        if !key_errors.is_empty() {
            return Err(ClientError::Keys(key_errors));
        }
        self.upstreams.store(Arc::new(next));
        Ok(())
    }

    /// The key header for `target`'s upstream (`Authorization`, `x-api-key`, …), if it has a key: the next key
    /// in rotation (the middleware spreads its attempts over the keys; it does not move an
    /// attempt to another key on a 429).
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) fn auth_for(
        &self,
        target: &Target,
    ) -> Result<Option<(reqwest::header::HeaderName, HeaderValue)>, Failure> {
        let up = self.upstream(target)?;
        let header = up.settings.api.key_header();
        Ok(up.keys.pick().map(|k| (header, k.auth().clone())))
    }

    /// How each key of upstream `name` stands (by its variable's name, never its value);
    /// empty for an unknown upstream or one without keys.
    pub fn key_states(&self, name: &str) -> Vec<KeyView> {
        self.upstreams
            .load()
            .get(name)
            .map_or_else(Vec::new, |u| u.keys.views())
    }

    /// One of `target`'s upstream's `pool.max_connections` permits, waited for within the
    /// attempt's time: for attempts that go out through another HTTP client.
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) async fn connection_for(
        &self,
        target: &Target,
    ) -> Result<OwnedSemaphorePermit, Failure> {
        Ok(self.upstream(target)?.connection(target).await?.0)
    }

    fn upstream(&self, target: &Target) -> Result<Arc<UpstreamClient>, Failure> {
        self.upstreams
            .load()
            .get(target.upstream_name())
            .cloned()
            .ok_or_else(|| {
                Failure::connect(format!(
                    "no HTTP client for upstream `{}` (plan reloaded without Client::update?)",
                    target.upstream_name()
                ))
            })
    }

    /// One attempt: `POST {base_url}/chat/completions` with `body`, its `model` replaced by
    /// the target's upstream model, classified into the body bytes with usage, or a
    /// [`Failure`]. This is the operation to pass to [`Executor::execute`].
    pub async fn send(
        &self,
        target: &Target,
        body: &Map<String, Value>,
    ) -> Result<Done<Bytes>, Failure> {
        self.send_to(target, Endpoint::ChatCompletions, body).await
    }

    /// Like [`Client::send`], to another endpoint (`POST {base_url}/{endpoint}`).
    pub async fn send_to(
        &self,
        target: &Target,
        endpoint: Endpoint,
        body: &Map<String, Value>,
    ) -> Result<Done<Bytes>, Failure> {
        let up = self.upstream(target)?;
        let call = wire::call_for(target, endpoint, body, false)?;
        let (_connection, left) = up.connection(target).await?;
        let resp = up.post_keyed(target, call, left).await?;
        let (status, headers) = (resp.status, resp.headers);
        let bytes = read_capped(resp.body, None)
            .await
            .map_err(|f| up.scrub(f))?;
        let api = up.settings.api;
        match wire::answer(api, status, &headers, bytes, target.upstream_model()) {
            Ok(d) => Ok(Done {
                rate_limit: up.upstream_window(d.rate_limit),
                ..d
            }),
            Err(mut f) => {
                f.rate_limit = up.upstream_window(f.rate_limit);
                Err(up.scrub(f))
            }
        }
    }

    /// One streaming attempt: like [`Client::send`] with `"stream": true` (and
    /// `stream_options.include_usage`, to price the call). It succeeds once the first
    /// event has arrived within `first_byte` (errors before that — a status, an error
    /// event, a stall, a broken stream — are failures the executor may retry or fail over);
    /// later chunks may each take up to `idle`.
    pub async fn send_stream(
        &self,
        target: &Target,
        body: &Map<String, Value>,
        first_byte: Option<Duration>,
        idle: Option<Duration>,
    ) -> Result<Done<SseStream>, Failure> {
        let timeouts = (first_byte, idle);
        self.send_stream_to(target, Endpoint::ChatCompletions, body, timeouts)
            .await
    }

    /// Like [`Client::send_stream`], to another endpoint (`completions`); `timeouts` are
    /// the first-byte and idle-chunk timeouts.
    pub async fn send_stream_to(
        &self,
        target: &Target,
        endpoint: Endpoint,
        body: &Map<String, Value>,
        (first_byte, idle): (Option<Duration>, Option<Duration>),
    ) -> Result<Done<SseStream>, Failure> {
        let up = self.upstream(target)?;
        let forward_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let call = wire::call_for(target, endpoint, body, true)?;
        // The first-byte clock starts once the call has a connection slot; the wait for
        // one came out of the attempt's time.
        let (connection, left) = up.connection(target).await?;
        let first_byte = first_byte.unwrap_or(left).min(left);
        let started = tokio::time::Instant::now();
        let resp = match tokio::time::timeout(first_byte, up.post_keyed(target, call, left)).await {
            Ok(r) => r?,
            Err(_) => return Err(first_byte_timeout(first_byte)),
        };
        let (status, headers) = (resp.status, resp.headers);
        let is_sse = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let api = up.settings.api;
        if !(200..300).contains(&status) || !is_sse {
            let bytes = read_capped(resp.body, None)
                .await
                .map_err(|f| up.scrub(f))?;
            return Err(up.scrub(wire::stream_failure(api, status, &headers, &bytes)));
        }
        let rate_limit = up.upstream_window(classify::rate_limit(&headers, SystemTime::now()));
        let mut s = SseStream {
            first: None,
            reader: stream::EventReader::new(resp.body),
            idle,
            usage: None,
            forward_usage,
            done: false,
            failure: None,
            connection: Some(connection),
            translate: wire::stream_translator(api, target.upstream_model()),
            queue: Default::default(),
        };
        let deadline = started + first_byte;
        let (first, kind) =
            match tokio::time::timeout_at(deadline, first_event(&mut s, &headers)).await {
                Ok(r) => r.map_err(|f| up.scrub(f))?,
                Err(_) => return Err(first_byte_timeout(first_byte)),
            };
        // Run the first event through the same bookkeeping as the rest.
        if s.book(kind) {
            s.first = Some(first);
        }
        // Until the stream ends, its success is provisional (see `Done::pending`).
        let pending = !s.done;
        Ok(Done {
            value: s,
            usage: None,
            rate_limit,
            pending,
        })
    }

    /// A chat completion under the executor: request attributes read from `body` (see
    /// [`request_attributes`]), attempts by [`Client::send`]. The value is the upstream's
    /// response body.
    pub async fn chat_completion(
        &self,
        exec: &Executor,
        body: &Map<String, Value>,
    ) -> Result<Served<Bytes>, ExecError> {
        self.chat_completion_for(exec, &request_attributes(body), body)
            .await
    }

    /// [`Client::chat_completion`] with request attributes of your own (a task, tags, a
    /// caller).
    pub async fn chat_completion_for(
        &self,
        exec: &Executor,
        req: &Request,
        body: &Map<String, Value>,
    ) -> Result<Served<Bytes>, ExecError> {
        exec.execute(req, |t, _| async move { self.send(&t, body).await })
            .await
    }

    /// A streamed chat completion under the executor: retries and failover happen only
    /// until the first event arrives. The route's `streaming` timeouts apply (first byte,
    /// idle chunk). Once the stream is read to its end (or abandoned), pass its usage to
    /// [`Executor::record_late_usage`] so spend and budgets count it, and its
    /// [`SseStream::failure`] to [`Executor::record_late_outcome`] so breakers and stats
    /// count a stream that broke mid-way (and a run of failures ends on one that did not).
    pub async fn chat_completion_stream(
        &self,
        exec: &Executor,
        req: &Request,
        body: &Map<String, Value>,
    ) -> Result<Served<SseStream>, ExecError> {
        exec.execute(req, |t, _| async move {
            let (fb, idle) = streaming_timeouts(&t);
            self.send_stream(&t, body, fb, idle).await
        })
        .await
    }
}

/// The route's streaming timeouts (first byte, idle chunk) for a target.
pub fn streaming_timeouts(t: &Target) -> (Option<Duration>, Option<Duration>) {
    route_of(t)
        .streaming
        .map_or((None, None), |s| (s.first_byte, s.idle_chunk))
}

/// The route a target is called for, by its id in the plan the target runs under.
fn route_of(t: &Target) -> &crate::plan::Route {
    t.plan().route(t.route())
}

/// The connect timeout of a call to `t`: its route target's (route, then upstream, then
/// defaults, resolved by the plan).
fn connect_timeout(t: &Target) -> Option<Duration> {
    route_of(t)
        .targets
        .iter()
        .find(|x| x.model == t.model())
        .map(|x| x.timeouts.connect)
}

/// Every connect timeout of calls to `u` under `plan`: the upstream's own first, then the
/// distinct ones of route targets on it, in order.
fn connect_timeouts(plan: &Plan, u: &Upstream) -> Vec<Duration> {
    let mut out = vec![u.timeouts.connect];
    let id = plan.upstream_by_name(&u.name);
    for r in &plan.routes {
        for t in &r.targets {
            let on_u = plan
                .models
                .get(t.model.index())
                .is_some_and(|m| Some(m.upstream) == id);
            if on_u && !out.contains(&t.timeouts.connect) {
                out.push(t.timeouts.connect);
            }
        }
    }
    out
}

/// A connection pool for `u` with this connect timeout.
fn build_http(u: &Upstream, connect: Duration) -> Result<Transport, ClientError> {
    Transport::new(u, connect).map_err(|source| ClientError::Build {
        upstream: u.name.clone(),
        source,
    })
}

/// The first event of a stream with data (keep-alive comments before it are dropped), or
/// the failure that came instead: the stream ended or broke, or its first event is an
/// error (classified as an answer with that error body would be).
async fn first_event(
    s: &mut SseStream,
    headers: &HeaderMap,
) -> Result<(Bytes, stream::EventKind), Failure> {
    loop {
        let ev = match s.pull(None).await {
            None => {
                return Err(Failure::status(502)
                    .code(BODY_INCOMPLETE)
                    .message("the stream ended before its first event"))
            }
            Some(Err(e)) => {
                return Err(Failure::status(502)
                    .code(BODY_INCOMPLETE)
                    .message(e.to_string()))
            }
            Some(Ok(ev)) => ev,
        };
        let kind = stream::event_kind(&ev);
        match &kind {
            stream::EventKind::Comment => continue,
            stream::EventKind::Chunk { error: Some(e), .. } => {
                let body =
                    serde_json::to_vec(&serde_json::json!({ "error": e })).unwrap_or_default();
                return Err(classify(502, headers, &body, SystemTime::now())
                    .err()
                    .unwrap_or_else(|| Failure::status(502)));
            }
            _ => return Ok((ev, kind)),
        }
    }
}

fn first_byte_timeout(d: Duration) -> Failure {
    Failure::timeout().message(format!("no first event within {d:?}"))
}

impl UpstreamClient {
    /// A permit of `pool.max_connections`, waiting for one within the attempt's time;
    /// with the time left for the call.
    async fn connection(
        &self,
        target: &Target,
    ) -> Result<(OwnedSemaphorePermit, Duration), Failure> {
        if let Ok(p) = self.connections.clone().try_acquire_owned() {
            return Ok((p, target.timeout()));
        }
        let started = tokio::time::Instant::now();
        let wait = self.connections.clone().acquire_owned();
        match tokio::time::timeout(target.timeout(), wait).await {
            Ok(Ok(p)) => Ok((p, target.timeout().saturating_sub(started.elapsed()))),
            // The semaphore is never closed; a closed one would hand out no permit either.
            Ok(Err(_)) | Err(_) => Err(Failure::timeout().message(format!(
                "all {} connections to upstream `{}` stayed busy for {:?} (pool.max_connections)",
                self.settings.max_connections,
                self.settings.name,
                target.timeout()
            ))),
        }
    }

    /// Sends the call with the next key in rotation. An answer that blames the key rather
    /// than the upstream — 429, 401, 403 — moves the call to another usable key at once,
    /// within the attempt's time, before it counts as the upstream's failure (each key is
    /// tried at most once: a 429 rests it, a 401/403 revokes it).
    async fn post_keyed(
        &self,
        target: &Target,
        call: wire::Call,
        left: Duration,
    ) -> Result<transport::Answer, Failure> {
        let uri = self.uri_for(target, &call.path)?;
        let payload = Bytes::from(call.body);
        let started = tokio::time::Instant::now();
        loop {
            let key = self.keys.pick();
            if key.is_none() && self.keys.len() > 0 {
                return Err(Failure::status(401).message(format!(
                    "every API key of upstream `{}` was refused (401/403): none left in rotation",
                    self.settings.name
                )));
            }
            let time = left.saturating_sub(started.elapsed());
            let auth = key.map(key::PooledKey::auth);
            let resp = self
                .post(target, uri.clone(), time, payload.clone(), auth)
                .await?;
            let Some(key) = key else { return Ok(resp) };
            let status = resp.status;
            let now = SystemTime::now();
            let window = classify::rate_limit(&resp.headers, now);
            let reset = classify::retry_after(&resp.headers, now).or(window.map(|w| w.reset));
            let exhausted = window.is_some_and(|w| w.remaining == 0);
            self.keys
                .observe(&self.settings.name, key, status, reset, exhausted);
            if matches!(status, 401 | 403 | 429) && self.keys.has_other(key) {
                tracing::debug!(target: "tollgate::http", upstream = %self.settings.name, key_env = %key.env, status, "moving the call to another key");
                continue;
            }
            return Ok(resp);
        }
    }

    /// Rate-limit headers as the executor's limiter may use them: with several keys they
    /// describe one key's window, not the upstream's, and stay with the key pool.
    fn upstream_window(
        &self,
        w: Option<crate::exec::RateLimitInfo>,
    ) -> Option<crate::exec::RateLimitInfo> {
        w.filter(|_| self.keys.len() <= 1)
    }

    /// `{base_url}/{path}` (`path` may end in `?query`): a fixed path's URI built once, or
    /// the parsed `base_url` of the upstream when the target's is the same (a target of
    /// another plan version may differ: parsed then) with the path's segments appended.
    fn uri_for(&self, target: &Target, path: &str) -> Result<hyper::Uri, Failure> {
        let same_base = self.settings.base_url == target.base_url();
        if let Some((_, uri)) = self.fixed.iter().find(|(p, _)| same_base && *p == path) {
            return Ok(uri.clone());
        }
        let bad = |e: &dyn std::fmt::Display| {
            Failure::connect(format!("base_url `{}`: {e}", target.base_url()))
        };
        let url = match &self.base {
            Some(b) if same_base => b.clone(),
            _ => reqwest::Url::parse(target.base_url()).map_err(|e| bad(&e))?,
        };
        let url = join_path(url, path).ok_or_else(|| bad(&"cannot be a base URL"))?;
        hyper::Uri::try_from(url.as_str()).map_err(|e| bad(&e))
    }

    async fn post(
        &self,
        target: &Target,
        uri: hyper::Uri,
        timeout: Duration,
        payload: Bytes,
        auth: Option<&HeaderValue>,
    ) -> Result<transport::Answer, Failure> {
        let api = self.settings.api;
        let key = auth.map(|a| (api.key_header(), a.clone()));
        let version = match api {
            wire::Api::Anthropic => Some(self.anthropic_version()?),
            _ => None,
        };
        self.http_for(target)
            .post(uri, payload, [key, version], timeout)
            .await
            .map_err(|e| self.scrub(send_failure(e)))
    }

    /// The `anthropic-version` header, or the failure of a version no header can carry.
    fn anthropic_version(&self) -> Result<(HeaderName, HeaderValue), Failure> {
        let v = &self.settings.anthropic_version;
        let value = HeaderValue::from_str(v).map_err(|_| {
            Failure::connect(format!(
                "upstream `{}`: anthropic_version `{v}` is not a valid header value",
                self.settings.name
            ))
        })?;
        Ok((HeaderName::from_static("anthropic-version"), value))
    }

    /// The pool whose connect timeout is the target's (the upstream's own when the plan it
    /// runs under is not the one the client was built from).
    fn http_for(&self, target: &Target) -> &Transport {
        let want = connect_timeout(target).unwrap_or(self.settings.timeouts.connect);
        let found = self.http.iter().find(|(d, _)| *d == want);
        // `update` always builds the upstream's own client first.
        &found.unwrap_or(&self.http[0]).1
    }

    /// Removes the key from a failure's message, should an upstream echo it.
    fn scrub(&self, mut f: Failure) -> Failure {
        for k in self.keys.secrets() {
            if f.message.contains(k.expose()) {
                f.message = f.message.replace(k.expose(), "<redacted>");
            }
        }
        f
    }
}

/// `base` with `path` (`a/b`, maybe `?query`) appended after its path, one slash between
/// them whether `base` ends in one or not; `None` for a URL that cannot be a base.
fn join_path(mut base: reqwest::Url, path: &str) -> Option<reqwest::Url> {
    let (path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    base.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(path.split('/'));
    base.set_query(query);
    Some(base)
}

/// An exchange without a response as a failure class: connect (nothing was sent),
/// timeout, or a broken exchange (a `connect` failure too: the connection broke).
fn send_failure(e: SendError) -> Failure {
    match e {
        SendError::Connect(m) | SendError::Broken(m) => Failure::connect(m),
        SendError::Timeout(m) => Failure::timeout().message(m),
    }
}

/// Reads a body up to [`MAX_BODY_BYTES`] (`length`: its announced length, refused at once
/// when over).
async fn read_capped(mut body: ByteStream, length: Option<u64>) -> Result<Bytes, Failure> {
    if length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                if buf.len() + c.len() > MAX_BODY_BYTES {
                    return Err(too_large());
                }
                buf.extend_from_slice(&c);
            }
            Err(BodyError::Timeout) => {
                return Err(Failure::timeout().message("timed out reading the body"))
            }
            Err(BodyError::Broken(m)) => {
                return Err(Failure::status(502).code(BODY_INCOMPLETE).message(m))
            }
        }
    }
    Ok(buf.freeze())
}

fn too_large() -> Failure {
    Failure::status(502)
        .code(BODY_TOO_LARGE)
        .message(format!("body over {MAX_BODY_BYTES} bytes"))
}

/// [`request_attributes`] for a call to `endpoint`: the prompt is the chat's messages, a
/// completion's `prompt` or an embedding's `input` (strings, or arrays of strings); an
/// embedding reserves no output tokens.
pub fn request_attributes_for(endpoint: Endpoint, body: &Map<String, Value>) -> Request {
    let field = match endpoint {
        Endpoint::ChatCompletions => return request_attributes(body),
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    let mut req = request_attributes(body);
    let text = match body.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let parts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            parts.join("\n")
        }
        _ => String::new(),
    };
    if !text.is_empty() {
        req.prompt = Some(text);
    }
    if endpoint == Endpoint::Embeddings {
        req.max_tokens = Some(0);
    }
    req
}

/// The request attributes routes match on, from an OpenAI chat-completions body: `model`,
/// `max_tokens` (or `max_completion_tokens`), and the prompt — every message's text
/// content (strings, or `{"type":"text","text":…}` parts), joined by newlines.
///
/// ```
/// let body = serde_json::json!({
///     "model": "auto", "max_tokens": 300,
///     "messages": [{"role": "system", "content": "Be brief"},
///                  {"role": "user", "content": [{"type": "text", "text": "quick question"}]}],
/// });
/// let req = tollgate::http::request_attributes(body.as_object().unwrap());
/// assert_eq!(req.prompt.as_deref(), Some("Be brief\nquick question"));
/// assert_eq!(req.max_tokens, Some(300));
/// ```
pub fn request_attributes(body: &Map<String, Value>) -> Request {
    let mut req = Request::new();
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        req.model = Some(m.to_string());
    }
    req.max_tokens = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64);
    let mut prompt = String::new();
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for msg in msgs {
            let mut push = |s: &str| {
                if !prompt.is_empty() {
                    prompt.push('\n');
                }
                prompt.push_str(s);
            };
            match msg.get("content") {
                Some(Value::String(s)) => push(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            push(t);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if !prompt.is_empty() {
        req.prompt = Some(prompt);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_the_base_url_with_one_slash_and_keep_the_query() {
        let join = |base: &str, path: &str| {
            join_path(reqwest::Url::parse(base).unwrap(), path).map(|u| u.to_string())
        };
        for base in ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/"] {
            assert_eq!(
                join(base, "chat/completions").unwrap(),
                "http://127.0.0.1:9/v1/chat/completions"
            );
        }
        assert_eq!(
            join(
                "https://g.example/v1beta",
                "models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            )
            .unwrap(),
            "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(join("http://h", "messages").unwrap(), "http://h/messages");
        assert!(join("mailto:x@y", "messages").is_none());
    }

    #[test]
    fn attributes_ignore_odd_shapes() {
        let body = serde_json::json!({"model": 3, "max_tokens": -1, "messages": [{"content": null}, 7, {"content": [{"image_url": "x"}]}]});
        let r = request_attributes(body.as_object().unwrap());
        assert_eq!(r, Request::new());
        let body = serde_json::json!({"max_completion_tokens": 9});
        assert_eq!(
            request_attributes(body.as_object().unwrap()).max_tokens,
            Some(9)
        );
    }
}
