//! Circuit breaker: stop calling an upstream that keeps failing, then probe it back.
//!
//! ```text
//!            rule trips                 open_for elapsed
//!   Closed ─────────────► Open{until} ───────────────────► HalfOpen
//!     ▲                      ▲                                │
//!     │                      └──────── a probe fails ─────────┤
//!     └──────────── successes_to_close probes succeed ────────┘
//! ```
//!
//! # Concurrency design
//!
//! The state is one packed `AtomicU64` (`tag:2 | admitted probes:16 | probe successes:16 |
//! generation:30`).
//!
//! * **Closed hot path.** [`Breaker::try_acquire`] is one `Acquire` load of that word; the
//!   permit remembers the generation. [`Breaker::record`] checks the generation with one
//!   more load (outcomes of calls admitted before the last transition are ignored), does one
//!   compare-exchange per sliding window (a ring of [`BUCKETS`] time buckets, one packed
//!   `AtomicU64` each; see `window.rs`), and touches the consecutive-failure
//!   counter. No lock, no allocation.
//! * **Half-open probes** are counted in the same word with compare-exchange loops, so "at
//!   most `probes` admitted" is exact under any interleaving. A permit dropped without
//!   [`record`](Breaker::record) (a cancelled call) gives its slot back.
//! * **Transitions** (tag/generation changes) are rare and happen under a small `Mutex`:
//!   a transition to open writes the `until` deadline (a second atomic) *before* publishing
//!   the new word, and a transition to closed clears the windows first. Holding the mutex
//!   only there keeps both facts consistent without packing a 64-bit deadline into the
//!   word. The observer and the `tracing` event run after the mutex is released.
//!
//! Rules are evaluated when a call is recorded: the failure-rate rule when a failure is
//! recorded, the slow-call rule when a slow call is recorded (a success cannot raise either
//! rate, so successes skip the window scan). While half-open, a probe that fails *or is slow*
//! (when a slow-call rule exists) reopens the breaker.

mod config;
mod window;

use std::fmt;
use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::Mutex;
use std::time::Duration;

pub use config::{
    BreakerConfig, BreakerConfigError, RateRule, SlowRule, MAX_MIN_CALLS, MAX_PROBES, MIN_WINDOW,
};
pub use window::{WindowCounts, BUCKETS};

use config::nanos;
use window::Ring;

// ---- packed state word -------------------------------------------------------------------

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const TAG_MASK: u64 = 0b11;
const ADM_SHIFT: u32 = 2;
const SUCC_SHIFT: u32 = 18;
const GEN_SHIFT: u32 = 34;
const C16: u64 = 0xFFFF;
const GEN_MASK: u64 = (1 << 30) - 1;

#[inline]
fn tag(w: u64) -> u64 {
    w & TAG_MASK
}
#[inline]
fn gen(w: u64) -> u32 {
    (w >> GEN_SHIFT) as u32
}
#[inline]
fn admitted(w: u64) -> u32 {
    ((w >> ADM_SHIFT) & C16) as u32
}
#[inline]
fn successes(w: u64) -> u32 {
    ((w >> SUCC_SHIFT) & C16) as u32
}
#[inline]
fn pack(tag: u64, gen: u32, admitted: u32) -> u64 {
    tag | (u64::from(admitted) << ADM_SHIFT) | (u64::from(gen) << GEN_SHIFT)
}
#[inline]
fn same_phase(a: u64, b: u64) -> bool {
    tag(a) == tag(b) && gen(a) == gen(b)
}

/// Pads a value to its own cache line so hot writes don't slow readers of its neighbours.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded<T>(T);

// ---- public types ------------------------------------------------------------------------

/// Where a breaker stands. A plain one-byte enum so a [`Transition`] fits in two registers;
/// an open breaker's deadline is [`Breaker::open_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until [`Breaker::open_until`].
    Open,
    /// A limited number of probe calls decide between closing and reopening.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"`, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionReason {
    /// Closed → open: `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// Closed → open: the failure-rate rule.
    FailureRate,
    /// Closed → open: the slow-call rule.
    SlowCallRate,
    /// Open → half-open: `open_for` elapsed and a call arrived.
    OpenElapsed,
    /// Half-open → open: a probe failed (or was slow).
    ProbeFailed,
    /// Half-open → closed: `successes_to_close` probes succeeded.
    ProbesSucceeded,
    /// Closed or half-open → open: another instance tripped the same shared breaker
    /// ([`Breaker::force_open`]).
    Signalled,
}

