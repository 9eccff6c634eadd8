//! State shared by several instances: the seam between the executor and a state backend.
//!
//! A limiter or budget with `state = "shared"` keeps its bucket or its spend in a
//! [`StateBackend`] (Redis behind the `redis` feature, [`MemoryBackend`] in process for
//! tests) instead of this process's atomics. Local limiters are untouched: they stay the
//! direct atomics of [`crate::exec::limit`], with no dynamic dispatch; only a shared limiter
//! pays for the `dyn StateBackend` call, next to which a network round trip dominates.
//!
//! # Leases: the local fast path
//!
//! A shared rate limiter does not ask the backend for every call. It takes a batch of
//! permits in one GCRA decision (the backend grants as many as its bucket holds, at least
//! one), and keeps them in a local [`Lease`] that later calls spend with one atomic
//! decrement. When a call leaves the lease at or below half its size, one background task
//! tops it up (a *prefetch*: `tokio::spawn`, bounded by the backend timeout, failures going
//! through the same breaker), so callers normally never find it empty; a caller that does
//! waits for the batch in flight, else asks for a batch itself.
//!
//! **The bound.** Count a permit as *held* by an instance from the moment the backend
//! grants it until a call spends it (or it is dropped): permits in a lease and permits on
//! their way to one. At most one batch is in flight per instance (a single-flight flag
//! shared by prefetches and callers), and a batch asks for at most `lease − 1 − in lease`
//! permits ([`Lease::want`]) — plus one that the asking caller spends at once, which is
//! never held. Permits granted beyond what the lease has room for (it keeps at most
//! `lease − 1` whatever the interleaving) are dropped, which can only under-admit. So an
//! instance holds at most `lease − 1` permits at any time, prefetched ones included.
//!
//! The backend's GCRA grants at most `rate·w + burst` permits in any window of length `w`
//! (in the backend's clock). A call admitted in the window spends either a permit granted in
//! the window or one held at the window's start. So with `n` instances, in any window `w`:
//!
//! > admitted ≤ `rate·w + burst + n·(lease − 1)`  (≤ `rate·w + burst + n·lease`).
//!
//! With `lease = 1` there is no local batch and the bound is the backend's own.
//!
//! # Backend failures
//!
//! Every backend call is bounded by `[state.redis] timeout`. A failure (timeout, connection
//! refused, script error) opens a small breaker around the backend for [`OPEN_FOR`]: while it
//! is open, calls do not touch the backend at all (a dead Redis costs one timeout per
//! `OPEN_FOR`, not one per call), and follow `fail_mode`:
//! - `open`: a local limiter (or budget) scaled by `1 / expected_instances` decides;
//! - `closed`: the call is refused.
//!
//! After `OPEN_FOR` one call probes the backend again; success closes the breaker. Every
//! failure logs a `tracing::warn!` line (target `tollgate::shared`) and counts in
//! [`SharedHealth::failures`].
//!
//! Settlements after a call (a budget's actual cost, a token limiter's actual usage, spend
//! learned late) are not decisions: they are sent in the background, retried after each
//! pause of [`SETTLE_RETRIES`], and one still failing is counted in
//! [`SharedHealth::lost_settlements`] and logged ([`Shared::settle_later`]).
//!
//! # Breaker signals
//!
//! Breakers with `state = "shared"` share their trips, not their decisions: see
//! [`signals`] (a replica learns of another's trip within one poll interval plus round
//! trips).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

mod lease;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod signals;

pub use lease::Lease;
pub use memory::MemoryBackend;

use super::clock::{nanos, Clock, TokioClock};
use super::limit::{
    LimitError, RateConfig, RateLimiter, TokenConfig, TokenLimiter, TokenReservation,
};
use super::price::{BudgetConfig, BudgetLedger, BudgetReservation, DetachedReservation, Usd};
use super::timeout::AttemptTimeout;
use crate::plan::{FailMode, RedisSettings};

/// A boxed future, as the backend trait returns.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long the breaker around the backend stays open after a failure.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// A GCRA decision of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many units were admitted (between the asked minimum and maximum).
    Granted(u64),
    /// Not even the minimum fits: retry after this long.
    Refused(Duration),
}

/// The backend could not be reached or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct Unavailable(pub String);

