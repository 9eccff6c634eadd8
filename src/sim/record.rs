//! What a run looked like over time, in memory bounded by the run's duration and the
//! policy's size, never by its number of requests: latency histograms, per-interval
//! counts, breaker transitions, budget samples. Built when [`RunOptions::record`]
//! asks for it (`tollgate simulate`'s report is made from it).
//!
//! [`RunOptions::record`]: super::RunOptions::record

use std::collections::BTreeMap;

use super::event::{Event, Outcome};
use crate::exec::{Executor, SkipReason};

/// How finely to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOptions {
    /// Width of one interval of the time series, ms (at least 1).
    pub bucket_ms: u64,
    /// How often budgets are sampled, ms (at least 1).
    pub sample_ms: u64,
    /// The model savings are computed against (default: the plan's `baseline_model`).
    pub baseline_model: Option<String>,
}

/// A latency histogram on a geometric grid: bucket `i > 0` holds values in
/// `[g^(i-1), g^i)` ms, bucket 0 those under 1 ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    growth: f64,
    counts: Vec<u64>,
    total: u64,
    max_ms: f64,
}

impl Histogram {
    /// An empty histogram whose buckets grow by `growth` (e.g. 1.02: 2 % wide).
    pub fn new(growth: f64) -> Self {
        Histogram {
            growth,
            counts: Vec::new(),
            total: 0,
            max_ms: 0.0,
        }
    }

    /// Adds one value, ms.
    pub fn add(&mut self, ms: f64) {
        let i = if ms < 1.0 {
            0
        } else {
            // Values up to 2^64 ms stay within a few thousand buckets.
            1 + (ms.ln() / self.growth.ln()).floor() as usize
        };
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value added, ms (0 when empty).
    pub fn max(&self) -> f64 {
        self.max_ms
    }

    /// The `q`-quantile (0..=1), ms: the upper bound of its bucket, at most the maximum;
    /// 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = if i == 0 {
                    1.0
                } else {
                    self.growth.powi(i as i32)
                };
                return bound.min(self.max_ms);
            }
        }
        self.max_ms
    }
}

/// One interval of the time series.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Requests that ended in it, by outcome label (`served`, a stop reason, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Latency of the requests that ended in it.
    pub latency: Histogram,
    /// Cost of the requests served in it, USD.
    pub cost_usd: f64,
    /// Attempts started in it.
    pub attempts: u64,
}

impl Interval {
    fn new() -> Self {
        Interval {
            outcomes: BTreeMap::new(),
            latency: Histogram::new(1.1),
            cost_usd: 0.0,
            attempts: 0,
        }
    }
}

/// One budget's spend, sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetTrack {
    /// Its limit per window, USD.
    pub limit_usd: f64,
    /// `(ms, spent in the current window, USD)`, one per interval (its last sample).
    pub spent: Vec<(u64, f64)>,
    /// When a sample first found less than 1 % of the limit left to reserve, ms.
    pub exhausted_at_ms: Option<u64>,
}

/// Everything recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Interval width, ms.
    pub bucket_ms: u64,
    /// The time series, one entry per interval from the start.
    pub intervals: Vec<Interval>,
    /// Latency of every request that ended (served or not; cancelled and panicked left
    /// out), to its answer (a stream: its first byte).
    pub latency: Histogram,
    /// Moves to another target, summed over served requests.
    pub failovers: u64,
    /// Served requests by route, and by model.
    pub served_by_route: BTreeMap<String, u64>,
    /// Served requests by model.
    pub served_by_model: BTreeMap<String, u64>,
    /// Targets skipped because a limiter could not admit them, by model, in requests that
    /// failed.
    pub limiter_refusals: BTreeMap<String, u64>,
    /// Targets skipped because a breaker was open, by model, in requests that failed.
    pub breaker_skips: BTreeMap<String, u64>,
    /// Each breaker's state changes: `(ms, new state)`.
    pub breakers: BTreeMap<String, Vec<(u64, &'static str)>>,
    /// Each budget's spend.
    pub budgets: BTreeMap<String, BudgetTrack>,
    /// Plan reloads: `(ms, version)`.
    pub reloads: Vec<(u64, u64)>,
    /// What the executor recorded as spent (late usage of streams and billed failures
    /// included), under the plan in force at the end, USD.
    pub spend: Spend,
}

