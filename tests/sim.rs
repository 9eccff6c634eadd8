//! The simulation engine (`tollgate::sim`) searching for counterexamples to every promise
//! of `docs/guarantees.md`: random scenarios (policies, faults, traffic) from seeds, a few
//! hand-written ones, and every minimized regression in `tests/sim_regressions/`.
//!
//! - `cargo test --test sim` runs 2,000 random scenarios; `TOLLGATE_SIM_SCENARIOS=N` runs
//!   N (soak), `TOLLGATE_SIM_FIRST=S` starts at seed S.
//! - `TOLLGATE_SIM_SEED=N cargo test --test sim replay -- --nocapture` replays one seed
//!   and prints its scenario and report; `TOLLGATE_SIM_FILE=path` replays a scenario file.
//! - A violation prints the seed, the broken promise, the minimized scenario and the replay
//!   command, and writes the minimized scenario to `tests/sim_regressions/` (commit it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollgate::sim::random::{scenario, Feature, Knobs};
use tollgate::sim::{self, Event, Promise, RunOptions, Scenario};

/// Features with a known bug being fixed, left out of the random run until the fix
/// merges (then delete the entry: the regression files that name it must then pass).
const KNOWN_BROKEN: &[(Feature, &str)] = &[];

/// Random scenarios `cargo test` runs.
const DEFAULT_SCENARIOS: u64 = 2000;

fn knobs() -> Knobs {
    Knobs {
        exclude: KNOWN_BROKEN.iter().map(|(f, _)| *f).collect(),
    }
}

/// Every feature with `TOLLGATE_SIM_ALL=1`, else all but the `KNOWN_BROKEN` ones, except
/// those `TOLLGATE_SIM_INCLUDE` names (comma-separated, e.g. `shared,hedging`).
fn survey_knobs() -> Knobs {
    if std::env::var("TOLLGATE_SIM_ALL").is_ok() {
        return Knobs::default();
    }
    let include: Vec<Feature> = std::env::var("TOLLGATE_SIM_INCLUDE")
        .unwrap_or_default()
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            serde_json::from_value(serde_json::Value::String(f.trim().into()))
                .expect("a feature name")
        })
        .collect();
    let mut k = knobs();
    k.exclude.retain(|f| !include.contains(f));
    k
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim_regressions")
}

/// A committed regression: a minimized scenario and the promise it broke.
#[derive(Debug, Serialize, Deserialize)]
struct Regression {
    /// The promise it broke when found.
    promise: Promise,
    /// The `KNOWN_BROKEN` issue reference while its bug is being fixed: the scenario is
    /// expected to break `promise` until the entry is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    known_broken: Option<String>,
    /// The scenario.
    scenario: Scenario,
}

/// The promises `s` breaks (sorted, each once).
fn broken(s: &Scenario) -> Vec<Promise> {
    let r = sim::run(s).unwrap_or_else(|e| panic!("seed {}: {e}", s.seed));
    let mut p: Vec<Promise> = r.violations.iter().map(|v| v.promise).collect();
    p.sort();
    p.dedup();
    p
}

