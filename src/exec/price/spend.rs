//! Where the money went: spend and tokens by model, route and upstream.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Price, Usage, Usd};
use crate::exec::stripe;

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    nanos: AtomicU64,
}

impl Counters {
    #[inline]
    fn add(&self, u: Usage, cost: Usd) {
        self.calls.fetch_add(1, Relaxed);
        self.input_tokens.fetch_add(u.input_tokens, Relaxed);
        self.output_tokens.fetch_add(u.output_tokens, Relaxed);
        self.nanos.fetch_add(cost.nanos(), Relaxed);
    }

    fn line(&self) -> SpendLine {
        SpendLine {
            calls: self.calls.load(Relaxed),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
            spend: Usd::from_nanos(self.nanos.load(Relaxed)),
        }
    }
}

/// Which model and route a call used, as the small integer ids the plan assigns (the
/// upstream follows from the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpendKey {
    /// Model id, `0..n_models`.
    pub model: usize,
    /// Route id, `0..n_routes`.
    pub route: usize,
}

/// Totals for one model, route, upstream, or everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendLine {
    /// Calls recorded.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost.
    pub spend: Usd,
}

impl SpendLine {
    /// The tokens as a [`Usage`].
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        }
    }
}

/// An owned snapshot from [`SpendTracker::report`]; vectors are indexed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendReport {
    /// Everything recorded.
    pub total: SpendLine,
    /// Per model id.
    pub by_model: Vec<SpendLine>,
    /// Per route id.
    pub by_route: Vec<SpendLine>,
    /// Per upstream id.
    pub by_upstream: Vec<SpendLine>,
}

/// What the recorded usage would have cost at a baseline price, against what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savings {
    /// The same tokens at the baseline price.
    pub baseline: Usd,
    /// What was actually spent.
    pub actual: Usd,
}

impl Savings {
    /// `baseline − actual` in nano-dollars; negative when routing cost more than the baseline.
    pub fn saved_nanos(&self) -> i128 {
        i128::from(self.baseline.nanos()) - i128::from(self.actual.nanos())
    }

    /// `baseline − actual` in dollars.
    pub fn saved_dollars(&self) -> f64 {
        self.saved_nanos() as f64 / 1e9
    }
}

impl fmt::Display for Savings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, diff) = if self.actual <= self.baseline {
            ("", self.baseline.saturating_sub(self.actual))
        } else {
            ("-", self.actual.saturating_sub(self.baseline))
        };
        write!(
            f,
            "{sign}{diff} saved ({} spent vs {} baseline)",
            self.actual, self.baseline
        )
    }
}

/// Accumulates spend and tokens by model, route and upstream. Counters are preallocated per
/// model and per route, and once per thread stripe (`exec::stripe`: threads calling at once
/// do not write the same cache lines), so [`record`](Self::record) is eight relaxed atomic
/// adds on lines the thread keeps to itself and never allocates; [`report`](Self::report)
/// sums the stripes, and makes the upstream lines and the total as sums of the model lines.
/// Totals wrap only beyond `u64` (≈ $18.4 billion, 1.8e19 tokens).
///
/// ```
/// use tollgate::exec::price::{Price, SpendKey, SpendTracker, Usage};
///
/// // Two models, both on upstream 0; one route.
/// let t = SpendTracker::new(&[0, 0], 1, 1);
/// let cheap = Price::new(0.07, 0.42)?;
/// let usage = Usage { input_tokens: 1_000_000, output_tokens: 0 };
/// t.record(SpendKey { model: 1, route: 0 }, usage, cheap.cost(usage));
/// let s = t.savings(Price::new(3.0, 15.0)?);
/// assert_eq!(s.saved_dollars(), 2.93);
/// assert_eq!(t.report().by_model[1].calls, 1);
/// assert_eq!(t.report().by_upstream[0].calls, 1);
/// # Ok::<(), tollgate::exec::price::PriceError>(())
/// ```
#[derive(Debug)]
pub struct SpendTracker {
    models: Lines,
    routes: Lines,
    /// The upstream of each model.
    model_upstream: Box<[usize]>,
    n_upstreams: usize,
}

/// `n` lines of counters once per thread stripe, in one allocation: stripe `i` is
/// `all[i * stride..][..n]`, and a gap of [`GAP`] counters (four cache lines) after each
/// stripe's lines keeps two stripes off one cache line (separate allocations may sit side
/// by side in one).
#[derive(Debug)]
struct Lines {
    all: Box<[Counters]>,
    n: usize,
    stride: usize,
    stripes: usize,
}

/// Counters between two stripes' lines (32 bytes each: 256 bytes).
const GAP: usize = 8;

