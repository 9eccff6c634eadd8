//! Random scenarios from one seed: a policy (TOML text), scripted upstreams and traffic,
//! small enough that a run takes a few seconds of virtual time.
//!
//! [`Feature`]s can be left out, e.g. while a known bug in one is being fixed.

use std::fmt::Write as _;

use fastrand::Rng;
use serde::{Deserialize, Serialize};

use super::scenario::{
    Burst, Faults, Mix, Phase, Reload, Scenario, Segment, SharedScript, Traffic, UpstreamScript,
};

/// A part of the policy or traffic the generator can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// Streamed answers (late usage and outcome).
    Streams,
    /// Streams on routes covered by a budget.
    StreamBudgets,
    /// `on_limit = "wait"`.
    WaitLimits,
    /// `hedge` on routes.
    Hedging,
    /// The `lowest-latency` strategy.
    LowestLatency,
    /// Budgets.
    Budgets,
    /// Retry budgets.
    RetryBudgets,
    /// Breakers.
    Breakers,
    /// A reload mid-run.
    Reload,
    /// Callers that drop the future early.
    Cancel,
    /// Operations that panic.
    Panics,
    /// `state = "shared"` limits, budgets and breakers on a simulated backend.
    Shared,
}

/// Which features to leave out.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// Left out.
    pub exclude: Vec<Feature>,
}

impl Knobs {
    fn on(&self, f: Feature) -> bool {
        !self.exclude.contains(&f)
    }
}

/// A random scenario for `seed`.
pub fn scenario(seed: u64, knobs: &Knobs) -> Scenario {
    let mut rng = Rng::with_seed(seed);
    let shape = Shape::draw(&mut rng, knobs);
    let policy = policy(&shape, seed, 0, knobs);
    let duration = rng.u64(300..=3000);
    let reload = (knobs.on(Feature::Reload) && rng.f64() < 0.25).then(|| Reload {
        at_ms: rng.u64(0..=duration),
        policy: policy_variant(&shape, seed, knobs),
    });
    let upstreams = (0..shape.upstreams)
        .map(|u| script(&mut rng, format!("u{u}"), duration, knobs))
        .collect();
    let traffic = traffic(&mut rng, duration, &shape, knobs);
    let shared = shape.shared.then(|| shared_script(&mut rng, duration));
    Scenario {
        seed,
        policy,
        reload,
        upstreams,
        traffic,
        shared,
    }
}

/// A backend that is sometimes slow, sometimes fails, loses settlements, goes down.
fn shared_script(rng: &mut Rng, duration: u64) -> SharedScript {
    let lo = rng.u64(0..=5);
    let from = rng.u64(0..=duration);
    SharedScript {
        latency_ms: (lo, lo + rng.u64(0..=80)),
        fail: if rng.bool() { rng.f64() * 0.2 } else { 0.0 },
        lose_settlements: if rng.bool() { rng.f64() * 0.3 } else { 0.0 },
        down: if rng.f64() < 0.3 {
            vec![(from, from + rng.u64(50..=1500))]
        } else {
            Vec::new()
        },
    }
}

/// How many of each entry the policy has.
struct Shape {
    upstreams: usize,
    models: usize,
    routes: usize,
    streams: bool,
    budgets: bool,
    breakers: bool,
    shared: bool,
}

impl Shape {
    fn draw(rng: &mut Rng, knobs: &Knobs) -> Shape {
        let upstreams = rng.usize(1..=3);
        let budgets = knobs.on(Feature::Budgets) && rng.f64() < 0.5;
        let streams = knobs.on(Feature::Streams)
            && rng.f64() < 0.4
            && (!budgets || knobs.on(Feature::StreamBudgets));
        Shape {
            breakers: knobs.on(Feature::Breakers) && rng.f64() < 0.6,
            shared: knobs.on(Feature::Shared) && rng.f64() < 0.25,
            upstreams,
            models: upstreams + rng.usize(0..=2),
            routes: rng.usize(1..=2),
            streams,
            budgets,
        }
    }
}

fn dur(ms: u64) -> String {
    format!("\"{ms}ms\"")
}

