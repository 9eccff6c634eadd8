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

fn pick(n: usize, rng: &mut fastrand::Rng) -> Option<usize> {
    (n > 0).then(|| rng.usize(..n))
}

fn range(rng: &mut fastrand::Rng, (lo, hi): (u64, u64)) -> u64 {
    rng.u64(lo.min(hi)..=hi.max(lo))
}

/// What is drawn for one request, before anything is allocated for it.
struct Draw {
    template: Option<usize>,
    model: Option<usize>,
    task: Option<usize>,
    caller: Option<usize>,
    words: u64,
    max_tokens: Option<u64>,
    input_tokens: Option<u64>,
    stream: bool,
    cancel_after: Option<Duration>,
}

/// A template by weight (`None`: no templates, the traffic's own mix).
fn template(t: &Traffic, rng: &mut fastrand::Rng) -> Option<usize> {
    if t.templates.is_empty() {
        return None;
    }
    let total: f64 = t.templates.iter().map(|x| x.weight.max(0.0)).sum();
    let mut x = rng.f64() * total;
    for (i, tpl) in t.templates.iter().enumerate() {
        x -= tpl.weight.max(0.0);
        if x < 0.0 {
            return Some(i);
        }
    }
    Some(t.templates.len() - 1)
}

fn mix_of(t: &Traffic, template: Option<usize>) -> &Mix {
    template.map_or(&t.mix, |i| &t.templates[i].mix)
}

/// Draws one request's attributes, in the order (and with the draws) of every run.
fn draw(t: &Traffic, rng: &mut fastrand::Rng) -> Draw {
    let template = template(t, rng);
    let m = mix_of(t, template);
    let model = pick(m.models.len(), rng);
    let task = pick(m.tasks.len(), rng);
    let caller = pick(m.callers.len(), rng);
    let (lo, hi) = m.prompt_words;
    let words = range(rng, (u64::from(lo), u64::from(hi)));
    let max_tokens = m.max_tokens.map(|mt| range(rng, mt));
    let input_tokens = match m.input_tokens {
        Some(r) => Some(range(rng, r)),
        None => {
            (rng.f64() < m.counted_input).then(|| range(rng, (u64::from(lo), u64::from(hi) * 2)))
        }
    };
    let stream = rng.f64() < m.stream_share;
    let cancel_after = m.cancel.and_then(|(share, span)| {
        (rng.f64() < share).then(|| Duration::from_millis(range(rng, span)))
    });
    Draw {
        template,
        model,
        task,
        caller,
        words,
        max_tokens,
        input_tokens,
        stream,
        cancel_after,
    }
}

/// The request a draw describes.
fn request(m: &Mix, d: &Draw) -> Request {
    let mut r = Request::new();
    if let Some(i) = d.model {
        r = r.model(m.models[i].clone());
    }
    if let Some(i) = d.task {
        r = r.task(m.tasks[i].clone());
    }
    if let Some(i) = d.caller {
        r = r.caller(m.callers[i].clone());
    }
    // "word " is five bytes: about 1.25 tokens per word by the executor's estimate.
    let mut prompt = "word ".repeat(d.words as usize);
    prompt.push_str(&m.keywords);
    r = r.prompt(prompt);
    if let Some(mt) = d.max_tokens {
        r = r.max_tokens(mt);
    }
    if let Some(n) = d.input_tokens {
        r = r.input_tokens(n);
    }
    r
}

/// Every arrival of the run, in order, drawn one at a time: what is held is the arrival
/// times (8 bytes a request) and a generator's state, not the requests.
pub(crate) struct Arrivals<'t> {
    traffic: &'t Traffic,
    times: std::vec::IntoIter<Duration>,
    rng: fastrand::Rng,
}

impl<'t> Arrivals<'t> {
    /// The arrivals of `t`; `rng` is left where drawing every one of them up front would
    /// have left it (so the seeds drawn after it are those of every run).
    pub(crate) fn new(t: &'t Traffic, rng: &mut fastrand::Rng) -> Self {
        let times = times(t, rng);
        let start = rng.clone();
        for _ in 0..times.len() {
            draw(t, rng);
        }
        Arrivals {
            traffic: t,
            times: times.into_iter(),
            rng: start,
        }
    }

    /// How many are left.
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }
}

impl Iterator for Arrivals<'_> {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        let at = self.times.next()?;
        let d = draw(self.traffic, &mut self.rng);
        let request = request(mix_of(self.traffic, d.template), &d);
        Some(Arrival {
            at,
            request,
            stream: d.stream,
            cancel_after: d.cancel_after,
        })
    }
}
