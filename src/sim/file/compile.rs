//! From a scenario file to the engine's [`Scenario`]: values checked (every problem
//! reported, each at its key), names resolved against the policy's plan with
//! did-you-mean, time split into the engine's phases, the daily curve into ramps.

use std::path::{Path, PathBuf};

use super::load::{path, LoadedScenario};
use super::types::{Behaviour, Expect, RequestTemplate, ScenarioFile, Script};
use crate::diagnostic::{did_you_mean, one_of, Code, Diagnostics};
use crate::plan::Plan;
use crate::policy::spans::KeyPath;
use crate::sim::{Burst, Faults, Mix, Phase, Scenario, Segment, Template, Traffic, UpstreamScript};

/// Longest scenario: a year and a day.
pub const MAX_DURATION_MS: u64 = 366 * 86_400_000;
/// Most requests a scenario may expect.
pub const MAX_REQUESTS: f64 = 5_000_000.0;
/// Highest arrival rate, requests per second.
pub const MAX_RATE: f64 = 100_000.0;
/// The engine's cap on arrivals (above [`MAX_REQUESTS`], which is checked on expectations).
const ARRIVAL_CAP: u32 = 10_000_000;
/// Width of one piece of the daily curve, ms.
const DAILY_STEP_MS: u64 = 15 * 60_000;

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The engine's scenario (its `policy` text is empty: plans are compiled).
    pub scenario: Scenario,
    /// Swaps: `(ms, plan)`, in order.
    pub reloads: Vec<(u64, Plan)>,
    /// Duration, ms.
    pub duration_ms: u64,
    /// Interval width of the time series, ms.
    pub bucket_ms: u64,
    /// The gates.
    pub expect: Expect,
    /// The model savings are computed against.
    pub baseline_model: Option<String>,
    /// Warnings about the scenario (no errors).
    pub warnings: Diagnostics,
}

/// Why a scenario cannot run.
#[derive(Debug)]
pub enum PrepareError {
    /// The scenario file is unreadable or invalid (exit 2).
    Scenario(Diagnostics),
    /// A policy (the one given, or one a reload event names) does not compile (exit 1), or
    /// cannot be read (`io`: exit 2).
    Policy {
        /// What is wrong.
        diagnostics: Diagnostics,
        /// A path could not be read.
        io: bool,
    },
}

/// Loads a policy like `serve` does and compiles it (`prices` applied first).
fn policy(
    paths: &[PathBuf],
    prices: &[(String, crate::policy::Price)],
) -> Result<Plan, PrepareError> {
    let mut loaded = crate::policy::load(&crate::policy::LoadOptions::new(paths.to_vec()));
    let io = loaded.io_failed();
    for (name, price) in prices {
        if let Some(m) = loaded.policy.models.get_mut(name) {
            m.price = Some(*price);
        }
    }
    crate::plan::compile(loaded)
        .map(|c| c.plan)
        .map_err(|diagnostics| PrepareError::Policy { diagnostics, io })
}

/// Loads the scenario and the policy and makes one of the other. `seed` overrides the
/// scenario's.
pub fn prepare(
    scenario: &Path,
    policy_paths: &[PathBuf],
    seed: Option<u64>,
) -> Result<(Plan, Prepared), PrepareError> {
    let mut l = super::load::load_scenario(scenario);
    let Some(file) = l.file.take() else {
        return Err(PrepareError::Scenario(l.to_diagnostics()));
    };
    let plan = match policy(policy_paths, &[]) {
        Ok(p) => p,
        // A broken scenario is reported first: it is the input being written.
        Err(_) if l.has_errors() => return Err(PrepareError::Scenario(l.to_diagnostics())),
        Err(e) => return Err(e),
    };
    let prepared = compile(&mut l, &file, &plan, seed);
    if l.has_errors() {
        return Err(PrepareError::Scenario(l.to_diagnostics()));
    }
    let mut prepared = prepared;
    prepared.warnings = l.to_diagnostics();
    let dir = scenario.parent().unwrap_or(Path::new("."));
    let mut current: Vec<PathBuf> = policy_paths.to_vec();
    let mut prices: Vec<(String, crate::policy::Price)> = Vec::new();
    for ev in &file.events {
        if let Some(p) = &ev.reload {
            current = vec![dir.join(p)];
            prices.clear();
        }
        prices.extend(ev.prices.iter().map(|(k, v)| (k.clone(), *v)));
        let at = ms(ev.at);
        if at < prepared.duration_ms {
            prepared.reloads.push((at, policy(&current, &prices)?));
        }
    }
    Ok((plan, prepared))
}

