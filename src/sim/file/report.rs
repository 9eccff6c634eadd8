//! Running a prepared scenario and the report `tollgate simulate` prints: a stable JSON
//! document (keys in `docs/simulate.md`) and a human summary. Nothing in it depends on
//! the wall clock, so the same inputs and seed give the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compile::Prepared;
use crate::plan::Plan;
use crate::sim::{Record, RecordOptions, RunError, RunOptions};

/// Latency percentiles, ms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Cost, USD, by model, route and upstream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostBy {
    /// By model.
    pub model: BTreeMap<String, f64>,
    /// By route.
    pub route: BTreeMap<String, f64>,
    /// By upstream.
    pub upstream: BTreeMap<String, f64>,
}

/// What the same tokens would have cost on the baseline model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Savings {
    /// The baseline model.
    pub baseline_model: String,
    /// The tokens at its prices, USD.
    pub baseline_usd: f64,
    /// `baseline_usd − cost_usd` (negative: the policy cost more).
    pub saved_usd: f64,
}

/// One budget over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BudgetReport {
    /// Limit per window, USD.
    pub limit_usd: f64,
    /// When it ran out (less than 1 % left to reserve), simulated seconds; `null`: never.
    pub exhausted_at_s: Option<f64>,
    /// `[seconds, spent in the current window, USD]`, one per interval.
    pub spent: Vec<(f64, f64)>,
}

/// One breaker over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerReport {
    /// Times it opened.
    pub trips: u64,
    /// Times it closed again.
    pub recoveries: u64,
    /// `[seconds, state]` of each change (`open`, `half_open`, `closed`).
    pub changes: Vec<(f64, &'static str)>,
}

/// The time series, one value per interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    /// Interval width, seconds.
    pub interval_s: f64,
    /// Requests served in each interval.
    pub served: Vec<u64>,
    /// Requests that failed (any other outcome) in each.
    pub failed: Vec<u64>,
    /// Attempts started in each.
    pub attempts: Vec<u64>,
    /// Median latency of the requests that ended in each, ms.
    pub p50_ms: Vec<f64>,
    /// 99th-percentile latency, ms.
    pub p99_ms: Vec<f64>,
    /// Cost of the requests served in each, USD.
    pub cost_usd: Vec<f64>,
}

/// One `[expect]` gate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gate {
    /// The key (`min_success`, `max_cost_usd`, `max_p99`, `max_amplification`).
    pub gate: &'static str,
    /// Its limit (`max_p99` in ms).
    pub limit: f64,
    /// What the run did.
    pub actual: f64,
    /// Whether the run is within it.
    pub passed: bool,
}

/// The report of one policy under the scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyReport {
    /// The policy, as given (paths joined with ` + `).
    pub policy: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests served.
    pub succeeded: u64,
    /// `succeeded / requests` (1 with no requests).
    pub success_rate: f64,
    /// Attempts made (retries, failovers and hedges included).
    pub attempts: u64,
    /// `attempts / requests`.
    pub amplification: f64,
    /// What was spent, USD.
    pub cost_usd: f64,
    /// Latency of the requests that ended (served or failed), ms.
    pub latency_ms: Percentiles,
    /// Simulated time the run took (the traffic and the requests still running at its end).
    pub simulated_seconds: f64,
    /// Requests by outcome: `served`, or why they failed.
    pub outcomes: BTreeMap<String, u64>,
    /// Attempts by how they ended.
    pub attempt_results: BTreeMap<String, u64>,
    /// Moves of served requests to another target.
    pub failovers: u64,
    /// Served requests by route.
    pub served_by_route: BTreeMap<String, u64>,
    /// Served requests by model.
    pub served_by_model: BTreeMap<String, u64>,
    /// Cost by model, route and upstream.
    pub cost_by: CostBy,
    /// Against the baseline model, when there is one.
    pub savings: Option<Savings>,
    /// Each budget.
    pub budgets: BTreeMap<String, BudgetReport>,
    /// Each breaker that changed state.
    pub breakers: BTreeMap<String, BreakerReport>,
    /// Targets a limiter refused, by model, in requests that failed.
    pub limiter_refusals: BTreeMap<String, u64>,
    /// Targets skipped with their breaker open, by model, in requests that failed.
    pub breaker_skips: BTreeMap<String, u64>,
    /// Plan reloads: `[seconds, version]`.
    pub reloads: Vec<(f64, u64)>,
    /// Promises of `docs/guarantees.md` the run broke (0 unless tollgate has a bug).
    pub violations: u64,
    /// The time series.
    pub series: Series,
    /// The `[expect]` gates.
    pub expect: Vec<Gate>,
    /// Whether every gate passed.
    pub passed: bool,
}

/// Differences between the policy and the baseline policy (policy − baseline).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Differences {
    /// Of `success_rate`.
    pub success_rate: f64,
    /// Of `cost_usd`.
    pub cost_usd: f64,
    /// Of `latency_ms.p99`.
    pub p99_ms: f64,
    /// Of `amplification`.
    pub amplification: f64,
    /// Of `failovers`.
    pub failovers: i64,
}