/// Where shared limiter buckets and budget spend live. Times are the backend's own clock,
/// so instances with skewed clocks agree.
pub trait StateBackend: Send + Sync + fmt::Debug {
    /// GCRA on `key` (emission interval `t_us` µs per unit, capacity `cap_us` µs): admit as
    /// many units as fit, between `min` and `max`, in one atomic step.
    fn admit<'a>(
        &'a self,
        key: &'a str,
        t_us: u64,
        cap_us: u64,
        min: u64,
        max: u64,
    ) -> BoxFut<'a, Result<Grant, Unavailable>>;

    /// Budget `key` with windows of `window_us`: add `amount` (nano-dollars) to the current
    /// window's committed spend if it stays within `limit`. `Some(window index)` if
    /// reserved, `None` if refused.
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        window_us: u64,
        limit: u64,
        amount: u64,
    ) -> BoxFut<'a, Result<Option<u64>, Unavailable>>;

    /// Shifts the GCRA bucket `key` by `delta_us` µs of work: positive charges (from
    /// `max(TAT, now)`, unconditionally: the units were spent), negative refunds (an empty
    /// bucket stays empty). Reconciles a token reservation with the actual usage.
    fn adjust_rate<'a>(
        &'a self,
        key: &'a str,
        delta_us: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>>;

    /// Adds `delta` nano-dollars (negative: releases) to window `window` of budget `key`;
    /// nothing if that window is over.
    fn adjust<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        delta: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>>;

    /// Publishes that shared breaker `key` tripped open: the signal lives for `open_for`
    /// (an existing signal with longer to live is kept). See [`signals`].
    fn signal_open<'a>(
        &'a self,
        key: &'a str,
        open_for: Duration,
    ) -> BoxFut<'a, Result<(), Unavailable>>;

    /// For each of `keys`, in one round trip, how long its open signal has left (`None`:
    /// no signal). Remaining times, not deadlines, so instances with skewed clocks agree.
    fn open_signals<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFut<'a, Result<Vec<Option<Duration>>, Unavailable>>;
}

/// Health of the backend, shared by every shared limiter and budget of a runtime: a small
/// breaker (open for [`OPEN_FOR`] after a failure) and counters.
#[derive(Debug, Default)]
pub struct SharedHealth {
    /// Nanoseconds (executor clock) until which the backend is not tried; 0 = closed.
    open_until: AtomicU64,
    /// Backend failures seen (timeouts, errors).
    pub failures: AtomicU64,
    /// Decisions taken by the fallback (`fail_mode`) because the backend was unavailable.
    pub fallbacks: AtomicU64,
    /// Backend round trips.
    pub round_trips: AtomicU64,
    /// Settlements (budget adjustments, token reconciliations) given up after their retries.
    pub lost_settlements: AtomicU64,
    /// Trips of this instance's shared breakers published ([`signals`]).
    pub signals_sent: AtomicU64,
    /// Shared breakers opened because another instance tripped them ([`signals`]).
    pub signals_received: AtomicU64,
}

impl SharedHealth {
    /// Whether to try the backend at `now`. When the breaker's time is up exactly one caller
    /// gets `true` (the probe); the others keep falling back for another `OPEN_FOR`.
    pub fn should_try(&self, now: u64) -> bool {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        now >= until
            && self
                .open_until
                .compare_exchange(until, now + OPEN_FOR.as_nanos() as u64, Relaxed, Relaxed)
                .is_ok()
    }

    fn failed(&self, what: &str, e: &Unavailable, now: u64) {
        self.failures.fetch_add(1, Relaxed);
        let was = self
            .open_until
            .swap(now + OPEN_FOR.as_nanos() as u64, Relaxed);
        if was == 0 {
            tracing::warn!(target: "tollgate::shared", %what, error = %e, open_for = ?OPEN_FOR, "shared state unavailable: falling back to fail_mode");
        }
    }

    fn succeeded(&self) {
        if self.open_until.swap(0, Relaxed) != 0 {
            tracing::info!(target: "tollgate::shared", "shared state reachable again");
        }
    }

    fn lost(&self, s: &Settlement, error: &str) {
        self.lost_settlements.fetch_add(1, Relaxed);
        tracing::warn!(target: "tollgate::shared", settlement = ?s, %error, "shared settlement lost after its retries");
    }

    /// Whether the breaker is open (the backend is considered down).
    pub fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }
}