fn ms(d: crate::policy::Duration) -> u64 {
    u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX)
}

/// Checks the file against the plan and builds the engine's scenario; problems go to `l`.
pub fn compile(
    l: &mut LoadedScenario,
    f: &ScenarioFile,
    plan: &Plan,
    seed: Option<u64>,
) -> Prepared {
    let duration_ms = ms(f.duration);
    if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
        l.error(
            Code::DurationOutOfRange,
            &path(["duration"]),
            format!("`duration` of {} is out of range", f.duration),
        )
        .label = Some("expected more than 0 and at most 366d".into());
    }
    let duration_ms = duration_ms.clamp(1, MAX_DURATION_MS);
    names(l, f, plan);
    let traffic = traffic(l, f, duration_ms);
    let mut upstreams = Vec::new();
    for (section, map) in [("upstreams", &f.upstreams), ("models", &f.models)] {
        for (name, script) in map {
            let base = path([section, name.as_str()]);
            upstreams.push(UpstreamScript {
                name: name.clone(),
                phases: phases(l, &base, script, duration_ms),
            });
        }
    }
    for (i, ev) in f.events.iter().enumerate() {
        let p = path(["events"]).index(i);
        within(l, &p.key("at"), ms(ev.at), duration_ms);
        if ev.reload.is_none() && ev.prices.is_empty() {
            l.error(Code::MissingKey, &p, "an event with nothing to do".into())
                .label = Some("expected `reload` or `prices`".into());
        }
        for (m, price) in &ev.prices {
            if price.input_per_mtok < 0.0 || price.output_per_mtok < 0.0 {
                l.error(
                    Code::NegativePrice,
                    &p.key("prices").key(m.as_str()),
                    format!("a negative price for `{m}`"),
                );
            }
        }
    }
    if let Some(e) = &f.expect {
        share(l, &path(["expect", "min_success"]), e.min_success);
    }
    let bucket_ms = f
        .resolution
        .map_or(duration_ms / 120, ms)
        .max(1000)
        .min(duration_ms.max(1000));
    Prepared {
        scenario: Scenario {
            seed: seed.or(f.seed).unwrap_or(0),
            policy: String::new(),
            reload: None,
            upstreams,
            traffic,
            shared: None,
        },
        reloads: Vec::new(),
        duration_ms,
        bucket_ms,
        expect: f.expect.unwrap_or_default(),
        baseline_model: f.baseline_model.clone(),
        warnings: Diagnostics::default(),
    }
}

/// An unknown name: an error at `p`, with the names there are and the nearest one.
fn unknown<'a>(
    l: &mut LoadedScenario,
    p: &KeyPath,
    what: &str,
    name: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) {
    let d = l.error(
        Code::UnknownReference,
        p,
        format!("the policy has no {what} `{name}`"),
    );
    d.label = Some(if known.clone().next().is_none() {
        format!("the policy defines no {what}")
    } else {
        format!("expected one of {}", one_of(known.clone()))
    });
    d.help = did_you_mean(name, known);
}

/// Every name the scenario uses is the policy's.
fn names(l: &mut LoadedScenario, f: &ScenarioFile, plan: &Plan) {
    let upstreams = || plan.upstreams.iter().map(|u| u.name.as_str());
    let models = || plan.models.iter().map(|m| m.name.as_str());
    for name in f.upstreams.keys() {
        if plan.upstream_by_name(name).is_none() {
            let p = path(["upstreams", name.as_str()]);
            let origin = l.locate_key(&p);
            unknown(l, &p, "upstream", name, upstreams());
            if let Some(d) = l.diagnostics.last_mut() {
                d.origin = origin;
            }
        }
    }
    for name in f.models.keys() {
        if plan.model_by_name(name).is_none() {
            let p = path(["models", name.as_str()]);
            let origin = l.locate_key(&p);
            unknown(l, &p, "model", name, models());
            if let Some(d) = l.diagnostics.last_mut() {
                d.origin = origin;
            }
        }
    }
    if let Some(b) = &f.baseline_model {
        if plan.model_by_name(b).is_none() {
            unknown(l, &path(["baseline_model"]), "model", b, models());
        }
    }
    let callers = || plan.callers.iter().map(|c| c.name.as_str());
    for (i, t) in f.traffic.requests.iter().enumerate() {
        let p = path(["traffic", "requests"]).index(i);
        if let Some(m) = &t.model {
            if !plan.knows_model_name(m) {
                let known = models().chain(plan.routes.iter().map(|r| r.name.as_str()));
                unknown(l, &p.key("model"), "model or route", m, known);
            }
        }
        if let Some(c) = &t.caller {
            if !plan.callers.iter().any(|x| &x.name == c) {
                unknown(l, &p.key("caller"), "caller", c, callers());
            }
        }
    }
    for (i, ev) in f.events.iter().enumerate() {
        for m in ev.prices.keys() {
            if plan.model_by_name(m).is_none() && ev.reload.is_none() {
                let p = path(["events"]).index(i).key("prices").key(m.as_str());
                unknown(l, &p, "model", m, models());
            }
        }
    }
}