/// The whole document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Document {
    /// The scenario file.
    pub scenario: String,
    /// The seed the run used.
    pub seed: u64,
    /// The scenario's duration, seconds.
    pub duration_s: f64,
    /// The policy's report (its keys at the top level).
    #[serde(flatten)]
    pub report: PolicyReport,
    /// With `--baseline`: the baseline policy's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<PolicyReport>,
    /// With `--baseline`: policy − baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differences: Option<Differences>,
}

/// Runs a prepared scenario under `plan` and reports.
pub fn run(label: &str, plan: Plan, p: &Prepared) -> Result<PolicyReport, RunError> {
    let opts = RunOptions {
        keep_events: false,
        record: Some(RecordOptions {
            bucket_ms: p.bucket_ms,
            sample_ms: (p.bucket_ms / 4).clamp(1, 60_000),
            baseline_model: p.baseline_model.clone(),
        }),
    };
    let r = crate::sim::run_plans(&p.scenario, plan, p.reloads.clone(), &opts)?;
    let rec = r
        .record
        .unwrap_or_else(|| crate::sim::record_empty(p.bucket_ms));
    let s = &r.summary;
    let succeeded = s.outcomes.get("served").copied().unwrap_or(0);
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let mut report = PolicyReport {
        policy: label.to_string(),
        requests: s.requests,
        succeeded,
        success_rate: r6(ratio(succeeded, s.requests)),
        attempts: s.attempts,
        amplification: r6(if s.requests == 0 {
            0.0
        } else {
            ratio(s.attempts, s.requests)
        }),
        cost_usd: r6(rec.spend.total_usd),
        latency_ms: Percentiles {
            p50: r1(rec.latency.quantile(0.5)),
            p90: r1(rec.latency.quantile(0.9)),
            p99: r1(rec.latency.quantile(0.99)),
            max: r1(rec.latency.max()),
        },
        simulated_seconds: s.virtual_ms / 1000.0,
        outcomes: s.outcomes.clone(),
        attempt_results: s.attempt_results.clone(),
        failovers: rec.failovers,
        served_by_route: rec.served_by_route.clone(),
        served_by_model: rec.served_by_model.clone(),
        cost_by: CostBy {
            model: rounded(&rec.spend.by_model),
            route: rounded(&rec.spend.by_route),
            upstream: rounded(&rec.spend.by_upstream),
        },
        savings: rec.spend.baseline.as_ref().map(|(m, usd)| Savings {
            baseline_model: m.clone(),
            baseline_usd: r6(*usd),
            saved_usd: r6(usd - rec.spend.total_usd),
        }),
        budgets: budgets(&rec),
        breakers: breakers(&rec),
        limiter_refusals: rec.limiter_refusals.clone(),
        breaker_skips: rec.breaker_skips.clone(),
        reloads: rec.reloads.iter().map(|(t, v)| (secs(*t), *v)).collect(),
        violations: r.violation_count,
        series: series(&rec),
        expect: Vec::new(),
        passed: true,
    };
    report.expect = gates(&report, p);
    report.passed = report.expect.iter().all(|g| g.passed);
    Ok(report)
}