impl Spend {
    /// Adds what `rt` recorded; the baseline is `baseline` (default: the plan's own).
    fn add(&mut self, rt: &crate::exec::state::Runtime, baseline: Option<&str>) {
        let plan = &rt.plan;
        let report = rt.spend.report();
        let usd = |u: crate::exec::price::Usd| u.nanos() as f64 / 1e9;
        let add = |map: &mut BTreeMap<String, f64>,
                   lines: &[crate::exec::price::SpendLine],
                   name: &dyn Fn(usize) -> String| {
            for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.calls > 0) {
                *map.entry(name(i)).or_default() += usd(l.spend);
            }
        };
        self.total_usd += usd(report.total.spend);
        add(&mut self.by_model, &report.by_model, &|i| {
            plan.models[i].name.clone()
        });
        add(&mut self.by_route, &report.by_route, &|i| {
            plan.routes[i].name.clone()
        });
        add(&mut self.by_upstream, &report.by_upstream, &|i| {
            plan.upstreams[i].name.clone()
        });
        let model = match baseline {
            Some(name) => plan.model_by_name(name),
            None => plan.baseline_model,
        };
        if let Some((m, price)) = model.and_then(|m| Some((m, plan.model(m).price?))) {
            let saved = report.savings(price);
            let entry = self
                .baseline
                .get_or_insert_with(|| (plan.model(m).name.clone(), 0.0));
            entry.1 += usd(saved.baseline);
        }
    }
}

/// Spend by model, route and upstream, and against a baseline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spend {
    /// Everything, USD.
    pub total_usd: f64,
    /// By model name.
    pub by_model: BTreeMap<String, f64>,
    /// By route name.
    pub by_route: BTreeMap<String, f64>,
    /// By upstream name.
    pub by_upstream: BTreeMap<String, f64>,
    /// `(baseline model, what the same tokens would have cost on it, USD)`.
    pub baseline: Option<(String, f64)>,
}