/// The policy; `variant > 0` changes timeouts and attempts (a reload), nothing else.
fn policy(shape: &Shape, seed: u64, variant: u64, knobs: &Knobs) -> String {
    let mut r = Rng::with_seed(seed ^ 0x5eed_0001);
    let mut alt = Rng::with_seed(seed ^ variant.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // A tweakable draw: the same stream of `r` either way, `alt` in a variant.
    let mut tw = |r: &mut Rng, lo: u64, hi: u64| {
        let x = r.u64(lo..=hi);
        if variant > 0 {
            alt.u64(lo..=hi)
        } else {
            x
        }
    };
    let mut out = String::new();
    let breakers = shape.breakers;
    if shape.shared {
        let _ = writeln!(
            out,
            "[state.redis]\nurl = {{ env = \"REDIS_URL\" }}\nlease = {}\nfail_mode = \"{}\"\ntimeout = {}",
            r.u32(1..=8),
            ["open", "closed"][r.usize(..2)],
            dur(r.u64(5..=100))
        );
    }
    if breakers {
        breaker(&mut out, &mut r, shape.shared);
    }
    for u in 0..shape.upstreams {
        upstream(&mut out, &mut r, u, shape, knobs);
    }
    let priced = shape.budgets || r.f64() < 0.7;
    for m in 0..shape.models {
        let _ = writeln!(
            out,
            "[models.m{m}]\nupstream = \"u{}\"",
            m % shape.upstreams
        );
        if priced {
            let (i, o) = (r.u32(1..=30), r.u32(1..=60));
            let _ = writeln!(
                out,
                "price = {{ input_per_mtok = {i}.0, output_per_mtok = {o}.0 }}"
            );
        }
        if r.f64() < 0.1 {
            let _ = writeln!(out, "context_window = {}", r.u32(200..=2000));
        }
        if breakers && r.f64() < 0.2 {
            let _ = writeln!(out, "breaker = \"b\"");
        }
    }
    let attempts = tw(&mut r, 1, 4);
    retry(&mut out, &mut r, attempts, knobs);
    for i in 0..shape.routes {
        let total = tw(&mut r, 300, 5000);
        let per_try = tw(&mut r, 50, 2000).min(total);
        route(&mut out, &mut r, shape, i, (per_try, total), priced, knobs);
    }
    if shape.budgets && priced {
        budget(&mut out, &mut r, shape);
    }
    out
}

fn policy_variant(shape: &Shape, seed: u64, knobs: &Knobs) -> String {
    policy(shape, seed, 1, knobs)
}

fn breaker(out: &mut String, r: &mut Rng, shared: bool) {
    let probes = r.u32(1..=3);
    let _ = writeln!(
        out,
        "[breakers.b]\nconsecutive_failures = {}\nopen_for = {}\nhalf_open = {{ probes = {probes}, successes_to_close = {} }}",
        r.u32(1..=5),
        dur(r.u64(50..=2000)),
        r.u32(1..=probes)
    );
    if shared && r.bool() {
        let _ = writeln!(out, "state = \"shared\"");
    }
    if r.bool() {
        let _ = writeln!(
            out,
            "failure_rate = {{ threshold = {:.2}, min_calls = {}, window = {} }}",
            0.2 + 0.7 * r.f64(),
            r.u32(2..=10),
            dur(r.u64(200..=3000))
        );
    }
}

fn upstream(out: &mut String, r: &mut Rng, u: usize, shape: &Shape, knobs: &Knobs) {
    let _ = writeln!(
        out,
        "[upstreams.u{u}]\nbase_url = \"http://127.0.0.1:1/u{u}\""
    );
    if shape.breakers && r.bool() {
        let _ = writeln!(out, "breaker = \"b\"");
    }
    if r.f64() < 0.3 {
        let _ = writeln!(out, "rate_limit_headers = true");
    }
    let mut limits = Vec::new();
    if r.f64() < 0.5 {
        limits.push(format!("requests_per_second = {}", r.u32(1..=40)));
        if r.bool() {
            limits.push(format!("burst = {}", r.u32(1..=8)));
        }
    }
    if r.f64() < 0.4 {
        limits.push(format!("concurrency = {}", r.u32(1..=4)));
    }
    if r.f64() < 0.3 {
        limits.push(format!("tokens_per_minute = {}", r.u32(20_000..=400_000)));
    }
    if !limits.is_empty() && knobs.on(Feature::WaitLimits) && r.bool() {
        limits.push("on_limit = \"wait\"".into());
        limits.push(format!("queue_timeout = {}", dur(r.u64(10..=1000))));
    }
    if !limits.is_empty() && shape.shared && r.bool() {
        limits.push("state = \"shared\"".into());
    }
    if !limits.is_empty() {
        let _ = writeln!(out, "[upstreams.u{u}.limits]\n{}", limits.join("\n"));
    }
}

fn retry(out: &mut String, r: &mut Rng, attempts: u64, knobs: &Knobs) {
    let _ = writeln!(out, "[retry.r]\nmax_attempts = {attempts}");
    let base = r.u64(5..=100);
    let kind = ["constant", "exponential", "decorrelated"][r.usize(..3)];
    let jitter = ["none", "full", "equal"][r.usize(..3)];
    let _ = writeln!(
        out,
        "backoff = {{ kind = \"{kind}\", base = {}, max = {}, jitter = \"{jitter}\" }}",
        dur(base),
        dur(base * r.u64(1..=10))
    );
    let _ = writeln!(
        out,
        "retry_after = {{ honor = {}, max = {} }}",
        r.bool(),
        dur(r.u64(100..=2000))
    );
    if r.f64() < 0.3 {
        let _ = writeln!(out, "retry_on = [\"connect\", \"5xx\"]");
    }
    if knobs.on(Feature::RetryBudgets) && r.f64() < 0.4 {
        let _ = writeln!(
            out,
            "budget = {{ ratio = {:.2}, min_per_second = {}, ttl = {} }}",
            r.f64() * 0.5,
            r.u32(0..=3),
            dur(r.u64(500..=5000))
        );
    }
    if r.f64() < 0.3 {
        let _ = writeln!(out, "[retry.r.on.429]\nmax_attempts = {}", r.u32(1..=5));
        if r.bool() {
            let _ = writeln!(
                out,
                "backoff = {{ kind = \"constant\", base = {}, max = {}, jitter = \"none\" }}",
                dur(r.u64(1..=50)),
                dur(r.u64(50..=400))
            );
        }
    }
}

fn route(
    out: &mut String,
    r: &mut Rng,
    shape: &Shape,
    i: usize,
    (per_try, total): (u64, u64),
    priced: bool,
    knobs: &Knobs,
) {
    let last = i + 1 == shape.routes;
    let n = r.usize(1..=shape.models.min(3));
    let first = r.usize(..shape.models);
    let targets: Vec<String> = (0..n)
        .map(|k| format!("\"m{}\"", (first + k) % shape.models))
        .collect();
    let mut strategies = vec!["failover", "weighted", "least-busy"];
    if priced {
        strategies.push("cheapest");
    }
    if knobs.on(Feature::LowestLatency) {
        strategies.push("lowest-latency");
    }
    let strategy = strategies[r.usize(..strategies.len())];
    let _ = writeln!(
        out,
        "[[routes]]\nname = \"r{i}\"\nstrategy = \"{strategy}\"\ntargets = [{}]\nretry = \"r\"\ntimeouts = {{ per_try = {}, total = {} }}",
        targets.join(", "),
        dur(per_try),
        dur(total)
    );
    if !last {
        let _ = writeln!(out, "when = {{ attr = \"task\", eq = \"t{i}\" }}");
    }
    if shape.breakers && r.f64() < 0.15 {
        let _ = writeln!(out, "breaker = \"b\"");
    }
    if r.f64() < 0.3 {
        let _ = writeln!(
            out,
            "failover_on = [\"connect\", \"timeout\", \"5xx\", \"breaker_open\"]"
        );
    }
    if knobs.on(Feature::Hedging) && n > 1 && r.f64() < 0.3 {
        let _ = writeln!(
            out,
            "hedge = {{ after = {}, max_extra = {} }}",
            dur(r.u64(10..=300)),
            r.u32(1..=2)
        );
    }
}

/// A budget; with two routes, sometimes one on the first that reroutes to the second.
fn budget(out: &mut String, r: &mut Rng, shape: &Shape) {
    let _ = writeln!(
        out,
        "[budgets.spend]\nlimit_usd = {:.4}\nwindow = {}",
        0.002 + r.f64() * 0.05,
        dur(r.u64(200..=3000))
    );
    if shape.shared && r.bool() {
        let _ = writeln!(out, "state = \"shared\"");
    }
    let reroute = shape.routes == 2 && r.bool();
    if reroute {
        let _ = writeln!(out, "on_exceed = {{ reroute = \"r1\" }}");
    }
    let keys = r.bool();
    if reroute || keys {
        let _ = writeln!(out, "[budgets.spend.scope]");
    }
    if reroute {
        let _ = writeln!(out, "routes = [\"r0\"]");
    }
    if keys {
        let _ = writeln!(out, "keys = [\"c0\"]");
    }
}

fn script(rng: &mut Rng, name: String, duration: u64, knobs: &Knobs) -> UpstreamScript {
    let phases = (0..rng.usize(1..=3))
        .map(|i| {
            let from_ms = if i == 0 { 0 } else { rng.u64(0..=duration) };
            let lo = rng.u64(1..=100);
            Phase {
                from_ms,
                outage: rng.f64() < 0.15,
                latency_ms: (lo, lo + rng.u64(0..=300)),
                slow: (rng.f64() < 0.3).then(|| (rng.f64() * 0.3, rng.u64(100..=3000))),
                faults: faults(rng),
                rate_limit: (rng.f64() < 0.2).then(|| (rng.u64(0..=5), rng.u64(10..=2000))),
                usage_factor: 0.3 + rng.f64() * 1.2,
                stream_break: if knobs.on(Feature::Streams) {
                    rng.f64() * 0.3
                } else {
                    0.0
                },
                stream_ms: (10, rng.u64(10..=1500)),
                latency_p50_p99: None,
                partial_outage: None,
            }
        })
        .collect::<Vec<_>>();
    let mut phases = phases;
    phases.sort_by_key(|p| p.from_ms);
    UpstreamScript { name, phases }
}

fn faults(rng: &mut Rng) -> Faults {
    let mut share = || {
        if rng.f64() < 0.5 {
            rng.f64() * 0.15
        } else {
            0.0
        }
    };
    let f = Faults {
        connect: share(),
        timeout: share(),
        server_error: share(),
        rate_limited: share(),
        retry_after_s: None,
        bad_request: share(),
        malformed: share(),
        billed: share() * 3.0,
    };
    Faults {
        retry_after_s: rng.bool().then(|| rng.u64(0..=3)),
        ..f
    }
}

fn traffic(rng: &mut Rng, duration: u64, shape: &Shape, knobs: &Knobs) -> Traffic {
    let rate = 5.0 + rng.f64() * 45.0;
    let end = if rng.bool() {
        rate
    } else {
        5.0 + rng.f64() * 45.0
    };
    let bursts = (rng.f64() < 0.4)
        .then(|| Burst {
            at_ms: rng.u64(0..=duration),
            count: rng.u32(2..=12),
        })
        .into_iter()
        .collect();
    let tasks = (0..shape.routes).map(|i| format!("t{i}")).collect();
    Traffic {
        max_requests: rng.u32(5..=40),
        segments: vec![Segment {
            from_ms: 0,
            to_ms: duration,
            start_per_s: rate,
            end_per_s: end,
        }],
        bursts,
        templates: Vec::new(),
        mix: Mix {
            // Sometimes a request names a route (or a model, which matches no route name).
            models: if rng.f64() < 0.2 {
                vec!["r0".into(), "m0".into()]
            } else {
                Vec::new()
            },
            tasks,
            callers: vec!["c0".into(), "c1".into()],
            prompt_words: (1, rng.u32(1..=400)),
            max_tokens: rng.bool().then(|| (16, rng.u64(16..=1024))),
            counted_input: 0.2,
            stream_share: if shape.streams { rng.f64() } else { 0.0 },
            cancel: (knobs.on(Feature::Cancel) && rng.f64() < 0.3)
                .then(|| (rng.f64() * 0.3, (10, rng.u64(10..=3000)))),
            panic_share: if knobs.on(Feature::Panics) && rng.f64() < 0.2 {
                0.05
            } else {
                0.0
            },
            ..Mix::default()
        },
    }
}