/// Rounded to a millionth (dollars, ratios): the document does not show float noise.
fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Rounded to a tenth (milliseconds).
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn rounded(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter().map(|(k, v)| (k.clone(), r6(*v))).collect()
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn budgets(rec: &Record) -> BTreeMap<String, BudgetReport> {
    rec.budgets
        .iter()
        .map(|(name, b)| {
            let r = BudgetReport {
                limit_usd: b.limit_usd,
                exhausted_at_s: b.exhausted_at_ms.map(secs),
                spent: b.spent.iter().map(|(t, v)| (secs(*t), r6(*v))).collect(),
            };
            (name.clone(), r)
        })
        .collect()
}

fn breakers(rec: &Record) -> BTreeMap<String, BreakerReport> {
    rec.breakers
        .iter()
        .map(|(name, changes)| {
            let count = |s: &str| changes.iter().filter(|(_, x)| *x == s).count() as u64;
            let r = BreakerReport {
                trips: count("open"),
                recoveries: count("closed"),
                changes: changes.iter().map(|(t, s)| (secs(*t), *s)).collect(),
            };
            (name.clone(), r)
        })
        .collect()
}

fn series(rec: &Record) -> Series {
    let iv = &rec.intervals;
    let served = |i: &crate::sim::Interval| i.outcomes.get("served").copied().unwrap_or(0);
    Series {
        interval_s: secs(rec.bucket_ms),
        served: iv.iter().map(served).collect(),
        failed: iv
            .iter()
            .map(|i| i.outcomes.values().sum::<u64>() - served(i))
            .collect(),
        attempts: iv.iter().map(|i| i.attempts).collect(),
        p50_ms: iv.iter().map(|i| r1(i.latency.quantile(0.5))).collect(),
        p99_ms: iv.iter().map(|i| r1(i.latency.quantile(0.99))).collect(),
        cost_usd: iv.iter().map(|i| r6(i.cost_usd)).collect(),
    }
}

fn gates(r: &PolicyReport, p: &Prepared) -> Vec<Gate> {
    let e = &p.expect;
    let mut out = Vec::new();
    let mut gate = |gate, limit: Option<f64>, actual: f64, min: bool| {
        if let Some(limit) = limit {
            let passed = if min {
                actual >= limit
            } else {
                actual <= limit
            };
            out.push(Gate {
                gate,
                limit,
                actual,
                passed,
            });
        }
    };
    gate("min_success", e.min_success, r.success_rate, true);
    gate("max_cost_usd", e.max_cost_usd, r.cost_usd, false);
    let p99 = e.max_p99.map(|d| d.get().as_secs_f64() * 1000.0);
    gate("max_p99", p99, r.latency_ms.p99, false);
    gate(
        "max_amplification",
        e.max_amplification,
        r.amplification,
        false,
    );
    out
}

/// policy − baseline.
pub fn differences(a: &PolicyReport, b: &PolicyReport) -> Differences {
    Differences {
        success_rate: r6(a.success_rate - b.success_rate),
        cost_usd: r6(a.cost_usd - b.cost_usd),
        p99_ms: r1(a.latency_ms.p99 - b.latency_ms.p99),
        amplification: r6(a.amplification - b.amplification),
        failovers: a.failovers as i64 - b.failovers as i64,
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn dur(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.0}ms")
    }
}

/// The human summary of one report.
fn human_one(r: &PolicyReport, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "policy {}", r.policy);
    let _ = writeln!(
        out,
        "  requests {}  served {} ({})  attempts {} (×{:.2})  failovers {}",
        r.requests,
        r.succeeded,
        pct(r.success_rate),
        r.attempts,
        r.amplification,
        r.failovers
    );
    let l = &r.latency_ms;
    let _ = writeln!(
        out,
        "  latency p50 {}  p90 {}  p99 {}  max {}",
        dur(l.p50),
        dur(l.p90),
        dur(l.p99),
        dur(l.max)
    );
    let _ = write!(out, "  cost ${:.2}", r.cost_usd);
    if let Some(s) = &r.savings {
        let _ = write!(
            out,
            " (${:.2} on {}: ${:.2} saved)",
            s.baseline_usd, s.baseline_model, s.saved_usd
        );
    }
    let _ = writeln!(out);
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "  outcomes: {}", list(&r.outcomes));
    if !r.served_by_route.is_empty() {
        let _ = writeln!(out, "  served by route: {}", list(&r.served_by_route));
        let _ = writeln!(out, "  served by model: {}", list(&r.served_by_model));
    }
    for (name, b) in &r.breakers {
        let _ = writeln!(
            out,
            "  breaker {name}: {} trips, {} recoveries{}",
            b.trips,
            b.recoveries,
            b.changes
                .iter()
                .find(|(_, s)| *s == "open")
                .map(|(t, _)| format!(", first open at {t}s"))
                .unwrap_or_default()
        );
    }
    for (name, b) in &r.budgets {
        let spent = b.spent.last().map_or(0.0, |(_, v)| *v);
        let ran_out = b
            .exhausted_at_s
            .map(|t| format!(", ran out at {t}s"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  budget {name}: ${spent:.2} of ${:.2} at the end{ran_out}",
            b.limit_usd
        );
    }
    if !r.limiter_refusals.is_empty() {
        let _ = writeln!(out, "  limiter refusals: {}", list(&r.limiter_refusals));
    }
    if r.violations > 0 {
        let _ = writeln!(out, "  BROKEN PROMISES: {} (a tollgate bug)", r.violations);
    }
    for g in &r.expect {
        let _ = writeln!(
            out,
            "  expect {} {}: {} ({})",
            g.gate,
            g.limit,
            if g.passed { "ok" } else { "FAILED" },
            g.actual
        );
    }
}

/// The human report.
pub fn human(d: &Document) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "scenario {} (seed {}, {}s simulated)\n",
        d.scenario, d.seed, d.duration_s
    );
    human_one(&d.report, &mut out);
    if let (Some(b), Some(x)) = (&d.baseline, &d.differences) {
        out.push_str("baseline ");
        human_one(b, &mut out);
        let r = &d.report;
        let _ = writeln!(
            out,
            "differences (baseline → policy): success {} → {} ({:+.2} pt), cost ${:.2} → ${:.2} ({:+.2}), p99 {} → {}, amplification {:.2} → {:.2}, failovers {:+}",
            pct(b.success_rate),
            pct(r.success_rate),
            x.success_rate * 100.0,
            b.cost_usd,
            r.cost_usd,
            x.cost_usd,
            dur(b.latency_ms.p99),
            dur(r.latency_ms.p99),
            b.amplification,
            r.amplification,
            x.failovers
        );
    }
    out.push_str(if d.report.passed {
        "expect: passed\n"
    } else {
        "expect: FAILED\n"
    });
    out
}