/// A share must be in 0–1.
fn share(l: &mut LoadedScenario, p: &KeyPath, v: Option<f64>) {
    if let Some(x) = v {
        if !(0.0..=1.0).contains(&x) {
            l.error(
                Code::ShareOutOfRange,
                p,
                format!("`{p}` is {x}, not a share"),
            )
            .label = Some("expected a number from 0 to 1".into());
        }
    }
}

/// A rate must be finite, not negative, and not absurd.
fn rate(l: &mut LoadedScenario, p: &KeyPath, x: f64) -> f64 {
    if !x.is_finite() || x < 0.0 {
        l.error(Code::InvalidValue, p, format!("`{p}` is {x}, not a rate"))
            .label = Some("expected requests per second, 0 or more".into());
        return 0.0;
    }
    if x > MAX_RATE {
        l.error(
            Code::TooMuchTraffic,
            p,
            format!("`{p}` is {x} requests per second"),
        )
        .label = Some(format!("expected at most {MAX_RATE}"));
        return 0.0;
    }
    x
}

/// A time at or past the end of the run: a warning.
fn within(l: &mut LoadedScenario, p: &KeyPath, at: u64, duration_ms: u64) {
    if at >= duration_ms {
        l.warning(
            Code::OutsideDuration,
            p,
            format!("`{p}` is at or after the end of the run: it never happens"),
        );
    }
}

/// A `[from, to)` window: `from` before `to`, starting within the run.
fn window(l: &mut LoadedScenario, p: &KeyPath, from: u64, to: u64, duration_ms: u64) -> bool {
    if from >= to {
        l.error(
            Code::InvalidValue,
            &p.key("to"),
            format!("`{p}` ends before it starts"),
        )
        .label = Some("expected `to` after `from`".into());
        return false;
    }
    within(l, &p.key("from"), from, duration_ms);
    true
}

/// A `[low, high]` range with `low <= high`.
fn pair<T: PartialOrd + Copy + std::fmt::Display>(
    l: &mut LoadedScenario,
    p: &KeyPath,
    v: Option<[T; 2]>,
) -> Option<(T, T)> {
    let [lo, hi] = v?;
    if lo > hi {
        l.error(
            Code::InvalidValue,
            p,
            format!("`{p}` is [{lo}, {hi}]: its low end is above its high end"),
        )
        .label = Some("expected [low, high]".into());
    }
    Some((lo, hi))
}