/// A backend with the settings every shared entity of a plan uses.
#[derive(Clone)]
pub struct Shared {
    /// The backend.
    pub backend: Arc<dyn StateBackend>,
    /// `[state.redis]`.
    pub settings: RedisSettings,
    /// The backend's health.
    pub health: Arc<SharedHealth>,
    /// The executor's clock: round-trip timeouts and settlement retries wait on it.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The backend key of an entity: `key_prefix + kind + ":" + name`.
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.settings.key_prefix)
    }

    /// How many instances share the state (`expected_instances`, at least 1): the local
    /// fallbacks take this share of each limit.
    fn instances(&self) -> u64 {
        u64::from(self.settings.expected_instances.max(1))
    }

    /// A decision the backend could not answer: the local fallback's (`open`) with
    /// `fail_mode = "open"`, `closed` (a refusal) with `fail_mode = "closed"`.
    fn unavailable<T>(&self, open: impl FnOnce() -> T, closed: T) -> T {
        match self.settings.fail_mode {
            FailMode::Open => open(),
            FailMode::Closed => closed,
        }
    }

    /// Pairs a backend with a plan's settings, waiting on tokio's clock.
    pub fn new(backend: Arc<dyn StateBackend>, settings: RedisSettings) -> Self {
        Self::with_clock(backend, settings, Arc::new(TokioClock::new()))
    }

    /// Pairs a backend with a plan's settings, waiting on `clock` (the executor's).
    pub fn with_clock(
        backend: Arc<dyn StateBackend>,
        settings: RedisSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Shared {
            backend,
            settings,
            health: Arc::new(SharedHealth::default()),
            clock,
        }
    }

    /// One backend call, unless the breaker around the backend is open; `None` (counted as
    /// a fallback) when the backend is not tried or fails.
    async fn call<T>(
        &self,
        what: &str,
        now: u64,
        f: BoxFut<'_, Result<T, Unavailable>>,
    ) -> Option<T> {
        if !self.health.should_try(now) {
            self.health.fallbacks.fetch_add(1, Relaxed);
            return None;
        }
        let r = self.attempt(what, now, f).await;
        if r.is_none() {
            self.health.fallbacks.fetch_add(1, Relaxed);
        }
        r
    }

    /// One backend call bounded by the timeout, the breaker already consulted: a failure
    /// opens it (logged, counted); `None` on failure.
    async fn attempt<T>(
        &self,
        what: &str,
        now: u64,
        f: BoxFut<'_, Result<T, Unavailable>>,
    ) -> Option<T> {
        self.health.round_trips.fetch_add(1, Relaxed);
        let r = match AttemptTimeout::new(f, self.settings.timeout, &*self.clock).await {
            Ok(r) => r,
            Err(_) => Err(Unavailable(format!(
                "no answer within {:?}",
                self.settings.timeout
            ))),
        };
        match r {
            Ok(v) => {
                self.health.succeeded();
                Some(v)
            }
            Err(e) => {
                self.health.failed(what, &e, now);
                None
            }
        }
    }
}

/// A reconciliation sent to the backend after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Adds `delta` nano-dollars to window `window` of budget `key`.
    Budget {
        /// Budget key (without the window).
        key: String,
        /// Window index.
        window: u64,
        /// Nano-dollars (negative: released).
        delta: i64,
    },
    /// Adds `amount` nano-dollars to the current window of budget `key`, unconditionally
    /// (usage learned after the call's reservation was settled: a stream's last chunk).
    Charge {
        /// Budget key (without the window).
        key: String,
        /// Window length (µs).
        window_us: u64,
        /// Nano-dollars.
        amount: u64,
    },
    /// Shifts GCRA bucket `key` by `delta_us` (token limiter: actual minus estimate).
    Rate {
        /// Bucket key.
        key: String,
        /// Microseconds of work (negative: refunded).
        delta_us: i64,
    },
}

/// Pauses before the retries of a failed settlement: four tries within about 0.6 s plus
/// their timeouts, far inside any budget window or token minute (a budget adjustment that
/// arrives after its window is over changes nothing: the key has expired).
pub const SETTLE_RETRIES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

