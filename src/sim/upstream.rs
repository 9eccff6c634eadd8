//! Scripted upstreams: what one attempt does, drawn from the phase in force.

use std::time::Duration;

use super::scenario::{Phase, Scenario};
use crate::exec::{Failure, Usage};

/// A call that never answers sleeps this long (past any sane per-try timeout: the executor
/// must cut it).
pub(crate) const HANG: Duration = Duration::from_secs(3600);

/// What one attempt will do.
#[derive(Debug, Clone)]
pub(crate) enum Play {
    /// Answer after `after` (a stream: its first byte).
    Answer {
        after: Duration,
        usage: Usage,
        rate_limit: Option<(u64, Duration)>,
        stream: Option<StreamPlan>,
    },
    /// Fail after `after`.
    Fail { after: Duration, failure: Failure },
    /// Panic after `after`.
    Panic { after: Duration },
}

/// How a stream goes after its first byte.
#[derive(Debug, Clone)]
pub(crate) struct StreamPlan {
    /// How long it runs.
    pub(crate) lasts: Duration,
    /// Why it breaks, if it does (then no usage is reported).
    pub(crate) breaks: Option<Failure>,
    /// Usage its last chunk reports.
    pub(crate) usage: Usage,
}

/// What an attempt needs to know about its request.
pub(crate) struct Ask<'a> {
    pub(crate) upstream: &'a str,
    pub(crate) model: &'a str,
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) stream: bool,
    pub(crate) panic_share: f64,
    /// Virtual ms since the start.
    pub(crate) now_ms: u64,
}

/// The phase in force for a model (its own script first, else its upstream's).
fn phase<'s>(s: &'s Scenario, ask: &Ask<'_>) -> Option<&'s Phase> {
    let script = s
        .upstreams
        .iter()
        .find(|u| u.name == ask.model)
        .or_else(|| s.upstreams.iter().find(|u| u.name == ask.upstream))?;
    script
        .phases
        .iter()
        .take_while(|p| p.from_ms <= ask.now_ms)
        .last()
}

fn ms(rng: &mut fastrand::Rng, (lo, hi): (u64, u64)) -> Duration {
    Duration::from_millis(rng.u64(lo.min(hi)..=hi.max(lo)))
}

/// Draws what one attempt does.
pub(crate) fn draw(s: &Scenario, ask: &Ask<'_>, rng: &mut fastrand::Rng) -> Play {
    let default = Phase::default();
    let p = phase(s, ask).unwrap_or(&default);
    let mut after = match p.latency_p50_p99 {
        Some((p50, p99)) => lognormal(rng, p50, p99),
        None => ms(rng, p.latency_ms),
    };
    if let Some((share, slow)) = p.slow {
        if rng.f64() < share {
            after += Duration::from_millis(slow);
        }
    }
    if ask.panic_share > 0.0 && rng.f64() < ask.panic_share {
        return Play::Panic { after };
    }
    let usage = Usage {
        input_tokens: scale(ask.input, p.usage_factor, rng),
        output_tokens: scale(ask.output, p.usage_factor, rng),
    };
    if p.outage {
        return Play::Fail {
            after: after / 4,
            failure: Failure::connect("connection refused (outage)"),
        };
    }
    if let Some((share, status)) = p.partial_outage {
        if rng.f64() < share {
            let failure = match status {
                Some(code) => Failure::status(code).message("outage"),
                None => Failure::connect("connection refused (outage)"),
            };
            return Play::Fail {
                after: after / 4,
                failure,
            };
        }
    }
    if let Some(failure) = fault(p, usage, rng) {
        let after = if failure.kind == crate::exec::FailureKind::Timeout {
            HANG
        } else {
            after
        };
        return Play::Fail { after, failure };
    }
    let rate_limit = p
        .rate_limit
        .map(|(remaining, reset)| (remaining, Duration::from_millis(reset)));
    let stream = ask.stream.then(|| StreamPlan {
        lasts: ms(rng, p.stream_ms),
        breaks: (rng.f64() < p.stream_break).then(|| {
            if rng.bool() {
                Failure::timeout().message("stream idle past idle_chunk")
            } else {
                Failure::connect("connection reset mid-stream")
            }
        }),
        usage,
    });
    Play::Answer {
        after,
        usage,
        rate_limit,
        stream,
    }
}

/// A log-normal latency with median `p50` and 99th percentile `p99` (ms), capped at an
/// hour.
fn lognormal(rng: &mut fastrand::Rng, p50: u64, p99: u64) -> Duration {
    let mu = (p50.max(1) as f64).ln();
    // z of the 99th percentile of the standard normal.
    let sigma = ((p99.max(p50).max(1) as f64).ln() - mu).max(0.0) / 2.326_348;
    // Box–Muller: one standard normal draw from two uniforms.
    let (u1, u2) = (1.0 - rng.f64(), rng.f64());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let ms = (mu + sigma * z).exp().min(3_600_000.0);
    Duration::from_micros((ms * 1000.0) as u64)
}

/// `n × factor`, ± 10 %.
fn scale(n: u64, factor: f64, rng: &mut fastrand::Rng) -> u64 {
    let f = factor.max(0.0) * (0.9 + 0.2 * rng.f64());
    // Saturating float-to-int cast: huge factors cap at u64::MAX.
    (n as f64 * f).round() as u64
}

/// A failure by the phase's shares, or `None` for a success.
fn fault(p: &Phase, usage: Usage, rng: &mut fastrand::Rng) -> Option<Failure> {
    let f = &p.faults;
    let mut x = rng.f64();
    let mut pick = |share: f64| {
        x -= share.max(0.0);
        x < 0.0
    };
    let failure = if pick(f.connect) {
        Failure::connect("connection refused")
    } else if pick(f.timeout) {
        Failure::timeout()
    } else if pick(f.server_error) {
        Failure::status([500, 502, 503][rng.usize(..3)])
    } else if pick(f.rate_limited) {
        let mut fl = Failure::status(429).code("rate_limit_exceeded");
        if let Some((remaining, reset)) = p.rate_limit {
            fl = fl.rate_limit(remaining, Duration::from_millis(reset));
        }
        match f.retry_after_s {
            Some(s) => fl.retry_after(Duration::from_secs(s)),
            None => fl,
        }
    } else if pick(f.bad_request) {
        let code = ["invalid_request_error", "context_length_exceeded"][rng.usize(..2)];
        Failure::status(400).code(code)
    } else if pick(f.malformed) {
        // What the HTTP classifier makes of a 2xx whose body is not JSON or is cut short.
        Failure::status(502)
            .code(crate::http::classify::INVALID_RESPONSE)
            .message("malformed or truncated body")
    } else {
        return None;
    };
    let billed = failure.kind == crate::exec::FailureKind::Response && rng.f64() < f.billed;
    Some(if billed {
        Failure {
            usage: Some(usage),
            ..failure
        }
    } else {
        failure
    })
}