/// One state change of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// Position in this breaker's history: 1 for its first transition, then 2, … (low 32
    /// bits of [`Breaker::transitions`] right after it). Observers on different threads can
    /// be called out of order; sort by `seq` to recover the real order.
    pub seq: u32,
    /// Clock nanoseconds of the call that caused it.
    pub at: u64,
}

/// Refusal from [`Breaker::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open{}; retry in {retry_in:?}", if *.probing { " (half-open, probes in flight)" } else { "" })]
pub struct BreakerOpen {
    /// Time until the breaker admits probes; zero when it is half-open and all probe slots are
    /// taken (the wait then depends on the probes' outcomes).
    pub retry_in: Duration,
    /// True when refused because every half-open probe slot is taken.
    pub probing: bool,
}

/// Permission to make one call, from [`Breaker::try_acquire`]. Hand it back with
/// [`Breaker::record`]; dropping it instead (the call was cancelled) records nothing and
/// returns a half-open probe slot.
#[must_use = "record the outcome with Breaker::record, or drop to cancel"]
pub struct BreakerPermit<'a> {
    breaker: &'a Breaker,
    gen: u32,
    probe: bool,
    transition: Option<Transition>,
}

impl BreakerPermit<'_> {
    /// True when this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The open → half-open transition this acquisition caused, if any.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }

    /// Whether the breaker is still in the state this permit was taken in (no transition
    /// since). A permit held across a wait (for a limiter) may have gone stale: the breaker
    /// may have opened meanwhile, and the call must then ask again.
    pub fn is_current(&self) -> bool {
        gen(self.breaker.word.0.load(Acquire)) == self.gen
    }
}

impl fmt::Debug for BreakerPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPermit")
            .field("gen", &self.gen)
            .field("probe", &self.probe)
            .field("transition", &self.transition)
            .finish()
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.release_probe(self.gen);
        }
    }
}

/// Counters of a breaker at one instant, from [`Breaker::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStats {
    /// State as [`Breaker::state`] reports it.
    pub state: BreakerState,
    /// While open: when probes will be admitted.
    pub open_until: Option<u64>,
    /// Counts in the failure-rate window, if that rule is configured.
    pub failure_window: Option<WindowCounts>,
    /// Counts in the slow-call window, if that rule is configured.
    pub slow_window: Option<WindowCounts>,
    /// Failures in a row while closed (counted only when that rule is configured).
    pub consecutive_failures: u32,
    /// Probe slots in use while half-open (admitted and not cancelled).
    pub probes_admitted: u32,
    /// Successful probes while half-open.
    pub probe_successes: u32,
    /// Transitions since the breaker was built.
    pub transitions: u64,
}

type Observer = Box<dyn Fn(&Transition) + Send + Sync>;