impl Shared {
    /// Sends `s` in the background, retrying a failure after each pause of
    /// [`SETTLE_RETRIES`]; each failed try counts in [`SharedHealth::failures`], a settlement
    /// still failing after the last try counts in [`SharedHealth::lost_settlements`] and logs
    /// a warning. A lost release or refund over-counts (conservative); a lost charge
    /// under-counts by that call's excess over its reservation. Settlements do not consult
    /// the breaker (they are not decisions) and do not open it.
    pub fn settle_later(&self, s: Settlement) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.health.lost(&s, "no tokio runtime to send it from");
            return;
        };
        let (backend, health) = (self.backend.clone(), self.health.clone());
        let clock = self.clock.clone();
        let timeout = self.settings.timeout;
        handle.spawn(async move {
            let mut error = String::new();
            let pauses = std::iter::once(Duration::ZERO).chain(SETTLE_RETRIES);
            for pause in pauses {
                if !pause.is_zero() {
                    clock.sleep(pause).await;
                }
                health.round_trips.fetch_add(1, Relaxed);
                let f = match &s {
                    Settlement::Budget { key, window, delta } => {
                        backend.adjust(key, *window, *delta)
                    }
                    Settlement::Charge {
                        key,
                        window_us,
                        amount,
                    } => {
                        // A reserve with no limit is an unconditional add to the window.
                        let r = backend.reserve(key, *window_us, u64::MAX, *amount);
                        Box::pin(async move { r.await.map(drop) })
                    }
                    Settlement::Rate { key, delta_us } => backend.adjust_rate(key, *delta_us),
                };
                match AttemptTimeout::new(f, timeout, &*clock).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => error = e.0,
                    Err(_) => error = format!("no answer within {timeout:?}"),
                }
                health.failures.fetch_add(1, Relaxed);
            }
            health.lost(&s, &error);
        });
    }
}

/// A request-rate limiter shared through the backend, with a local lease and a fallback.
///
/// Shared as an `Arc`: [`check`](Self::check) may start a background refill (prefetch)
/// that holds the limiter until it ends.
#[derive(Debug)]
pub struct SharedRate {
    shared: Shared,
    key: String,
    t_us: u64,
    cap_us: u64,
    lease: Lease,
    /// A batch request (a caller's or a prefetch) is in flight: one at a time per instance,
    /// so a burst of callers does not take (and drop) many batches, and what the lease holds
    /// plus what is on its way stays within `lease − 1`.
    refilling: AtomicBool,
    /// Wakes the callers waiting for the batch in flight.
    refilled: tokio::sync::Notify,
    /// Executor-clock nanoseconds before which no prefetch starts (the backend refused the
    /// last one: the shared bucket is empty until then).
    prefetch_after: AtomicU64,
    /// Decides while the backend is unavailable with `fail_mode = "open"`: the configured
    /// rate and burst divided by `expected_instances`.
    fallback: RateLimiter,
    /// Backend requests by kind: background prefetches, batches asked by a caller that
    /// found the lease empty, single permits asked by callers that waited for batches in
    /// vain.
    pub requests: RateRequests,
}

/// Backend requests of a [`SharedRate`], by kind.
#[derive(Debug, Default)]
pub struct RateRequests {
    /// Background refills started by a take that left the lease low.
    pub prefetches: AtomicU64,
    /// Batches asked by a caller that found the lease empty.
    pub batches: AtomicU64,
    /// Single permits asked by callers that found the lease empty after waiting for batches.
    pub singles: AtomicU64,
}

/// Microseconds, rounded up (never looser than configured).
fn micros_up(ns: f64) -> u64 {
    (ns / 1000.0).ceil().max(1.0) as u64
}

/// Clears the single-flight flag and wakes the waiters when a batch request ends, even if
/// it is cancelled mid-way.
struct Batch<'a>(Option<&'a SharedRate>);

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.0 {
            r.end_batch();
        }
    }
}

/// [`Batch`] for a prefetch running in its own task.
struct OwnedBatch(Arc<SharedRate>);

impl Drop for OwnedBatch {
    fn drop(&mut self) {
        self.0.end_batch();
    }
}

impl SharedRate {
    /// A shared limiter for `cfg` under key `prefix + "rate:" + name`.
    pub fn new(shared: Shared, name: &str, cfg: RateConfig) -> Result<Self, String> {
        let t_us = micros_up(1e9 / cfg.rate_per_sec);
        let n = shared.instances();
        let fallback = RateLimiter::new(RateConfig {
            rate_per_sec: cfg.rate_per_sec / n as f64,
            burst: (cfg.burst / n as u32).max(1),
        })
        .map_err(|e| e.to_string())?;
        Ok(SharedRate {
            key: shared.key("rate", name),
            t_us,
            cap_us: t_us.saturating_mul(cfg.burst as u64),
            lease: Lease::new(shared.settings.lease),
            refilling: AtomicBool::new(false),
            refilled: tokio::sync::Notify::new(),
            prefetch_after: AtomicU64::new(0),
            shared,
            fallback,
            requests: RateRequests::default(),
        })
    }