/// Builds a [`Record`] from the events and the executor's state.
#[derive(Debug)]
pub(crate) struct Recorder {
    opts: RecordOptions,
    rec: Record,
    starts: BTreeMap<u64, u64>,
    /// Last seen `(state, transitions)` of each breaker, and the plan version they are of.
    seen: BTreeMap<String, (&'static str, u64)>,
    version: u64,
    next_sample_ms: u64,
    /// The runtimes of plans swapped out: their spend counts too (calls that started
    /// under them settle there).
    retired: Vec<std::sync::Arc<crate::exec::state::Runtime>>,
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

impl Recorder {
    pub(crate) fn new(opts: RecordOptions) -> Self {
        let bucket_ms = opts.bucket_ms.max(1);
        Recorder {
            opts: RecordOptions {
                bucket_ms,
                sample_ms: opts.sample_ms.max(1),
                ..opts
            },
            rec: Record {
                bucket_ms,
                intervals: Vec::new(),
                latency: Histogram::new(1.02),
                failovers: 0,
                served_by_route: BTreeMap::new(),
                served_by_model: BTreeMap::new(),
                limiter_refusals: BTreeMap::new(),
                breaker_skips: BTreeMap::new(),
                breakers: BTreeMap::new(),
                budgets: BTreeMap::new(),
                reloads: Vec::new(),
                spend: Spend::default(),
            },
            starts: BTreeMap::new(),
            seen: BTreeMap::new(),
            version: 0,
            next_sample_ms: 0,
            retired: Vec::new(),
        }
    }

    fn interval(&mut self, at_ns: u64) -> &mut Interval {
        let i = (ms(at_ns) / self.opts.bucket_ms) as usize;
        if self.rec.intervals.len() <= i {
            self.rec.intervals.resize_with(i + 1, Interval::new);
        }
        &mut self.rec.intervals[i]
    }

    pub(crate) fn on(&mut self, ev: &Event, exec: &Executor) {
        let at = ev.at();
        match ev {
            Event::RequestStart { req, .. } => {
                self.starts.insert(*req, at);
            }
            Event::AttemptStart { .. } => {
                self.interval(at).attempts += 1;
                self.breakers(at, exec);
            }
            Event::AttemptEnd { .. } => self.breakers(at, exec),
            Event::RequestEnd { req, outcome, .. } => self.request_end(at, *req, outcome),
            Event::StreamEnd { .. } => {}
            Event::Reload { version, .. } => self.rec.reloads.push((ms(at), *version)),
        }
        if ms(at) >= self.next_sample_ms {
            self.sample(at, exec);
        }
    }

    fn request_end(&mut self, at: u64, req: u64, outcome: &Outcome) {
        let start = self.starts.remove(&req);
        let counted = !matches!(outcome, Outcome::Cancelled | Outcome::Panicked);
        let label = outcome.label();
        let iv = self.interval(at);
        *iv.outcomes.entry(label).or_default() += 1;
        let latency = start.map(|s| at.saturating_sub(s) as f64 / 1e6);
        if let (true, Some(l)) = (counted, latency) {
            iv.latency.add(l);
        }
        if let Outcome::Served { cost_usd, .. } = outcome {
            iv.cost_usd += cost_usd;
        }
        if let (true, Some(l)) = (counted, latency) {
            self.rec.latency.add(l);
        }
        if let Outcome::Served {
            route,
            model,
            failovers,
            ..
        } = outcome
        {
            self.rec.failovers += u64::from(*failovers);
            *self.rec.served_by_route.entry(route.clone()).or_default() += 1;
            *self.rec.served_by_model.entry(model.clone()).or_default() += 1;
        }
    }

    /// Keeps the runtime of a plan about to be swapped out, for its spend.
    pub(crate) fn retire(&mut self, rt: std::sync::Arc<crate::exec::state::Runtime>) {
        self.retired.push(rt);
    }

    /// Counts the targets a failed request skipped, by why.
    pub(crate) fn skipped(&mut self, skipped: &[crate::exec::SkipRecord]) {
        for s in skipped {
            let map = match s.reason {
                SkipReason::Limited(_) => &mut self.rec.limiter_refusals,
                SkipReason::BreakerOpen { .. } => &mut self.rec.breaker_skips,
                _ => continue,
            };
            *map.entry(s.model.clone()).or_default() += 1;
        }
    }

    /// Notes every breaker whose state changed since last seen.
    fn breakers(&mut self, at: u64, exec: &Executor) {
        let rt = exec.runtime();
        if rt.version != self.version {
            // A new plan: its breakers carry over their state; compare from it on.
            self.seen.clear();
            self.version = rt.version;
        }
        let now = exec.clock().now();
        let slots = rt
            .upstreams
            .iter()
            .filter_map(|u| u.breaker.as_ref())
            .chain(rt.models.iter().filter_map(|m| m.breaker.as_ref()))
            .chain(rt.routes.iter().flat_map(|r| r.breakers.iter()));
        for slot in slots {
            let s = slot.breaker.snapshot(now);
            let state = s.state.name();
            match self.seen.get(&slot.name) {
                Some(&(prev, n)) if prev == state && n == s.transitions => continue,
                None if s.transitions == 0 => {
                    self.seen.insert(slot.name.clone(), (state, 0));
                    continue;
                }
                _ => {}
            }
            self.seen.insert(slot.name.clone(), (state, s.transitions));
            let log = self.rec.breakers.entry(slot.name.clone()).or_default();
            if log.last().map(|(_, st)| *st) != Some(state) {
                log.push((ms(at), state));
            }
        }
    }

    fn sample(&mut self, at: u64, exec: &Executor) {
        self.next_sample_ms = (ms(at) / self.opts.sample_ms + 1) * self.opts.sample_ms;
        let bucket = ms(at) / self.opts.bucket_ms * self.opts.bucket_ms;
        for b in exec.stats().budgets {
            let track = self
                .rec
                .budgets
                .entry(b.name.clone())
                .or_insert_with(|| BudgetTrack {
                    limit_usd: b.limit_usd,
                    spent: Vec::new(),
                    exhausted_at_ms: None,
                });
            track.limit_usd = b.limit_usd;
            match track.spent.last_mut() {
                Some((t, spent)) if *t == bucket => *spent = b.spent_usd,
                _ => track.spent.push((bucket, b.spent_usd)),
            }
            if track.exhausted_at_ms.is_none() && b.remaining_usd < 0.01 * b.limit_usd {
                track.exhausted_at_ms = Some(ms(at));
            }
        }
    }

    pub(crate) fn finish(mut self, at: u64, exec: &Executor) -> Record {
        self.breakers(at, exec);
        self.sample(at, exec);
        let mut spend = Spend::default();
        for rt in self.retired.iter().chain(std::iter::once(&exec.runtime())) {
            spend.add(rt, self.opts.baseline_model.as_deref());
        }
        self.rec.spend = spend;
        self.rec
    }
}

/// An empty record with intervals of `bucket_ms`.
pub fn record_empty(bucket_ms: u64) -> Record {
    Recorder::new(RecordOptions {
        bucket_ms,
        sample_ms: bucket_ms,
        baseline_model: None,
    })
    .rec
}