/// Minimizes a failing scenario, writes it to `tests/sim_regressions/`, and returns the
/// message to fail with.
fn report_violation(seed: u64, s: &Scenario, known_broken: Option<String>) -> String {
    let report = sim::run(s).expect("it ran once already");
    if report.violations.is_empty() {
        return format!("seed {seed}: no violation");
    }
    // TOLLGATE_SIM_PROMISE=name: minimize for that promise rather than the first broken.
    let wanted = std::env::var("TOLLGATE_SIM_PROMISE").ok();
    let first = report
        .violations
        .iter()
        .find(|v| wanted.as_deref().is_none_or(|w| v.promise.name() == w))
        .unwrap_or(&report.violations[0])
        .clone();
    let min = tollgate::sim::shrink::minimize(s, |c| broken(c).contains(&first.promise));
    let file = Regression {
        promise: first.promise,
        known_broken,
        scenario: min.clone(),
    };
    let text = serde_json::to_string_pretty(&file).expect("a regression serializes");
    let path = regressions_dir().join(format!("{}-{seed}.json", first.promise));
    let written = std::fs::create_dir_all(regressions_dir())
        .and_then(|_| std::fs::write(&path, &text))
        .map(|_| format!("written to {} (commit it)", path.display()))
        .unwrap_or_else(|e| format!("could not be written to {}: {e}", path.display()));
    let min_report = sim::run(&min).expect("the minimized scenario runs");
    let all: Vec<String> = report
        .violations
        .iter()
        .take(5)
        .map(|v| v.to_string())
        .collect();
    format!(
        "seed {seed} breaks promise `{}`:\n  {}\nminimized: {}\n\
         replay: TOLLGATE_SIM_SEED={seed} cargo test --test sim replay -- --nocapture\n\
         minimized scenario {written}:\n{text}\n\
         (full run: {} violation(s), first ones:\n  {})",
        first.promise,
        first,
        min_report
            .violations
            .first()
            .map_or("-".into(), |v| v.to_string()),
        report.violation_count,
        all.join("\n  ")
    )
}

#[test]
fn random_scenarios_keep_every_promise() {
    sim::quiet_panics();
    let n = env_u64("TOLLGATE_SIM_SCENARIOS").unwrap_or(DEFAULT_SCENARIOS);
    let first = env_u64("TOLLGATE_SIM_FIRST").unwrap_or(0);
    let knobs = knobs();
    let (mut requests, mut attempts) = (0, 0);
    let t = std::time::Instant::now();
    for seed in first..first + n {
        let s = scenario(seed, &knobs);
        let r = sim::run(&s).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", s.policy));
        if !r.violations.is_empty() {
            panic!("{}", report_violation(seed, &s, None));
        }
        requests += r.summary.requests;
        attempts += r.summary.attempts;
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{n} scenarios in {secs:.1}s: {:.0} scenarios/s",
        n as f64 / secs
    );
    // The search must search: requests were sent and attempts made.
    assert!(requests > n * 5, "{requests} requests in {n} scenarios");
    assert!(
        attempts >= requests / 2,
        "{attempts} attempts for {requests} requests"
    );
}

#[test]
fn replay() {
    sim::quiet_panics();
    let s = if let Ok(path) = std::env::var("TOLLGATE_SIM_FILE") {
        let text = std::fs::read_to_string(&path).expect("read TOLLGATE_SIM_FILE");
        load(&text)
    } else if let Some(seed) = env_u64("TOLLGATE_SIM_SEED") {
        let s = scenario(seed, &survey_knobs());
        // TOLLGATE_SIM_MINIMIZE=1: minimize and write the regression file, labelled with
        // TOLLGATE_SIM_KNOWN (a KNOWN_BROKEN issue) if set.
        if std::env::var("TOLLGATE_SIM_MINIMIZE").is_ok() {
            let known = std::env::var("TOLLGATE_SIM_KNOWN").ok();
            println!("{}", report_violation(seed, &s, known));
            return;
        }
        s
    } else {
        return;
    };
    let opts = RunOptions {
        keep_events: true,
        ..Default::default()
    };
    let r = sim::run_with(&s, &opts).expect("the scenario runs");
    println!("{}\n{:#?}", s.to_json(), r.summary);
    // TOLLGATE_SIM_REQ=N: the events of request N.
    if let Some(req) = env_u64("TOLLGATE_SIM_REQ") {
        for e in r
            .events
            .iter()
            .flatten()
            .filter(|e| event_req(e) == Some(req))
        {
            println!("{e:?}");
        }
    }
    for v in &r.violations {
        println!("{v}");
    }
    assert!(
        r.violations.is_empty(),
        "{} violation(s)",
        r.violation_count
    );
}

/// The request an event belongs to.
fn event_req(e: &Event) -> Option<u64> {
    match e {
        Event::RequestStart { req, .. }
        | Event::AttemptStart { req, .. }
        | Event::AttemptEnd { req, .. }
        | Event::RequestEnd { req, .. }
        | Event::StreamEnd { req, .. } => Some(*req),
        Event::Reload { .. } => None,
    }
}

