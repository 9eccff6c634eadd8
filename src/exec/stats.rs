//! A point-in-time view of the executor's live state, for `/status`, metrics and tests.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Serialize;

use super::breaker::BreakerState;
use super::state::{BreakerSlot, Runtime};

/// A breaker's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    /// Which breaker (`upstream relay`, `model gpt-4.1`, `route complex → gpt-4.1`).
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// For an open breaker: time until it lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub opens_probe_in: Option<Duration>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Transitions since it was created.
    pub transitions: u64,
}

/// An upstream's limits and breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamView {
    /// Its name.
    pub name: String,
    /// Its breaker, if any.
    pub breaker: Option<BreakerView>,
    /// Requests the rate limiter would admit right now (`None` when it is shared).
    pub rate_headroom: Option<u32>,
    /// Tokens the token limiter would admit right now (`None` when it is shared).
    pub tokens_available: Option<u64>,
    /// Calls in flight, and the cap.
    pub concurrency: Option<(u32, u32)>,
}

/// A model's traffic as a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelView {
    /// Its name.
    pub name: String,
    /// Its upstream.
    pub upstream: String,
    /// Its own breaker, if any.
    pub breaker: Option<BreakerView>,
    /// Successful attempts.
    pub successes: u64,
    /// Failed attempts.
    pub failures: u64,
    /// successes / attempts (1.0 with no attempts yet).
    pub success_rate: f64,
    /// Latency score (EWMA), if measured: successes at their latency, failures that may
    /// cross targets at their per-try timeout.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub latency_ewma: Option<Duration>,
    /// Calls in flight.
    pub in_flight: u32,
    /// Spend in USD under the current plan.
    pub spend_usd: f64,
    /// Input and output tokens under the current plan.
    pub tokens: (u64, u64),
}

/// A budget's window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetView {
    /// Its name.
    pub name: String,
    /// Limit in USD per window.
    pub limit_usd: f64,
    /// Spent in the current window.
    pub spent_usd: f64,
    /// Reserved by calls in flight.
    pub reserved_usd: f64,
    /// What may still be reserved.
    pub remaining_usd: f64,
    /// Time until the window resets.
    #[serde(with = "secs")]
    pub resets_in: Duration,
}

/// A route's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteView {
    /// Its name.
    pub name: String,
    /// Requests that took it.
    pub requests: u64,
    /// Moves of its requests from one target to another (the sum of the
    /// `x-tollgate-failovers` the relay answered with, failed requests included).
    pub failovers: u64,
    /// Spend through it in USD.
    pub spend_usd: f64,
    /// Its per-target breakers, if it has its own.
    pub breakers: Vec<BreakerView>,
}

/// Health of the shared-state backend (`[state.redis]`), when one is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedView {
    /// Whether the breaker around the backend is open (decisions follow `fail_mode`).
    pub unavailable: bool,
    /// Backend round trips.
    pub round_trips: u64,
    /// Failed backend calls (timeouts, errors), settlement retries included.
    pub failures: u64,
    /// Decisions taken by `fail_mode` because the backend was unavailable.
    pub fallbacks: u64,
    /// Settlements (budget adjustments, token reconciliations) given up after retries.
    pub lost_settlements: u64,
    /// Trips of this instance's shared breakers published to the other instances.
    pub breaker_signals_sent: u64,
    /// Shared breakers opened because another instance tripped them.
    pub breaker_signals_received: u64,
}

/// The whole snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The plan version.
    pub plan_version: u64,
    /// Per upstream.
    pub upstreams: Vec<UpstreamView>,
    /// Per model.
    pub models: Vec<ModelView>,
    /// Per route.
    pub routes: Vec<RouteView>,
    /// Per budget.
    pub budgets: Vec<BudgetView>,
    /// Total spend in USD under the current plan.
    pub spend_usd: f64,
    /// What the same usage would have cost on the plan's baseline model, in USD.
    pub baseline_usd: Option<f64>,
    /// The shared-state backend's health, if the runtime has one.
    pub shared: Option<SharedView>,
}