impl Lines {
    fn new(n: usize) -> Self {
        let (stride, stripes) = (n + GAP, stripe::stripes());
        let all = (0..stride * stripes).map(|_| Counters::default()).collect();
        Lines {
            all,
            n,
            stride,
            stripes,
        }
    }

    /// This thread's stripe of lines.
    #[inline]
    fn here(&self) -> &[Counters] {
        &self.all[stripe::index_in(self.stripes) * self.stride..][..self.n]
    }

    /// Each line, summed over the stripes.
    fn sum(&self) -> Vec<SpendLine> {
        let mut out = vec![SpendLine::default(); self.n];
        for stripe in self.all.chunks(self.stride) {
            for (o, c) in out.iter_mut().zip(stripe) {
                *o = o.plus(c.line());
            }
        }
        out
    }
}

impl SpendLine {
    fn plus(self, o: SpendLine) -> SpendLine {
        SpendLine {
            calls: self.calls.wrapping_add(o.calls),
            input_tokens: self.input_tokens.wrapping_add(o.input_tokens),
            output_tokens: self.output_tokens.wrapping_add(o.output_tokens),
            spend: self.spend.saturating_add(o.spend),
        }
    }
}

impl SpendTracker {
    /// A tracker for models `0..model_upstream.len()` (each on the upstream id given),
    /// routes `0..n_routes` and upstreams `0..n_upstreams`.
    pub fn new(model_upstream: &[usize], n_routes: usize, n_upstreams: usize) -> Self {
        SpendTracker {
            models: Lines::new(model_upstream.len()),
            routes: Lines::new(n_routes),
            model_upstream: model_upstream.into(),
            n_upstreams,
        }
    }

    /// Record one call's usage and cost. A call with an out-of-range model id is not
    /// recorded (the plan's ids are always in range); an out-of-range route id only misses
    /// its route line.
    #[inline]
    pub fn record(&self, key: SpendKey, usage: Usage, cost: Usd) {
        if let Some(c) = self.models.here().get(key.model) {
            c.add(usage, cost);
            if let Some(r) = self.routes.here().get(key.route) {
                r.add(usage, cost);
            }
        }
    }

    /// An owned snapshot. Each counter is read atomically; the snapshot as a whole is not
    /// (a call recorded meanwhile may appear in some lines and not others).
    pub fn report(&self) -> SpendReport {
        let by_model = self.models.sum();
        let mut by_upstream = vec![SpendLine::default(); self.n_upstreams];
        let mut total = SpendLine::default();
        for (line, &u) in by_model.iter().zip(self.model_upstream.iter()) {
            total = total.plus(*line);
            if let Some(slot) = by_upstream.get_mut(u) {
                *slot = slot.plus(*line);
            }
        }
        SpendReport {
            total,
            by_model,
            by_route: self.routes.sum(),
            by_upstream,
        }
    }

    /// What all recorded tokens would have cost at `baseline`, against what they cost.
    pub fn savings(&self, baseline: Price) -> Savings {
        self.report().savings(baseline)
    }
}

impl SpendReport {
    /// What the report's tokens would have cost at `baseline`, against what they cost.
    pub fn savings(&self, baseline: Price) -> Savings {
        Savings {
            baseline: baseline.cost(self.total.usage()),
            actual: self.total.spend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_by_every_dimension() {
        let t = SpendTracker::new(&[0, 0], 2, 1);
        let u = Usage {
            input_tokens: 10,
            output_tokens: 5,
        };
        t.record(SpendKey { model: 0, route: 1 }, u, Usd::from_nanos(100));
        t.record(SpendKey { model: 1, route: 1 }, u, Usd::from_nanos(50));
        t.record(SpendKey { model: 9, route: 9 }, u, Usd::from_nanos(1));
        let r = t.report();
        assert_eq!(r.total.calls, 2, "an out-of-range model id is not recorded");
        assert_eq!(r.total.spend, Usd::from_nanos(150));
        assert_eq!(r.by_model[0].spend, Usd::from_nanos(100));
        assert_eq!(r.by_route[1].calls, 2);
        assert_eq!(r.by_route[0], SpendLine::default());
        assert_eq!(r.by_upstream[0].input_tokens, 20);
    }

    #[test]
    fn savings_can_be_negative() {
        let t = SpendTracker::new(&[0], 1, 1);
        let k = SpendKey { model: 0, route: 0 };
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 0,
        };
        t.record(k, u, Usd::from_dollars(3.0).unwrap());
        let s = t.savings(Price::new(1.0, 1.0).unwrap());
        assert_eq!(s.saved_nanos(), -2_000_000_000);
        assert_eq!(
            s.to_string(),
            "-$2.0000 saved ($3.0000 spent vs $1.0000 baseline)"
        );
    }
}