/// A regression file, or a bare scenario.
fn load(text: &str) -> Scenario {
    match serde_json::from_str::<Regression>(text) {
        Ok(r) => r.scenario,
        Err(_) => Scenario::from_json(text).expect("a regression or scenario file"),
    }
}

#[test]
fn committed_regressions_replay() {
    sim::quiet_panics();
    let Ok(dir) = std::fs::read_dir(regressions_dir()) else {
        return;
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read a regression file");
        let reg: Regression = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a regression file: {e}", path.display()));
        let found = broken(&reg.scenario);
        let known = reg
            .known_broken
            .as_deref()
            .filter(|k| KNOWN_BROKEN.iter().any(|(_, issue)| issue == k));
        match known {
            Some(issue) if !found.contains(&reg.promise) => failures.push(format!(
                "{}: `{}` holds now: the fix for {issue} has landed, delete its KNOWN_BROKEN entry",
                path.display(),
                reg.promise
            )),
            Some(_) => {}
            None if !found.is_empty() => failures.push(format!(
                "{}: breaks {found:?}; replay: TOLLGATE_SIM_FILE={} cargo test --test sim replay -- --nocapture",
                path.display(),
                path.display()
            )),
            None => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn same_seed_same_run_event_for_event() {
    sim::quiet_panics();
    let opts = RunOptions {
        keep_events: true,
        ..Default::default()
    };
    let mut compared = 0;
    for seed in 0..40 {
        let s = scenario(seed, &Knobs::default());
        let a = sim::run_with(&s, &opts).unwrap();
        let b = sim::run_with(&s, &opts).unwrap();
        let (ea, eb) = (a.events.unwrap(), b.events.unwrap());
        assert_eq!(ea, eb, "seed {seed}: two runs differ");
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.summary, b.summary);
        compared += ea.len();
        // A different seed gives a different run.
        let c = sim::run(&scenario(seed + 1000, &Knobs::default())).unwrap();
        assert_ne!(a.digest, c.digest, "seed {seed}");
    }
    assert!(compared > 1000, "only {compared} events compared");
}

/// The run owns its runtime: called inside another one it says so, and does not panic.
#[test]
fn a_run_inside_a_tokio_runtime_is_an_error_not_a_panic() {
    let s = scenario(5, &Knobs::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let r = rt.block_on(async { sim::run(&s) });
    match r {
        Err(sim::RunError::Runtime(m)) => assert!(m.contains("inside a tokio runtime"), "{m}"),
        other => panic!(
            "expected a runtime error, got {:?}",
            other.map(|r| r.digest)
        ),
    }
}

#[test]
fn a_scenario_file_round_trips() {
    let s = scenario(11, &Knobs::default());
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
}

#[test]
fn every_event_kind_occurs_across_seeds() {
    sim::quiet_panics();
    let opts = RunOptions {
        keep_events: true,
        ..Default::default()
    };
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let r = sim::run_with(&scenario(seed, &Knobs::default()), &opts).unwrap();
        let mut first_route = std::collections::HashMap::new();
        for e in r.events.unwrap() {
            match &e {
                Event::RequestStart { req, route, .. } => {
                    first_route.insert(*req, route.clone());
                }
                Event::RequestEnd {
                    req,
                    outcome: sim::Outcome::Served { route, .. },
                    ..
                } if first_route
                    .get(req)
                    .is_some_and(|r| r.as_ref() != Some(route)) =>
                {
                    kinds.insert("rerouted");
                }
                _ => {}
            }
            kinds.insert(match e {
                Event::RequestStart { .. } => "request-start",
                Event::AttemptStart { hedge: true, .. } => "hedge",
                Event::AttemptStart { .. } => "attempt-start",
                Event::AttemptEnd { result, .. } => match result {
                    sim::AttemptResult::Ok { pending: true, .. } => "stream-first-byte",
                    sim::AttemptResult::Ok { .. } => "ok",
                    sim::AttemptResult::Failed(_) => "failed",
                    sim::AttemptResult::Dropped => "dropped",
                    sim::AttemptResult::Panicked => "attempt-panicked",
                },
                Event::RequestEnd { outcome, .. } => match outcome {
                    sim::Outcome::Served { .. } => "served",
                    sim::Outcome::Failed { .. } => "request-failed",
                    sim::Outcome::Cancelled => "cancelled",
                    sim::Outcome::Panicked => "request-panicked",
                },
                Event::StreamEnd { .. } => "stream-end",
                Event::Reload { .. } => "reload",
            });
        }
    }
    let want = [
        "request-start",
        "hedge",
        "attempt-start",
        "stream-first-byte",
        "ok",
        "failed",
        "dropped",
        "attempt-panicked",
        "served",
        "request-failed",
        "cancelled",
        "request-panicked",
        "stream-end",
        "reload",
    ];
    for w in want {
        assert!(
            kinds.contains(w),
            "no `{w}` event in 200 random scenarios: {kinds:?}"
        );
    }
}

/// `TOLLGATE_SIM_SURVEY=N`: runs N random scenarios (every feature on with
/// `TOLLGATE_SIM_ALL=1`, else without `KNOWN_BROKEN`) and prints how many break each
/// promise, with the first seed of each (does not fail).
#[test]
fn survey() {
    let Some(n) = env_u64("TOLLGATE_SIM_SURVEY") else {
        return;
    };
    sim::quiet_panics();
    let mut by: std::collections::BTreeMap<Promise, (u64, u64, String)> = Default::default();
    let knobs = survey_knobs();
    let t = std::time::Instant::now();
    for seed in 0..n {
        let r = sim::run(&scenario(seed, &knobs)).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for v in &r.violations {
            if seen.insert(v.promise) {
                let e = by.entry(v.promise).or_insert((0, seed, v.to_string()));
                e.0 += 1;
            }
        }
    }
    println!("{n} scenarios in {:?}", t.elapsed());
    for (p, (count, seed, first)) in by {
        println!("{p}: {count} scenarios; first seed {seed}: {first}");
    }
}

/// A hand-written scenario: a policy, how its upstreams behave, and what its run must
/// show besides keeping every promise (so that it exercises what it is about).
struct Hand {
    name: &'static str,
    /// Features it uses: while one is in `KNOWN_BROKEN` its violations are expected.
    uses: &'static [Feature],
    policy: String,
    scripts: fn() -> Vec<sim::UpstreamScript>,
    mix: fn() -> sim::Mix,
    /// What the summary must show.
    shows: fn(&sim::Summary) -> bool,
    /// The simulated shared-state backend, if any.
    shared: Option<sim::SharedScript>,
}

const HEAD: &str = r#"
[upstreams.a]
base_url = "http://127.0.0.1:1/a"
[upstreams.b]
base_url = "http://127.0.0.1:1/b"
[models.ma]
upstream = "a"
price = { input_per_mtok = 2.0, output_per_mtok = 8.0 }
[models.mb]
upstream = "b"
price = { input_per_mtok = 1.0, output_per_mtok = 4.0 }
[retry.r]
max_attempts = 3
backoff = { kind = "exponential", base = "20ms", max = "200ms", jitter = "full" }
retry_after = { honor = true, max = "500ms" }
"#;

fn flaky(name: &str, share: f64) -> sim::UpstreamScript {
    sim::UpstreamScript {
        name: name.into(),
        phases: vec![sim::Phase {
            latency_ms: (5, 120),
            faults: sim::Faults {
                connect: share / 3.0,
                server_error: share / 3.0,
                rate_limited: share / 3.0,
                retry_after_s: Some(1),
                ..Default::default()
            },
            ..Default::default()
        }],
    }
}

fn outage_then_recovery(name: &str) -> sim::UpstreamScript {
    sim::UpstreamScript {
        name: name.into(),
        phases: vec![
            sim::Phase {
                outage: true,
                ..Default::default()
            },
            sim::Phase {
                from_ms: 1500,
                ..Default::default()
            },
        ],
    }
}

fn outcome(s: &sim::Summary, prefix: &str) -> u64 {
    s.outcomes
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

fn hands() -> Vec<Hand> {
    vec![
        Hand {
            name: "limits-fail-fast",
            uses: &[],
            policy: r#"
[upstreams.a.limits]
requests_per_second = 5
burst = 2
concurrency = 2
tokens_per_minute = 30000
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "r"
timeouts = { per_try = "500ms", total = "2s" }
"#
            .into(),
            scripts: || vec![flaky("a", 0.1), flaky("b", 0.1)],
            mix: sim::Mix::default,
            shows: |s| s.attempt_results.get("ok").copied().unwrap_or(0) > 10,
            shared: None,
        },
        Hand {
            name: "limits-wait",
            uses: &[Feature::WaitLimits],
            policy: r#"
[upstreams.a.limits]
requests_per_second = 3
burst = 1
concurrency = 1
on_limit = "wait"
queue_timeout = "800ms"
[[routes]]
name = "main"
targets = ["ma"]
retry = "r"
timeouts = { per_try = "1s", total = "2s" }
"#
            .into(),
            scripts: || vec![flaky("a", 0.1)],
            mix: sim::Mix::default,
            shows: |s| outcome(s, "served") > 0,
            shared: None,
        },
        Hand {
            name: "breaker-opens-and-probes",
            uses: &[],
            policy: r#"
[breakers.quick]
consecutive_failures = 2
open_for = "300ms"
half_open = { probes = 2, successes_to_close = 2 }
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "r"
breaker = "quick"
timeouts = { per_try = "300ms", total = "2s" }
"#
            .into(),
            scripts: || vec![outage_then_recovery("a"), flaky("b", 0.05)],
            mix: sim::Mix::default,
            shows: |s| outcome(s, "served") > 0 && s.attempt_results.contains_key("connect"),
            shared: None,
        },
        Hand {
            name: "budgets-per-caller",
            uses: &[],
            policy: r#"
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "r"
timeouts = { per_try = "500ms", total = "2s" }
[budgets.c0]
limit_usd = 0.01
window = "1s"
scope = { keys = ["c0"] }
[budgets.all]
limit_usd = 0.03
window = "2s"
"#
            .into(),
            scripts: || vec![flaky("a", 0.2), flaky("b", 0.1)],
            mix: || sim::Mix {
                callers: vec!["c0".into(), "c1".into()],
                max_tokens: Some((100, 1000)),
                ..Default::default()
            },
            shows: |s| outcome(s, "budget") > 0 && outcome(s, "served") > 0,
            shared: None,
        },
        Hand {
            name: "streams-and-budgets",
            uses: &[Feature::StreamBudgets],
            policy: r#"
[[routes]]
name = "main"
targets = ["ma"]
retry = "r"
timeouts = { per_try = "500ms", total = "2s" }
[budgets.small]
limit_usd = 0.01
window = "10s"
"#
            .into(),
            scripts: || vec![flaky("a", 0.0)],
            mix: || sim::Mix {
                stream_share: 1.0,
                max_tokens: Some((200, 400)),
                ..Default::default()
            },
            shows: |s| s.streams.0 > 0,
            shared: None,
        },
        Hand {
            name: "retry-budget",
            uses: &[],
            policy: r#"
[retry.tight]
max_attempts = 4
backoff = { kind = "constant", base = "10ms", max = "10ms", jitter = "none" }
budget = { ratio = 0.1, min_per_second = 1, ttl = "1s" }
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "tight"
timeouts = { per_try = "300ms", total = "2s" }
"#
            .into(),
            scripts: || vec![outage_then_recovery("a"), outage_then_recovery("b")],
            mix: sim::Mix::default,
            shows: |s| outcome(s, "retry budget exhausted") > 0,
            shared: None,
        },
        Hand {
            name: "shared-state-reliable-backend",
            uses: &[],
            policy: r#"
[state.redis]
url = { env = "REDIS_URL" }
lease = 4
[upstreams.a.limits]
requests_per_second = 5
burst = 2
state = "shared"
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "r"
timeouts = { per_try = "500ms", total = "2s" }
[budgets.all]
limit_usd = 0.02
window = "1s"
state = "shared"
"#
            .into(),
            scripts: || vec![flaky("a", 0.1), flaky("b", 0.1)],
            mix: || sim::Mix {
                max_tokens: Some((100, 1000)),
                ..Default::default()
            },
            shows: |s| outcome(s, "served") > 0 && outcome(s, "budget") > 0,
            // Instant and never failing: the shared bounds are checked.
            shared: Some(sim::SharedScript::default()),
        },
        Hand {
            name: "hedging",
            uses: &[Feature::Hedging],
            policy: r#"
[[routes]]
name = "main"
targets = ["ma", "mb"]
retry = "r"
hedge = { after = "30ms", max_extra = 1 }
timeouts = { per_try = "500ms", total = "2s" }
"#
            .into(),
            scripts: || vec![flaky("a", 0.3), flaky("b", 0.1)],
            mix: sim::Mix::default,
            shows: |s| s.hedges > 0,
            shared: None,
        },
    ]
    .into_iter()
    .chain(
        [
            "failover",
            "weighted",
            "cheapest",
            "lowest-latency",
            "least-busy",
        ]
        .into_iter()
        .map(strategy_hand),
    )
    .collect()
}

fn strategy_hand(strategy: &'static str) -> Hand {
    let policy = format!(
        "[[routes]]\nname = \"main\"\nstrategy = \"{strategy}\"\ntargets = [\"ma\", \"mb\"]\nretry = \"r\"\ntimeouts = {{ per_try = \"400ms\", total = \"2s\" }}\n"
    );
    let uses: &'static [Feature] = if strategy == "lowest-latency" {
        &[Feature::LowestLatency]
    } else {
        &[]
    };
    Hand {
        name: strategy,
        uses,
        policy,
        scripts: || vec![outage_then_recovery("a"), flaky("b", 0.2)],
        mix: sim::Mix::default,
        shows: |s| outcome(s, "served") > 0,
        shared: None,
    }
}

#[test]
fn hand_written_scenarios_keep_every_promise() {
    sim::quiet_panics();
    let mut failures = Vec::new();
    for h in hands() {
        let known = h
            .uses
            .iter()
            .find_map(|f| KNOWN_BROKEN.iter().find(|(k, _)| k == f).map(|(_, i)| *i));
        for seed in 0..20 {
            let s = Scenario {
                seed,
                policy: format!("{HEAD}{}", h.policy),
                reload: None,
                shared: h.shared.clone(),
                upstreams: (h.scripts)(),
                traffic: sim::Traffic {
                    max_requests: 60,
                    segments: vec![sim::Segment {
                        from_ms: 0,
                        to_ms: 3000,
                        start_per_s: 10.0,
                        end_per_s: 40.0,
                    }],
                    bursts: vec![sim::Burst {
                        at_ms: 1000,
                        count: 10,
                    }],
                    templates: vec![],
                    mix: sim::Mix {
                        cancel: Some((0.1, (50, 1500))),
                        panic_share: 0.02,
                        ..(h.mix)()
                    },
                },
            };
            let r = sim::run(&s).unwrap_or_else(|e| panic!("{}: {e}", h.name));
            if !(h.shows)(&r.summary) {
                failures.push(format!(
                    "{} seed {seed}: does not show what it is about: {:?}",
                    h.name, r.summary
                ));
            }
            match (known, r.violations.first()) {
                (None, Some(v)) => {
                    failures.push(format!("{} seed {seed}: {v}\n{}", h.name, s.to_json()))
                }
                (Some(issue), Some(_)) if seed == 0 => {
                    eprintln!(
                        "{}: breaks promises as expected while {issue} is open",
                        h.name
                    )
                }
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_promise_is_in_the_guarantees_doc() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guarantees.md"))
            .expect("docs/guarantees.md");
    for p in Promise::ALL {
        assert!(
            doc.contains(&format!("**{p}**")),
            "docs/guarantees.md lacks **{p}**"
        );
    }
    for (_, issue) in KNOWN_BROKEN {
        assert!(
            doc.contains(&issue["issue 9 ".len()..]),
            "docs/guarantees.md lacks {issue}"
        );
    }
}