/// A circuit breaker; `Send + Sync`, share it with `Arc`. See the [module docs](self).
pub struct Breaker {
    word: Padded<AtomicU64>,
    consecutive: Padded<AtomicU32>,
    open_until: AtomicU64,
    transitions: AtomicU64,
    rings: Box<[Ring]>,
    fail_ring: Option<usize>,
    slow_ring: Option<usize>,
    slow_over: u64,
    open_for: u64,
    lock: Mutex<()>,
    observer: Option<Observer>,
    cfg: BreakerConfig,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("config", &self.cfg)
            .field("word", &format_args!("{:#x}", self.word.0.load(Relaxed)))
            .field("transitions", &self.transitions.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// Build a closed breaker. Rejects an invalid config (see [`BreakerConfig::validate`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::exec::breaker::{Breaker, BreakerConfig, BreakerState};
    ///
    /// let b = Breaker::new(BreakerConfig {
    ///     consecutive_failures: Some(2),
    ///     failure_rate: None,
    ///     slow_call: None,
    ///     open_for: Duration::from_secs(30),
    ///     probes: 1,
    ///     successes_to_close: 1,
    /// })?;
    /// for _ in 0..2 {
    ///     let p = b.try_acquire(0).unwrap();
    ///     b.record(p, true, Duration::from_millis(5), 0);
    /// }
    /// assert_eq!(b.state(0), BreakerState::Open);
    /// assert_eq!(b.open_until(), Some(30_000_000_000));
    /// assert!(b.try_acquire(1).is_err());
    /// # Ok::<(), tollgate::exec::breaker::BreakerConfigError>(())
    /// ```
    pub fn new(cfg: BreakerConfig) -> Result<Self, BreakerConfigError> {
        cfg.validate()?;
        let mut rings = Vec::new();
        let fail_ring = cfg.failure_rate.map(|r| {
            rings.push(Ring::new(nanos(r.window)));
            0
        });
        let slow_ring = cfg.slow_call.map(|s| match cfg.failure_rate {
            Some(r) if r.window == s.window => 0,
            _ => {
                rings.push(Ring::new(nanos(s.window)));
                rings.len() - 1
            }
        });
        Ok(Breaker {
            word: Padded(AtomicU64::new(pack(CLOSED, 0, 0))),
            consecutive: Padded(AtomicU32::new(0)),
            open_until: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            rings: rings.into_boxed_slice(),
            fail_ring,
            slow_ring,
            slow_over: cfg.slow_call.map_or(u64::MAX, |s| nanos(s.over)),
            open_for: nanos(cfg.open_for),
            lock: Mutex::new(()),
            observer: None,
            cfg,
        })
    }

    /// A breaker for `cfg` that continues `old` (a reload changed its policy): an open
    /// breaker stays open, until its old deadline or `now + cfg.open_for`, whichever is
    /// sooner; a half-open one becomes open until `now`, so its next call is a probe under
    /// the new probe settings; a closed one stays closed and keeps its run of consecutive
    /// failures. The sliding windows start empty (their length may have changed). No
    /// transition is recorded for the hand-over.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::exec::breaker::{Breaker, BreakerConfig, BreakerState};
    ///
    /// let cfg = BreakerConfig {
    ///     consecutive_failures: Some(1),
    ///     failure_rate: None,
    ///     slow_call: None,
    ///     open_for: Duration::from_secs(30),
    ///     probes: 1,
    ///     successes_to_close: 1,
    /// };
    /// let old = Breaker::new(cfg.clone())?;
    /// let p = old.try_acquire(0).unwrap();
    /// old.record(p, true, Duration::from_millis(5), 0);
    /// // A reload raises the threshold: the breaker is still open.
    /// let new = Breaker::new_from(BreakerConfig { consecutive_failures: Some(5), ..cfg }, &old, 1)?;
    /// assert_eq!(new.state(1), BreakerState::Open);
    /// assert_eq!(new.open_until(), Some(30_000_000_000));
    /// # Ok::<(), tollgate::exec::breaker::BreakerConfigError>(())
    /// ```
    pub fn new_from(
        cfg: BreakerConfig,
        old: &Breaker,
        now: u64,
    ) -> Result<Self, BreakerConfigError> {
        let b = Self::new(cfg)?;
        let _guard = old.lock.lock().unwrap_or_else(|e| e.into_inner());
        let w = old.word.0.load(Acquire);
        match tag(w) {
            OPEN => {
                let until = old
                    .open_until
                    .load(Acquire)
                    .min(now.saturating_add(b.open_for));
                b.open_until.store(until, Release);
                b.word.0.store(pack(OPEN, 0, 0), Release);
            }
            HALF_OPEN => {
                b.open_until.store(now, Release);
                b.word.0.store(pack(OPEN, 0, 0), Release);
            }
            _ => b
                .consecutive
                .0
                .store(old.consecutive.0.load(Relaxed), Relaxed),
        }
        b.transitions.store(old.transitions(), Relaxed);
        Ok(b)
    }

    /// Call `f` on every transition, after the breaker's internal lock is released (so `f`
    /// may call back into the breaker). Calls from different threads may arrive out of
    /// order; [`Transition::seq`] gives the true order.
    pub fn with_observer(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// The configuration this breaker was built from.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Ask to make a call at `now`.
    ///
    /// Closed: always admitted (one atomic load). Open: refused with the time left, unless
    /// `open_for` has elapsed, in which case the breaker turns half-open and this call is its
    /// first probe. Half-open: admitted while fewer than `probes` probe slots are in use.
    #[inline]
    pub fn try_acquire(&self, now: u64) -> Result<BreakerPermit<'_>, BreakerOpen> {
        let w = self.word.0.load(Acquire);
        if tag(w) == CLOSED {
            return Ok(self.permit(gen(w), false, None));
        }
        self.acquire_slow(w, now)
    }

    #[inline]
    fn permit(&self, gen: u32, probe: bool, transition: Option<Transition>) -> BreakerPermit<'_> {
        BreakerPermit {
            breaker: self,
            gen,
            probe,
            transition,
        }
    }