    fn end_batch(&self) {
        self.refilling.store(false, Relaxed);
        self.refilled.notify_waiters();
    }

    /// Admits one call: from the lease (topping it up in the background when it runs low),
    /// else from the backend (refilling the lease), else per `fail_mode`.
    pub async fn check(self: &Arc<Self>, now: u64) -> Result<(), LimitError> {
        if self.lease.take() {
            if self.lease.low() {
                self.prefetch(now);
            }
            if self.refilling.load(Relaxed) {
                // A batch is in flight: its task (and the backend connection's) needs this
                // worker too. Spending leased permits never awaits anything, so a caller
                // looping on `execute` would keep the worker until the lease is empty and
                // the prefetch would come too late: yield once the coop budget is spent.
                tokio::task::consume_budget().await;
            }
            return Ok(());
        }
        // One batch request at a time per instance. Callers that find the lease empty while
        // a batch (a prefetch or another caller's) is in flight wait for it, and for the
        // next ones, instead of asking for a permit each: round trips fall towards one per
        // `lease / 2` calls.
        // Waiting is bounded by one backend timeout in all: past it, the batches are too slow
        // to wait for and the caller asks for a permit of its own.
        let mut batch = false;
        if self.lease.size() > 1 {
            let clock = &*self.shared.clock;
            let deadline = clock
                .now()
                .saturating_add(nanos(self.shared.settings.timeout));
            loop {
                if !self.refilling.swap(true, Relaxed) {
                    batch = true;
                    break;
                }
                let n = self.refilled.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                let left = Duration::from_nanos(deadline.saturating_sub(clock.now()));
                if self.refilling.load(Relaxed)
                    && AttemptTimeout::new(n, left, clock).await.is_err()
                {
                    break;
                }
                if self.lease.take() {
                    return Ok(());
                }
                if clock.now() >= deadline {
                    break;
                }
            }
        }
        let _batch = Batch(batch.then_some(&**self));
        // The batch: this call's permit plus what the lease has room for.
        let max = if batch { self.lease.want() + 1 } else { 1 };
        let kind = if batch {
            &self.requests.batches
        } else {
            &self.requests.singles
        };
        kind.fetch_add(1, Relaxed);
        let f = self
            .shared
            .backend
            .admit(&self.key, self.t_us, self.cap_us, 1, max);
        match self.shared.call("rate limiter", now, f).await {
            Some(Grant::Granted(n)) => {
                self.lease.refill(n.saturating_sub(1));
                Ok(())
            }
            // Callers that raced past an empty lease may find it refilled by now.
            Some(Grant::Refused(_)) if self.lease.take() => Ok(()),
            Some(Grant::Refused(retry_in)) => Err(LimitError::RateLimited { retry_in }),
            None => self.shared.unavailable(
                || self.fallback.check(now).map_err(Into::into),
                Err(LimitError::SharedUnavailable),
            ),
        }
    }

    /// Starts a background refill of the lease (single-flight: nothing if a batch is already
    /// in flight, if the backend refused the last one less than its `retry_in` ago, if the
    /// breaker around the backend is open, or outside a tokio runtime). Bounded by the
    /// backend timeout; a failure opens the breaker like any other (logged, counted).
    fn prefetch(self: &Arc<Self>, now: u64) {
        if now < self.prefetch_after.load(Relaxed) || self.refilling.swap(true, Relaxed) {
            return;
        }
        let batch = OwnedBatch(self.clone());
        let want = self.lease.want();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if want == 0 || !self.shared.health.should_try(now) {
            return;
        }
        self.requests.prefetches.fetch_add(1, Relaxed);
        handle.spawn(async move {
            let me = &*batch.0;
            let f = me
                .shared
                .backend
                .admit(&me.key, me.t_us, me.cap_us, 1, want);
            match me.shared.attempt("rate limiter (prefetch)", now, f).await {
                Some(Grant::Granted(n)) => {
                    me.lease.refill(n);
                }
                Some(Grant::Refused(retry_in)) => {
                    me.prefetch_after
                        .store(now.saturating_add(nanos(retry_in)), Relaxed);
                }
                // Logged and counted by `attempt`; callers that find the lease empty follow
                // `fail_mode` while the breaker is open.
                None => {}
            }
            drop(batch);
        });
    }

