//! Prometheus text exposition, written by hand: request and attempt counters, an attempt
//! latency histogram, and gauges read from the executor's [`Stats`] at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::exec::Stats;

/// Upper bounds of the attempt latency histogram, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters the relay keeps. Label sets are few (routes × models × outcomes), so a mutex
/// around a map costs less than the HTTP parsing around it.
#[derive(Default)]
pub struct Metrics {
    /// (route, model, upstream, outcome) → requests.
    requests: Mutex<BTreeMap<(String, String, String, String), u64>>,
    /// (upstream, model, outcome) → attempts.
    attempts: Mutex<BTreeMap<(String, String, String), u64>>,
    /// upstream → latency histogram.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// route → retries (attempts after each request's first).
    retries: Mutex<BTreeMap<String, u64>>,
    in_flight: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: &str, model: &str, upstream: &str, outcome: &str, attempts: u32) {
        *lock(&self.requests)
            .entry((route.into(), model.into(), upstream.into(), outcome.into()))
            .or_default() += 1;
        if attempts > 1 {
            *lock(&self.retries).entry(route.into()).or_default() += u64::from(attempts - 1);
        }
    }

    /// Counts one attempt and its latency.
    pub fn attempt(&self, upstream: &str, model: &str, outcome: &str, elapsed: Duration) {
        *lock(&self.attempts)
            .entry((upstream.into(), model.into(), outcome.into()))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut l = lock(&self.latency);
        let h = l.entry(upstream.into()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// A request started; the guard ends it.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// The exposition, with gauges from `stats`.
    pub fn render(&self, stats: &Stats) -> String {
        let mut o = String::with_capacity(4096);
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            o,
            "# HELP tollgate_requests_total Requests served by the relay."
        );
        let _ = writeln!(o, "# TYPE tollgate_requests_total counter");
        for ((r, m, u, out), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                o,
                "tollgate_requests_total{{route=\"{}\",model=\"{}\",upstream=\"{}\",outcome=\"{}\"}} {n}",
                esc(r), esc(m), esc(u), esc(out)
            );
        }
        let _ = writeln!(o, "# HELP tollgate_attempts_total Attempts made upstream.");
        let _ = writeln!(o, "# TYPE tollgate_attempts_total counter");
        for ((u, m, out), n) in lock(&self.attempts).iter() {
            let _ = writeln!(
                o,
                "tollgate_attempts_total{{upstream=\"{}\",model=\"{}\",outcome=\"{}\"}} {n}",
                esc(u),
                esc(m),
                esc(out)
            );
        }
        let _ = writeln!(o, "# HELP tollgate_retries_total Attempts after each request's first (retries, failovers, hedges).");
        let _ = writeln!(o, "# TYPE tollgate_retries_total counter");
        for (r, n) in lock(&self.retries).iter() {
            let _ = writeln!(o, "tollgate_retries_total{{route=\"{}\"}} {n}", esc(r));
        }
        let _ = writeln!(
            o,
            "# HELP tollgate_attempt_duration_seconds Latency of upstream attempts."
        );
        let _ = writeln!(o, "# TYPE tollgate_attempt_duration_seconds histogram");
        for (u, h) in lock(&self.latency).iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "tollgate_attempt_duration_seconds_bucket{{upstream=\"{}\",le=\"{b}\"}} {}",
                    esc(u),
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "tollgate_attempt_duration_seconds_bucket{{upstream=\"{}\",le=\"+Inf\"}} {}",
                esc(u),
                h.count
            );
            let _ = writeln!(
                o,
                "tollgate_attempt_duration_seconds_sum{{upstream=\"{}\"}} {}",
                esc(u),
                h.sum
            );
            let _ = writeln!(
                o,
                "tollgate_attempt_duration_seconds_count{{upstream=\"{}\"}} {}",
                esc(u),
                h.count
            );
        }
        let _ = writeln!(
            o,
            "# HELP tollgate_breaker_state Breaker state: 0 closed, 1 half-open, 2 open."
        );
        let _ = writeln!(o, "# TYPE tollgate_breaker_state gauge");
        let breakers = stats
            .upstreams
            .iter()
            .filter_map(|u| u.breaker.as_ref())
            .chain(stats.models.iter().filter_map(|m| m.breaker.as_ref()))
            .chain(stats.routes.iter().flat_map(|r| r.breakers.iter()));
        for b in breakers {
            let v = match b.state {
                "open" => 2,
                "half_open" => 1,
                _ => 0,
            };
            let _ = writeln!(
                o,
                "tollgate_breaker_state{{breaker=\"{}\"}} {v}",
                esc(&b.name)
            );
        }
        let _ = writeln!(
            o,
            "# HELP tollgate_spend_usd Spend under the current plan, USD."
        );
        let _ = writeln!(o, "# TYPE tollgate_spend_usd gauge");
        for m in &stats.models {
            let _ = writeln!(
                o,
                "tollgate_spend_usd{{model=\"{}\"}} {}",
                esc(&m.name),
                m.spend_usd
            );
        }
        let _ = writeln!(
            o,
            "# HELP tollgate_budget_remaining_usd What a budget may still spend in its window."
        );
        let _ = writeln!(o, "# TYPE tollgate_budget_remaining_usd gauge");
        for b in &stats.budgets {
            let _ = writeln!(
                o,
                "tollgate_budget_remaining_usd{{budget=\"{}\"}} {}",
                esc(&b.name),
                b.remaining_usd
            );
        }
        if let Some(sh) = &stats.shared {
            for (name, help, v) in [
                (
                    "tollgate_shared_round_trips_total",
                    "Round trips to the shared-state backend.",
                    sh.round_trips,
                ),
                (
                    "tollgate_shared_failures_total",
                    "Failed shared-state backend calls (timeouts, errors).",
                    sh.failures,
                ),
                (
                    "tollgate_shared_fallbacks_total",
                    "Decisions taken by fail_mode while the shared-state backend was unavailable.",
                    sh.fallbacks,
                ),
                (
                    "tollgate_shared_lost_settlements_total",
                    "Shared budget/token settlements given up after their retries.",
                    sh.lost_settlements,
                ),
                (
                    "tollgate_shared_breaker_signals_sent_total",
                    "Trips of this instance's shared breakers published to the other instances.",
                    sh.breaker_signals_sent,
                ),
                (
                    "tollgate_shared_breaker_signals_received_total",
                    "Shared breakers opened because another instance tripped them.",
                    sh.breaker_signals_received,
                ),
            ] {
                let _ = writeln!(o, "# HELP {name} {help}");
                let _ = writeln!(o, "# TYPE {name} counter");
                let _ = writeln!(o, "{name} {v}");
            }
            let _ = writeln!(o, "# HELP tollgate_shared_unavailable 1 while the breaker around the shared-state backend is open.");
            let _ = writeln!(o, "# TYPE tollgate_shared_unavailable gauge");
            let _ = writeln!(o, "tollgate_shared_unavailable {}", sh.unavailable as u8);
        }
        let _ = writeln!(
            o,
            "# HELP tollgate_plan_reloads_total Plans swapped in since start."
        );
        let _ = writeln!(o, "# TYPE tollgate_plan_reloads_total counter");
        let _ = writeln!(
            o,
            "tollgate_plan_reloads_total {}",
            stats.plan_version.saturating_sub(1)
        );
        let _ = writeln!(o, "# HELP tollgate_in_flight Requests in flight.");
        let _ = writeln!(o, "# TYPE tollgate_in_flight gauge");
        let _ = writeln!(o, "tollgate_in_flight {}", self.in_flight.load(Relaxed));
        o
    }
}

/// The state of every upstream key (`api_keys`), appended to the exposition: 1 for the
/// state each key is in (`active`, `resting` or `revoked`), by its variable's name.
pub fn render_keys(o: &mut String, keys: &[(String, Vec<crate::http::KeyView>)]) {
    if keys.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "# HELP tollgate_upstream_key_state An upstream API key's state (1 for the state it is in)."
    );
    let _ = writeln!(o, "# TYPE tollgate_upstream_key_state gauge");
    for (upstream, views) in keys {
        for k in views {
            for state in ["active", "resting", "revoked"] {
                let _ = writeln!(
                    o,
                    "tollgate_upstream_key_state{{upstream=\"{upstream}\",key_env=\"{}\",state=\"{state}\"}} {}",
                    k.env,
                    u8::from(k.state == state)
                );
            }
        }
    }
}

/// Counts a request in flight while alive.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}