fn traffic(l: &mut LoadedScenario, f: &ScenarioFile, duration_ms: u64) -> Traffic {
    let t = &f.traffic;
    let base = path(["traffic"]);
    let mut segments = Vec::new();
    let mut expected = 0.0;
    if let Some(r) = t.rate {
        let r = rate(l, &base.key("rate"), r);
        expected += r * duration_ms as f64 / 1000.0;
        segments.push(Segment {
            from_ms: 0,
            to_ms: duration_ms,
            start_per_s: r,
            end_per_s: r,
        });
    }
    for (i, r) in t.ramps.iter().enumerate() {
        let p = base.key("ramps").index(i);
        let (start, end) = (
            rate(l, &p.key("start"), r.start),
            rate(l, &p.key("end"), r.end),
        );
        let (from, to) = (ms(r.from), ms(r.to));
        if window(l, &p, from, to, duration_ms) {
            let to = to.min(duration_ms);
            let end = if to < ms(r.to) {
                start + (end - start) * (to.saturating_sub(from)) as f64 / (ms(r.to) - from) as f64
            } else {
                end
            };
            expected += (start + end) / 2.0 * to.saturating_sub(from) as f64 / 1000.0;
            segments.push(Segment {
                from_ms: from,
                to_ms: to,
                start_per_s: start,
                end_per_s: end,
            });
        }
    }
    if let Some(d) = &t.daily {
        let p = base.key("daily");
        let (lo, hi) = (rate(l, &p.key("min"), d.min), rate(l, &p.key("max"), d.max));
        if lo > hi {
            l.error(
                Code::InvalidValue,
                &p.key("max"),
                "`max` below `min`".into(),
            );
        }
        let peak = d.peak.map_or(14 * 3_600_000, ms);
        let at = |t: u64| {
            let phase = (t as f64 - peak as f64) / 86_400_000.0 * std::f64::consts::TAU;
            lo + (hi - lo) * (1.0 + phase.cos()) / 2.0
        };
        let mut from = 0;
        while from < duration_ms {
            let to = (from + DAILY_STEP_MS).min(duration_ms);
            let (a, b) = (at(from), at(to));
            expected += (a + b) / 2.0 * (to - from) as f64 / 1000.0;
            segments.push(Segment {
                from_ms: from,
                to_ms: to,
                start_per_s: a,
                end_per_s: b,
            });
            from = to;
        }
    }
    let mut bursts = Vec::new();
    for (i, b) in t.bursts.iter().enumerate() {
        within(
            l,
            &base.key("bursts").index(i).key("at"),
            ms(b.at),
            duration_ms,
        );
        expected += f64::from(b.count);
        if ms(b.at) < duration_ms {
            bursts.push(Burst {
                at_ms: ms(b.at),
                count: b.count,
            });
        }
    }
    if expected > MAX_REQUESTS {
        l.error(
            Code::TooMuchTraffic,
            &base,
            format!("the traffic comes to about {expected:.0} requests"),
        )
        .label = Some(format!(
            "expected at most {MAX_REQUESTS:.0}: shorten the run or lower the rate"
        ));
    } else if expected < 0.5 && !l.has_errors() {
        l.error(Code::NoTraffic, &base, "no request would arrive".into())
            .label = Some("expected `rate`, `ramps`, `daily` or `bursts`".into());
    }
    let templates = t
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| template(l, &base.key("requests").index(i), r))
        .collect();
    Traffic {
        max_requests: ARRIVAL_CAP,
        segments,
        bursts,
        mix: Mix::default(),
        templates,
    }
}

fn template(l: &mut LoadedScenario, p: &KeyPath, r: &RequestTemplate) -> Template {
    let weight = r.weight.unwrap_or(1.0);
    if !(weight.is_finite() && weight > 0.0) {
        l.error(
            Code::NonPositiveWeight,
            &p.key("weight"),
            format!("a weight of {weight}"),
        )
        .label = Some("expected a number above 0".into());
    }
    share(l, &p.key("stream"), r.stream);
    let one = |x: &Option<String>| x.iter().cloned().collect::<Vec<_>>();
    let mut keywords = String::new();
    if let Some(words) = &r.prompt {
        keywords = format!(" {words}");
    }
    Template {
        weight,
        mix: Mix {
            models: one(&r.model),
            tasks: one(&r.task),
            callers: one(&r.caller),
            prompt_words: pair(l, &p.key("prompt_words"), r.prompt_words).unwrap_or((1, 200)),
            max_tokens: pair(l, &p.key("max_tokens"), r.max_tokens),
            input_tokens: pair(l, &p.key("input_tokens"), r.input_tokens),
            stream_share: r.stream.unwrap_or(0.0),
            keywords,
            ..Mix::default()
        },
    }
}

/// The behaviour in force at `t` and its shares checked.
fn behaviour_at(script: &Script, t: u64) -> Behaviour {
    let mut changes: Vec<_> = script.changes.iter().filter(|c| ms(c.at) <= t).collect();
    changes.sort_by_key(|c| c.at);
    changes
        .into_iter()
        .fold(script.behaviour(), |b, c| b.then(&c.behaviour()))
}