    /// The backend key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The backend's health (shared by every shared entity of the runtime).
    pub fn health(&self) -> &SharedHealth {
        &self.shared.health
    }

    /// Permits held in the local lease.
    pub fn leased(&self) -> u32 {
        self.lease.held()
    }
}

/// A tokens-per-minute limiter shared through the backend: each call reserves its estimate
/// with one GCRA decision (no lease: a call's tokens vary too much to batch), and the
/// difference with the actual usage is charged or refunded afterwards
/// ([`StateBackend::adjust_rate`]).
///
/// The bucket is kept in microseconds of work: a reservation of `k` tokens costs
/// `⌈k · 60 s / tokens_per_minute⌉` µs, so rounding makes it stricter by under one
/// microsecond's worth of tokens per call. In any window `w` the tokens reserved across the
/// cluster stay within `tpm·w/60 s + burst`; settles above the estimate are charged
/// afterwards (as with a local limiter), so actual usage exceeds that by at most what calls
/// used beyond their estimates.
#[derive(Debug)]
pub struct SharedTokens {
    shared: Shared,
    key: String,
    /// Microseconds of bucket per token.
    us_per_token: f64,
    /// Bucket capacity (µs): the burst's worth of tokens.
    cap_us: u64,
    burst: u64,
    /// Decides while the backend is unavailable with `fail_mode = "open"`: the configured
    /// tokens per minute and burst divided by `expected_instances`.
    fallback: TokenLimiter,
}

/// Tokens reserved on a [`SharedTokens`]. Settle it with the actual usage; dropping it
/// keeps the estimate charged (as [`TokenReservation`] does).
#[derive(Debug)]
#[must_use = "settle the reservation with the actual usage, or drop it to keep the estimate"]
pub enum SharedTokenReservation<'a> {
    /// Reserved in the backend: the limiter and the µs charged.
    Shared(&'a SharedTokens, u64),
    /// Reserved in the local fallback limiter.
    Local(TokenReservation<'a>),
}

impl SharedTokens {
    /// A shared limiter for `cfg` under key `prefix + "tokens:" + name`.
    pub fn new(shared: Shared, name: &str, cfg: TokenConfig) -> Result<Self, String> {
        let n = shared.instances();
        let fallback = TokenLimiter::new(TokenConfig {
            tokens_per_minute: (cfg.tokens_per_minute / n).max(1),
            burst: (cfg.burst / n).max(1),
        })
        .map_err(|e| e.to_string())?;
        if cfg.tokens_per_minute == 0 || cfg.burst == 0 {
            return Err("tokens per minute and burst must be at least 1".into());
        }
        let us_per_token = 60e6 / cfg.tokens_per_minute as f64;
        Ok(SharedTokens {
            key: shared.key("tokens", name),
            us_per_token,
            cap_us: (cfg.burst as f64 * us_per_token).ceil() as u64,
            burst: cfg.burst,
            shared,
            fallback,
        })
    }

    fn us(&self, tokens: u64) -> u64 {
        (tokens as f64 * self.us_per_token).ceil() as u64
    }

    /// Reserves `tokens` at `now` (executor clock). Refusals as [`TokenLimiter::reserve`]:
    /// [`LimitError::TokensExhausted`] with the wait, [`LimitError::NeverAdmissible`] above
    /// the burst; [`LimitError::SharedUnavailable`] when the backend is down and
    /// `fail_mode = "closed"`.
    pub async fn reserve(
        &self,
        tokens: u64,
        now: u64,
    ) -> Result<SharedTokenReservation<'_>, LimitError> {
        if tokens > self.burst {
            return Err(LimitError::NeverAdmissible {
                requested: tokens,
                capacity: self.burst,
            });
        }
        if tokens == 0 {
            return Ok(SharedTokenReservation::Shared(self, 0));
        }
        let cost = self.us(tokens).min(self.cap_us);
        let f = self
            .shared
            .backend
            .admit(&self.key, cost, self.cap_us, 1, 1);
        match self.shared.call("token limiter", now, f).await {
            Some(Grant::Granted(_)) => Ok(SharedTokenReservation::Shared(self, cost)),
            Some(Grant::Refused(retry_in)) => Err(LimitError::TokensExhausted { retry_in }),
            // An estimate above the scaled-down burst reserves the burst; settling with the
            // actual usage charges the rest.
            None => self.shared.unavailable(
                || {
                    self.fallback
                        .reserve(tokens.min(self.fallback.burst()), now)
                        .map(SharedTokenReservation::Local)
                },
                Err(LimitError::SharedUnavailable),
            ),
        }
    }

    /// The backend key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The backend's health (shared by every shared entity of the runtime).
    pub fn health(&self) -> &SharedHealth {
        &self.shared.health
    }
}