impl Stats {
    /// Builds a snapshot of `rt` at time `now`.
    pub fn of(rt: &Runtime, now: u64) -> Stats {
        let plan = &rt.plan;
        let report = rt.spend.report();
        let breaker = |slot: &BreakerSlot| {
            let s = slot.breaker.snapshot(now);
            BreakerView {
                name: slot.name.clone(),
                state: s.state.name(),
                opens_probe_in: s
                    .open_until
                    .filter(|_| s.state == BreakerState::Open)
                    .map(|until| Duration::from_nanos(until.saturating_sub(now))),
                consecutive_failures: s.consecutive_failures,
                transitions: s.transitions,
            }
        };
        let upstreams = plan
            .upstreams
            .iter()
            .zip(&rt.upstreams)
            .enumerate()
            .map(|(i, (u, s))| UpstreamView {
                name: u.name.clone(),
                breaker: s.breaker.as_ref().map(breaker),
                // A shared limiter's bucket is in the backend: the local one says nothing.
                rate_headroom: s
                    .rate
                    .as_ref()
                    .filter(|_| rt.shared_rates[i].is_none())
                    .map(|r| r.headroom(now)),
                tokens_available: s
                    .tokens
                    .as_ref()
                    .filter(|_| rt.shared_tokens[i].is_none())
                    .map(|t| t.available(now)),
                concurrency: s.concurrency.as_ref().map(|c| (c.in_flight(), c.limit())),
            })
            .collect();
        let models = plan
            .models
            .iter()
            .zip(&rt.models)
            .enumerate()
            .map(|(i, (m, s))| {
                let (ok, bad) = (s.successes(), s.failures());
                let line = report.by_model.get(i).copied().unwrap_or_default();
                let ewma = s.ewma_nanos();
                ModelView {
                    name: m.name.clone(),
                    upstream: plan.upstream(m.upstream).name.clone(),
                    breaker: s.breaker.as_ref().map(breaker),
                    successes: ok,
                    failures: bad,
                    success_rate: if ok + bad == 0 {
                        1.0
                    } else {
                        ok as f64 / (ok + bad) as f64
                    },
                    latency_ewma: (ewma > 0).then(|| Duration::from_nanos(ewma)),
                    in_flight: u32::try_from(s.in_flight()).unwrap_or(u32::MAX),
                    spend_usd: line.spend.as_dollars(),
                    tokens: (line.input_tokens, line.output_tokens),
                }
            })
            .collect();
        let routes = plan
            .routes
            .iter()
            .zip(&rt.routes)
            .enumerate()
            .map(|(i, (r, s))| RouteView {
                name: r.name.clone(),
                requests: s.requests(),
                failovers: s.failovers(),
                spend_usd: report.by_route.get(i).map_or(0.0, |l| l.spend.as_dollars()),
                breakers: s.breakers.iter().map(breaker).collect(),
            })
            .collect();
        let budgets = plan
            .budgets
            .iter()
            .zip(&rt.budgets)
            .map(|(b, s)| BudgetView {
                name: b.name.clone(),
                limit_usd: b.limit_usd,
                spent_usd: s.ledger.spent(now).as_dollars(),
                reserved_usd: s.ledger.reserved().as_dollars(),
                remaining_usd: s.ledger.remaining(now).as_dollars(),
                resets_in: s.ledger.resets_in(now),
            })
            .collect();
        let baseline_usd = plan
            .baseline_model
            .and_then(|m| plan.model(m).price)
            .map(|p| report.savings(p).baseline.as_dollars());
        Stats {
            plan_version: rt.version,
            upstreams,
            models,
            routes,
            budgets,
            spend_usd: report.total.spend.as_dollars(),
            baseline_usd,
            shared: rt.shared.as_ref().map(|s| {
                let h = &s.health;
                SharedView {
                    unavailable: h.is_open(),
                    round_trips: h.round_trips.load(Relaxed),
                    failures: h.failures.load(Relaxed),
                    fallbacks: h.fallbacks.load(Relaxed),
                    lost_settlements: h.lost_settlements.load(Relaxed),
                    breaker_signals_sent: h.signals_sent.load(Relaxed),
                    breaker_signals_received: h.signals_received.load(Relaxed),
                }
            }),
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