fn check_behaviour(l: &mut LoadedScenario, p: &KeyPath, b: &Behaviour) {
    if let Some(f) = b.failures {
        let q = p.key("failures");
        let all = [
            ("connect", f.connect),
            ("timeout", f.timeout),
            ("server_error", f.server_error),
            ("rate_limited", f.rate_limited),
            ("bad_request", f.bad_request),
            ("malformed", f.malformed),
        ];
        for (k, v) in all {
            share(l, &q.key(k), Some(v));
        }
        let sum: f64 = all.iter().map(|(_, v)| v).sum();
        if sum > 1.0 + 1e-9 {
            l.error(
                Code::ShareOutOfRange,
                &q,
                format!("failure shares add up to {}", (sum * 1e6).round() / 1e6),
            )
            .label = Some("expected a sum of at most 1".into());
        }
    }
    if let Some(s) = b.slow {
        share(l, &p.key("slow").key("share"), Some(s.share));
    }
    share(l, &p.key("stream_cut"), b.stream_cut);
    if let Some(u) = b.usage {
        if !(u.is_finite() && (0.0..=1000.0).contains(&u)) {
            l.error(
                Code::InvalidValue,
                &p.key("usage"),
                format!("`usage` of {u}"),
            )
            .label = Some("expected a factor from 0 to 1000".into());
        }
    }
    if let Some(lat) = b.latency {
        if lat.p99 < lat.p50 {
            l.error(
                Code::InvalidValue,
                &p.key("latency").key("p99"),
                "`p99` below `p50`".into(),
            );
        }
    }
}

/// The engine's phases: one from each time something changes.
fn phases(l: &mut LoadedScenario, base: &KeyPath, s: &Script, duration_ms: u64) -> Vec<Phase> {
    check_behaviour(l, base, &s.behaviour());
    let mut cuts = vec![0];
    for (i, c) in s.changes.iter().enumerate() {
        let p = base.key("changes").index(i);
        check_behaviour(l, &p, &c.behaviour());
        within(l, &p.key("at"), ms(c.at), duration_ms);
        cuts.push(ms(c.at));
    }
    let mut outages = Vec::new();
    for (i, o) in s.outages.iter().enumerate() {
        let p = base.key("outages").index(i);
        share(l, &p.key("share"), o.share);
        if let Some(code) = o.status.filter(|c| !(400..=599).contains(c)) {
            l.error(
                Code::InvalidValue,
                &p.key("status"),
                format!("an outage answering {code}, which is not an error status"),
            )
            .label = Some("expected a status from 400 to 599".into());
        }
        if window(l, &p, ms(o.from), ms(o.to), duration_ms) {
            cuts.extend([ms(o.from), ms(o.to)]);
            outages.push((ms(o.from), ms(o.to), o.share.unwrap_or(1.0), o.status));
        }
    }
    let mut storms = Vec::new();
    for (i, st) in s.storms.iter().enumerate() {
        let p = base.key("storms").index(i);
        share(l, &p.key("share"), st.share);
        if window(l, &p, ms(st.from), ms(st.to), duration_ms) {
            cuts.extend([ms(st.from), ms(st.to)]);
            let retry = st.retry_after.map(|d| d.get().as_secs());
            storms.push((ms(st.from), ms(st.to), st.share.unwrap_or(1.0), retry));
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.into_iter()
        .filter(|t| *t < duration_ms.max(1))
        .map(|t| {
            let mut p = phase(t, &behaviour_at(s, t));
            let active = |from: u64, to: u64| from <= t && t < to;
            if let Some(&(_, _, share, status)) = outages.iter().find(|o| active(o.0, o.1)) {
                p.partial_outage = Some((share, status));
            }
            if let Some(&(_, _, share, retry)) = storms.iter().find(|o| active(o.0, o.1)) {
                p.faults.rate_limited = share;
                p.faults.retry_after_s = retry.or(p.faults.retry_after_s);
            }
            p
        })
        .collect()
}

fn phase(from_ms: u64, b: &Behaviour) -> Phase {
    let f = b.failures.unwrap_or_default();
    Phase {
        from_ms,
        latency_p50_p99: b.latency.map(|x| (ms(x.p50), ms(x.p99))),
        slow: b.slow.map(|s| (s.share, ms(s.extra))),
        faults: Faults {
            connect: f.connect,
            timeout: f.timeout,
            server_error: f.server_error,
            rate_limited: f.rate_limited,
            retry_after_s: b.retry_after.map(|d| d.get().as_secs()),
            bad_request: f.bad_request,
            malformed: f.malformed,
            billed: 0.0,
        },
        rate_limit: b.rate_limit.map(|r| (r.remaining, ms(r.reset))),
        usage_factor: b.usage.unwrap_or(1.0),
        stream_break: b.stream_cut.unwrap_or(0.0),
        ..Phase::default()
    }
}