impl SharedTokenReservation<'_> {
    /// Reconciles with the actual usage: refunds the unused part or charges the excess
    /// (in the background, retried like every settlement: [`Shared::settle_later`]).
    pub fn settle(self, actual: u64, now: u64) {
        match self {
            SharedTokenReservation::Local(r) => r.settle(actual, now),
            SharedTokenReservation::Shared(lim, charged) => {
                let delta = lim.us(actual) as i128 - charged as i128;
                let delta = delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
                if delta != 0 {
                    lim.shared.settle_later(Settlement::Rate {
                        key: lim.key.clone(),
                        delta_us: delta,
                    });
                }
            }
        }
    }

    /// Whether the reservation went to the backend (not the fallback).
    pub fn is_shared(&self) -> bool {
        matches!(self, SharedTokenReservation::Shared(..))
    }

    /// Whether this reservation was taken from `limiter` (its backend or its fallback).
    pub fn is_of(&self, limiter: &SharedTokens) -> bool {
        match self {
            SharedTokenReservation::Shared(l, _) => std::ptr::eq(*l, limiter),
            SharedTokenReservation::Local(r) => r.is_of(&limiter.fallback),
        }
    }

    /// Keeps the reservation (its estimate stays charged) without the borrow of its
    /// limiter, for usage learned later; [`SharedTokens::settle_detached`] reconciles it.
    pub fn detach(self) -> DetachedTokens {
        match self {
            SharedTokenReservation::Shared(_, charged) => DetachedTokens::Backend(charged),
            SharedTokenReservation::Local(r) => DetachedTokens::Fallback(r.estimate()),
        }
    }
}

/// A shared token reservation held apart from its limiter
/// ([`SharedTokenReservation::detach`]).
#[derive(Debug, Clone, Copy)]
pub enum DetachedTokens {
    /// Charged in the backend, in µs of its bucket.
    Backend(u64),
    /// Reserved in the local fallback: the estimate in tokens.
    Fallback(u64),
}

impl SharedTokens {
    /// Reconciles a detached reservation with the `actual` usage learned later, where it
    /// was taken: the backend (in the background, as every settlement) or the fallback.
    pub fn settle_detached(&self, d: DetachedTokens, actual: u64, now: u64) {
        match d {
            DetachedTokens::Backend(charged) => {
                SharedTokenReservation::Shared(self, charged).settle(actual, now)
            }
            DetachedTokens::Fallback(estimate) => self.fallback.reconcile(estimate, actual, now),
        }
    }
}

/// A budget whose spend is shared through the backend, with a local fallback ledger.
#[derive(Debug)]
pub struct SharedBudget {
    shared: Shared,
    key: String,
    window_us: u64,
    limit: u64,
    /// Decides while the backend is unavailable with `fail_mode = "open"`: the limit divided
    /// by `expected_instances`.
    fallback: BudgetLedger,
}

/// A reservation in a [`SharedBudget`]: settle it with the actual cost; dropping it
/// releases the reservation (in the background).
#[derive(Debug)]
#[must_use = "settle with the actual cost, or drop to release"]
pub struct SharedReservation<'a>(Option<Held<'a>>);