    #[cold]
    fn acquire_slow(&self, mut w: u64, now: u64) -> Result<BreakerPermit<'_>, BreakerOpen> {
        loop {
            match tag(w) {
                OPEN => {
                    let until = self.open_until.load(Acquire);
                    if now < until {
                        return Err(BreakerOpen {
                            retry_in: Duration::from_nanos(until - now),
                            probing: false,
                        });
                    }
                    if let Some((t, g)) =
                        self.transition(w, HALF_OPEN, now, TransitionReason::OpenElapsed)
                    {
                        return Ok(self.permit(g, true, Some(t)));
                    }
                    w = self.word.0.load(Acquire);
                }
                HALF_OPEN => {
                    if admitted(w) >= self.cfg.probes {
                        return Err(BreakerOpen {
                            retry_in: Duration::ZERO,
                            probing: true,
                        });
                    }
                    match self.word.0.compare_exchange_weak(
                        w,
                        w + (1 << ADM_SHIFT),
                        AcqRel,
                        Acquire,
                    ) {
                        Ok(_) => return Ok(self.permit(gen(w), true, None)),
                        Err(actual) => w = actual,
                    }
                }
                _ => return Ok(self.permit(gen(w), false, None)),
            }
        }
    }

    /// Report the outcome of an admitted call. `failure`: the plan classed the outcome as a
    /// breaker failure; `elapsed`: how long the call took (for the slow-call rule). Returns
    /// the transition this outcome caused, if any. Outcomes of calls admitted before the
    /// breaker last changed state are ignored.
    #[inline(always)] // small; an out-of-line call returns the Option through memory
    pub fn record(
        &self,
        permit: BreakerPermit<'_>,
        failure: bool,
        elapsed: Duration,
        now: u64,
    ) -> Option<Transition> {
        self.settle_permit(permit, failure, true, elapsed, now)
    }

    /// [`record`](Self::record) and [`record_pending`](Self::record_pending): `ends_run`
    /// says whether a success ends a run of consecutive failures.
    #[inline(always)]
    fn settle_permit(
        &self,
        permit: BreakerPermit<'_>,
        failure: bool,
        ends_run: bool,
        elapsed: Duration,
        now: u64,
    ) -> Option<Transition> {
        if !std::ptr::eq(permit.breaker, self) {
            return None; // another breaker's permit: dropping it releases its own slot
        }
        let (gen, probe) = (permit.gen, permit.probe);
        std::mem::forget(permit);
        let slow = self.slow_ring.is_some() && nanos(elapsed) > self.slow_over;
        if probe {
            self.record_probe(gen, failure || slow, now)
        } else {
            self.record_closed(gen, failure, slow, ends_run, now)
        }
    }

    /// Reports a call that has succeeded so far but whose outcome is final only later (a
    /// stream whose first event reached the caller). It counts as a success in the windows
    /// and for a probe, but does not end a run of consecutive failures: the late outcome
    /// does, [`late_success`](Self::late_success) or [`late_failure`](Self::late_failure).
    pub fn record_pending(
        &self,
        permit: BreakerPermit<'_>,
        elapsed: Duration,
        now: u64,
    ) -> Option<Transition> {
        self.settle_permit(permit, false, false, elapsed, now)
    }

    /// A call reported with [`record_pending`](Self::record_pending) finished well: it ends a
    /// run of consecutive failures, as a success does.
    pub fn late_success(&self) {
        if tag(self.word.0.load(Acquire)) == CLOSED && self.consecutive.0.load(Relaxed) != 0 {
            self.consecutive.0.store(0, Relaxed);
        }
    }

    /// A call reported with [`record_pending`](Self::record_pending) failed after all (a
    /// stream that broke or stalled mid-way): closed, it becomes a failure in the windows
    /// and adds to the run of consecutive failures (either may open the breaker); half-open,
    /// it reopens the breaker, as a failed probe does; open, it is ignored.
    pub fn late_failure(&self, now: u64) -> Option<Transition> {
        let w = self.word.0.load(Acquire);
        match tag(w) {
            CLOSED => {
                let expected = pack(CLOSED, gen(w), 0);
                for ring in self.rings.iter() {
                    ring.add_late_failure(now);
                }
                let mut reason = None;
                if let Some(n) = self.cfg.consecutive_failures {
                    if self.consecutive.0.fetch_add(1, Relaxed).saturating_add(1) >= n {
                        reason = Some(TransitionReason::ConsecutiveFailures);
                    }
                }
                self.maybe_trip(expected, reason, true, false, now)
            }
            HALF_OPEN => self
                .transition(w, OPEN, now, TransitionReason::ProbeFailed)
                .map(|(t, _)| t),
            _ => None,
        }
    }

    /// `reset`: a success ends a run of consecutive failures (not so for a pending one).
    #[inline(always)]
    fn record_closed(
        &self,
        g: u32,
        failure: bool,
        slow: bool,
        reset: bool,
        now: u64,
    ) -> Option<Transition> {
        let expected = pack(CLOSED, g, 0);
        if self.word.0.load(Acquire) != expected {
            return None;
        }
        for ring in self.rings.iter() {
            ring.add(now, failure, slow);
        }
        let mut reason = None;
        if let Some(n) = self.cfg.consecutive_failures {
            if failure {
                if self.consecutive.0.fetch_add(1, Relaxed).saturating_add(1) >= n {
                    reason = Some(TransitionReason::ConsecutiveFailures);
                }
            } else if reset && self.consecutive.0.load(Relaxed) != 0 {
                self.consecutive.0.store(0, Relaxed);
            }
        }
        if reason.is_none() && !(failure || slow) {
            return None;
        }
        self.maybe_trip(expected, reason, failure, slow, now)
    }

    /// The rarely taken part of recording a closed-path outcome, kept out of line so the
    /// common success path stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn maybe_trip(
        &self,
        expected: u64,
        reason: Option<TransitionReason>,
        failure: bool,
        slow: bool,
        now: u64,
    ) -> Option<Transition> {
        let reason = reason.or_else(|| self.rate_tripped(failure, slow, now))?;
        self.transition(expected, OPEN, now, reason).map(|(t, _)| t)
    }

    fn rate_tripped(&self, failure: bool, slow: bool, now: u64) -> Option<TransitionReason> {
        if let (true, Some(rule), Some(i)) = (failure, &self.cfg.failure_rate, self.fail_ring) {
            let c = self.rings[i].totals(now);
            if c.calls >= rule.min_calls
                && f64::from(c.failures) >= rule.threshold * f64::from(c.calls)
            {
                return Some(TransitionReason::FailureRate);
            }
        }
        if let (true, Some(rule), Some(i)) = (slow, &self.cfg.slow_call, self.slow_ring) {
            let c = self.rings[i].totals(now);
            if c.calls >= rule.min_calls
                && f64::from(c.slow) >= rule.rate_threshold * f64::from(c.calls)
            {
                return Some(TransitionReason::SlowCallRate);
            }
        }
        None
    }

    #[cold]
    fn record_probe(&self, g: u32, failed: bool, now: u64) -> Option<Transition> {
        let mut w = self.word.0.load(Acquire);
        loop {
            if tag(w) != HALF_OPEN || gen(w) != g {
                return None;
            }
            if failed {
                return self
                    .transition(w, OPEN, now, TransitionReason::ProbeFailed)
                    .map(|(t, _)| t);
            }
            let nw = w + (1 << SUCC_SHIFT);
            match self.word.0.compare_exchange_weak(w, nw, AcqRel, Acquire) {
                Ok(_) if successes(nw) >= self.cfg.successes_to_close => {
                    return self
                        .transition(nw, CLOSED, now, TransitionReason::ProbesSucceeded)
                        .map(|(t, _)| t);
                }
                Ok(_) => return None,
                Err(actual) => w = actual,
            }
        }
    }

    fn release_probe(&self, g: u32) {
        let mut w = self.word.0.load(Acquire);
        while tag(w) == HALF_OPEN && gen(w) == g && admitted(w) > 0 {
            match self
                .word
                .0
                .compare_exchange_weak(w, w - (1 << ADM_SHIFT), AcqRel, Acquire)
            {
                Ok(_) => return,
                Err(actual) => w = actual,
            }
        }
    }

    /// Opens the breaker until `until` (clock nanoseconds), whatever its state: another
    /// instance tripped the same shared breaker (see [`crate::exec::shared`]). Closed or
    /// half-open, it opens (a [`TransitionReason::Signalled`] transition, returned); already
    /// open, its deadline moves to `until` if that is later (no transition). Nothing when
    /// `until <= now` or the breaker is already open at least that long. Half-open probing
    /// after `until` proceeds as usual. Off the hot path: takes the transition lock.
    pub fn force_open(&self, until: u64, now: u64) -> Option<Transition> {
        if until <= now {
            return None;
        }
        loop {
            let w = self.word.0.load(Acquire);
            if tag(w) != OPEN {
                // `None` only when another thread changed the phase first: look again.
                if let Some((t, _)) =
                    self.transition_until(w, OPEN, now, TransitionReason::Signalled, Some(until))
                {
                    return Some(t);
                }
                continue;
            }
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let cur = self.word.0.load(Acquire);
            if tag(cur) != OPEN {
                continue; // turned half-open meanwhile
            }
            if self.open_until.load(Acquire) < until {
                // A new generation, so an acquire that read the old deadline cannot turn
                // this phase half-open (its transition expects the old word).
                let g = (gen(cur) + 1) & GEN_MASK as u32;
                self.open_until.store(until, Release);
                self.word.0.store(pack(OPEN, g, 0), Release);
            }
            return None;
        }
    }

    /// Move from the phase of `expected` (tag + generation) to `to`. Returns `None` when the
    /// breaker has already left that phase (another thread got there first).
    fn transition(
        &self,
        expected: u64,
        to: u64,
        now: u64,
        reason: TransitionReason,
    ) -> Option<(Transition, u32)> {
        self.transition_until(expected, to, now, reason, None)
    }

    /// [`transition`](Self::transition), opening until `until` instead of `now + open_for`.
    fn transition_until(
        &self,
        expected: u64,
        to: u64,
        now: u64,
        reason: TransitionReason,
        until: Option<u64>,
    ) -> Option<(Transition, u32)> {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = self.word.0.load(Acquire);
        if !same_phase(cur, expected) {
            return None;
        }
        let from = self.decode(cur);
        let g = (gen(cur) + 1) & GEN_MASK as u32;
        let (new, to_state) = match to {
            OPEN => {
                let until = until.unwrap_or_else(|| now.saturating_add(self.open_for));
                self.open_until.store(until, Release);
                (pack(OPEN, g, 0), BreakerState::Open)
            }
            HALF_OPEN => (pack(HALF_OPEN, g, 1), BreakerState::HalfOpen),
            _ => {
                for ring in self.rings.iter() {
                    ring.clear();
                }
                self.consecutive.0.store(0, Relaxed);
                (pack(CLOSED, g, 0), BreakerState::Closed)
            }
        };
        // Only probe counters change outside the lock; retry until they hold still.
        while let Err(actual) = self.word.0.compare_exchange_weak(cur, new, AcqRel, Acquire) {
            if !same_phase(actual, expected) {
                return None; // unreachable: phases change only under the lock
            }
            cur = actual;
        }
        let seq = self.transitions.fetch_add(1, Relaxed).wrapping_add(1) as u32;
        drop(guard);
        let t = Transition {
            from,
            to: to_state,
            reason,
            seq,
            at: now,
        };
        tracing::debug!(
            target: "tollgate::breaker",
            from = from.name(),
            to = to_state.name(),
            reason = ?reason,
            seq,
            at = now,
            open_until = (to == OPEN).then(|| self.open_until.load(Relaxed)),
            "breaker transition"
        );
        if let Some(observer) = &self.observer {
            observer(&t);
        }
        Some((t, g))
    }

    fn decode(&self, w: u64) -> BreakerState {
        match tag(w) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// The breaker's state as the next [`try_acquire`](Self::try_acquire) at `now` would find
    /// it: an open breaker whose `until` has passed reports [`BreakerState::HalfOpen`] (the
    /// transition itself happens, and is counted, on that acquire).
    pub fn state(&self, now: u64) -> BreakerState {
        match self.decode(self.word.0.load(Acquire)) {
            BreakerState::Open if now >= self.open_until.load(Acquire) => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// While open: when the breaker will admit probes (clock nanoseconds).
    pub fn open_until(&self) -> Option<u64> {
        (tag(self.word.0.load(Acquire)) == OPEN).then(|| self.open_until.load(Acquire))
    }

    /// Transitions since the breaker was built.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Relaxed)
    }

    /// Counters at `now`.
    pub fn snapshot(&self, now: u64) -> BreakerStats {
        let w = self.word.0.load(Acquire);
        let half = tag(w) == HALF_OPEN;
        BreakerStats {
            state: self.state(now),
            open_until: self.open_until(),
            failure_window: self.fail_ring.map(|i| self.rings[i].totals(now)),
            slow_window: self.slow_ring.map(|i| self.rings[i].totals(now)),
            consecutive_failures: self.consecutive.0.load(Relaxed),
            probes_admitted: if half { admitted(w) } else { 0 },
            probe_successes: if half { successes(w) } else { 0 },
            transitions: self.transitions(),
        }
    }
}

#[cfg(test)]
mod tests;
