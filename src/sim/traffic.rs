//! Traffic: when requests arrive and what they ask for.

use std::time::Duration;

use super::scenario::{Mix, Traffic};
use crate::exec::Request;

/// One request to send.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// Virtual time of arrival.
    pub(crate) at: Duration,
    pub(crate) request: Request,
    pub(crate) stream: bool,
    /// The caller drops the future after this long.
    pub(crate) cancel_after: Option<Duration>,
}

/// Arrival times of every segment and burst, sorted, at most `max_requests`.
fn times(t: &Traffic, rng: &mut fastrand::Rng) -> Vec<Duration> {
    let mut out: Vec<u64> = Vec::new();
    let cap = t.max_requests as usize;
    for s in &t.segments {
        let (from, to) = (s.from_ms as f64, s.to_ms.max(s.from_ms) as f64);
        let mut now = from;
        while out.len() < cap * 2 {
            let frac = if to > from {
                (now - from) / (to - from)
            } else {
                0.0
            };
            let rate = s.start_per_s + (s.end_per_s - s.start_per_s) * frac;
            if !rate.is_finite() || rate <= 0.0 {
                break;
            }
            // Exponential gap, in ms.
            now += -(1.0 - rng.f64()).ln() * 1000.0 / rate;
            if now >= to {
                break;
            }
            out.push((now * 1e6) as u64);
        }
    }
    for b in &t.bursts {
        out.extend(std::iter::repeat_n(
            b.at_ms.saturating_mul(1_000_000),
            b.count as usize,
        ));
    }
    out.sort_unstable();
    out.truncate(cap);
    out.into_iter().map(Duration::from_nanos).collect()
}

fn pick<'a>(v: &'a [String], rng: &mut fastrand::Rng) -> Option<&'a String> {
    (!v.is_empty()).then(|| &v[rng.usize(..v.len())])
}

fn range(rng: &mut fastrand::Rng, (lo, hi): (u64, u64)) -> u64 {
    rng.u64(lo.min(hi)..=hi.max(lo))
}

/// A request drawn from the mix.
fn request(m: &Mix, rng: &mut fastrand::Rng) -> Request {
    let mut r = Request::new();
    if let Some(x) = pick(&m.models, rng) {
        r = r.model(x.clone());
    }
    if let Some(x) = pick(&m.tasks, rng) {
        r = r.task(x.clone());
    }
    if let Some(x) = pick(&m.callers, rng) {
        r = r.caller(x.clone());
    }
    let (lo, hi) = m.prompt_words;
    let words = range(rng, (u64::from(lo), u64::from(hi)));
    // "word " is five bytes: about 1.25 tokens per word by the executor's estimate.
    r = r.prompt("word ".repeat(words as usize));
    if let Some(mt) = m.max_tokens {
        r = r.max_tokens(range(rng, mt));
    }
    if rng.f64() < m.counted_input {
        r = r.input_tokens(range(rng, (u64::from(lo), u64::from(hi) * 2)));
    }
    r
}

/// Every arrival of the run, in order.
pub(crate) fn arrivals(t: &Traffic, rng: &mut fastrand::Rng) -> Vec<Arrival> {
    times(t, rng)
        .into_iter()
        .map(|at| {
            let request = request(&t.mix, rng);
            let stream = rng.f64() < t.mix.stream_share;
            let cancel_after = t.mix.cancel.and_then(|(share, span)| {
                (rng.f64() < share).then(|| Duration::from_millis(range(rng, span)))
            });
            Arrival {
                at,
                request,
                stream,
                cancel_after,
            }
        })
        .collect()
}