#[derive(Debug)]
enum Held<'a> {
    /// Reserved in the backend: window index and nano-dollars.
    Shared(&'a SharedBudget, u64, u64),
    /// Reserved in the local fallback ledger.
    Local(BudgetReservation<'a>),
}

impl SharedBudget {
    /// A shared budget under key `prefix + "budget:" + name`.
    pub fn new(shared: Shared, name: &str, cfg: BudgetConfig) -> Result<Self, String> {
        let n = shared.instances();
        let fallback = BudgetLedger::new(BudgetConfig {
            limit: Usd::from_nanos(cfg.limit.nanos() / n),
            window: cfg.window,
        })
        .map_err(|e| e.to_string())?;
        Ok(SharedBudget {
            key: shared.key("budget", name),
            window_us: (cfg.window.as_micros().min(u64::MAX as u128) as u64).max(1),
            limit: cfg.limit.nanos(),
            shared,
            fallback,
        })
    }

    /// Reserves `worst` before a call; `None` when the budget (or, with
    /// `fail_mode = "closed"`, the backend) refuses.
    pub async fn reserve(&self, worst: Usd, now: u64) -> Option<SharedReservation<'_>> {
        let amount = worst.nanos();
        let f = self
            .shared
            .backend
            .reserve(&self.key, self.window_us, self.limit, amount);
        match self.shared.call("budget", now, f).await {
            Some(Some(window)) => Some(SharedReservation(Some(Held::Shared(self, window, amount)))),
            Some(None) => None,
            None => self.shared.unavailable(
                || {
                    self.fallback
                        .reserve(worst, now)
                        .ok()
                        .map(|r| SharedReservation(Some(Held::Local(r))))
                },
                None,
            ),
        }
    }

    /// The backend key (the window index is appended).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl SharedBudget {
    /// Records `cost` spent outside a reservation (usage learned after the call's
    /// reservation was settled, e.g. a stream's last chunk) in the current window, in the
    /// background like every settlement.
    pub fn record_spend(&self, cost: Usd) {
        if cost.nanos() > 0 {
            self.shared.settle_later(Settlement::Charge {
                key: self.key.clone(),
                window_us: self.window_us,
                amount: cost.nanos(),
            });
        }
    }

    fn adjust_later(&self, window: u64, delta: i64) {
        if delta != 0 {
            self.shared.settle_later(Settlement::Budget {
                key: self.key.clone(),
                window,
                delta,
            });
        }
    }
}

impl SharedReservation<'_> {
    /// Replaces the reservation by the actual cost.
    pub fn settle(mut self, actual: Usd) {
        match self.0.take() {
            Some(Held::Local(r)) => r.settle(actual),
            Some(Held::Shared(budget, window, amount)) => {
                let delta = actual.nanos() as i128 - amount as i128;
                budget.adjust_later(
                    window,
                    delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                );
            }
            None => {}
        }
    }

    /// Whether the reservation went to the backend (not the fallback).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Some(Held::Shared(..)))
    }

    /// Whether this reservation was taken from `budget`.
    pub fn is_of(&self, budget: &SharedBudget) -> bool {
        match &self.0 {
            Some(Held::Shared(b, ..)) => std::ptr::eq(*b, budget),
            Some(Held::Local(r)) => r.is_of(&budget.fallback),
            None => false,
        }
    }

    /// Keeps the reservation held without the borrow of its budget (a stream holds it
    /// until it ends); [`SharedBudget::reattach`] gives it back.
    pub fn detach(mut self) -> DetachedShared {
        match self.0.take() {
            Some(Held::Shared(_, window, amount)) => DetachedShared::Shared { window, amount },
            Some(Held::Local(r)) => DetachedShared::Local(r.detach()),
            None => DetachedShared::None,
        }
    }
}

/// A shared-budget reservation held apart from its budget ([`SharedReservation::detach`]).
#[must_use = "reattach it to its budget to settle it"]
#[derive(Debug)]
pub enum DetachedShared {
    /// Reserved in the backend: window index and nano-dollars.
    Shared {
        /// The backend window.
        window: u64,
        /// Nano-dollars reserved.
        amount: u64,
    },
    /// Reserved in the local fallback ledger.
    Local(DetachedReservation),
    /// Nothing held.
    None,
}

impl DetachedShared {
    /// What was reserved.
    pub fn amount(&self) -> Usd {
        match self {
            DetachedShared::Shared { amount, .. } => Usd::from_nanos(*amount),
            DetachedShared::Local(d) => d.amount(),
            DetachedShared::None => Usd::ZERO,
        }
    }
}

impl SharedBudget {
    /// The reservation `d`, detached from this budget, as a reservation again.
    pub fn reattach(&self, d: DetachedShared) -> SharedReservation<'_> {
        SharedReservation(match d {
            DetachedShared::Shared { window, amount } => Some(Held::Shared(self, window, amount)),
            DetachedShared::Local(r) => Some(Held::Local(self.fallback.reattach(r))),
            DetachedShared::None => None,
        })
    }
}

impl Drop for SharedReservation<'_> {
    fn drop(&mut self) {
        if let Some(Held::Shared(budget, window, amount)) = self.0.take() {
            budget.adjust_later(window, -(amount.min(i64::MAX as u64) as i64));
        }
    }
}

#[cfg(test)]
mod tests;
