//! `tollgate simulate`: the shipped scenarios show what they are about, the report is
//! byte-identical for the same inputs and seed, the exit codes, `--baseline`, and the JSON
//! document's keys are those `docs/simulate.md` documents.

use std::path::{Path, PathBuf};
use std::process::Output;

use tollgate::sim::file::prepare;
use tollgate::sim::file::report::{self, PolicyReport};

mod common;

use common::cli::{code, text, tollgate};

const RELAY: &str = "policies/relay.toml";

/// Runs a scenario file under `policies/relay.toml`.
fn simulate(scenario: &Path) -> PolicyReport {
    let (plan, p) = prepare(scenario, &[PathBuf::from(RELAY)], None)
        .unwrap_or_else(|e| panic!("{}: {e:?}", scenario.display()));
    let r = report::run(RELAY, plan, &p).expect("runs");
    assert_eq!(r.violations, 0, "{}: broken promises", scenario.display());
    r
}

/// Index of the interval holding second `s`.
fn at(r: &PolicyReport, s: f64) -> usize {
    (s / r.series.interval_s) as usize
}

fn failure_share(r: &PolicyReport, from_s: f64, to_s: f64) -> f64 {
    let (a, b) = (at(r, from_s), at(r, to_s).min(r.series.served.len()));
    let failed: u64 = r.series.failed[a..b].iter().sum();
    let served: u64 = r.series.served[a..b].iter().sum();
    failed as f64 / (failed + served).max(1) as f64
}

#[test]
fn regional_outage_fails_over_then_recovers() {
    let r = simulate(Path::new("scenarios/regional-outage.toml"));
    assert!(r.failovers > 100, "failovers {}", r.failovers);
    let direct = r.served_by_model.get("claude-sonnet-4.5-direct").copied();
    assert!(direct.unwrap_or(0) > 100, "{:?}", r.served_by_model);
    // Before the outage and after it, nearly everything is served; during it, much less.
    assert!(failure_share(&r, 0.0, 3600.0) < 0.02, "{r:?}");
    assert!(failure_share(&r, 3900.0, 10_800.0) > 0.1, "{r:?}");
    assert!(failure_share(&r, 11_700.0, 14_400.0) < 0.02, "{r:?}");
    let relay = &r.breakers["upstream relay"];
    assert!(relay.trips > 0 && relay.changes[0].0 >= 3600.0, "{relay:?}");
    // The README shows this run's report as it is.
    let doc = report::Document {
        scenario: "scenarios/regional-outage.toml".into(),
        seed: 1,
        duration_s: 14_400.0,
        report: r,
        baseline: None,
        differences: None,
    };
    let readme = std::fs::read_to_string("README.md").unwrap();
    let shown = format!(
        "$ tollgate simulate --scenario scenarios/regional-outage.toml policies/relay.toml\n{}",
        report::human(&doc)
    );
    assert!(
        readme.contains(&shown),
        "README.md's example differs from:\n{shown}"
    );
}

#[test]
fn rate_limit_storm_is_retried_after_retry_after() {
    let r = simulate(Path::new("scenarios/rate-limit-storm.toml"));
    let n429 = r.attempt_results.get("429 rate_limit_exceeded").copied();
    assert!(n429.unwrap_or(0) > 1000, "{:?}", r.attempt_results);
    assert!(r.amplification > 1.2, "{}", r.amplification);
    // Retries carry requests through the storm: its gates pass.
    assert!(r.passed, "{:?}", r.expect);
    // Requests in the storm wait (Retry-After 10s, the 429 backoff): its p99 is far above
    // the p99 before it.
    let before = r.series.p99_ms[at(&r, 600.0)];
    let during = r.series.p99_ms[at(&r, 1500.0)];
    assert!(during > 5.0 * before, "p99 {before} → {during}");
}

#[test]
fn slow_provider_opens_the_slow_call_breaker() {
    let r = simulate(Path::new("scenarios/slow-provider.toml"));
    let relay = &r.breakers["upstream relay"];
    let first_open = relay
        .changes
        .iter()
        .find(|(_, s)| *s == "open")
        .map(|c| c.0);
    // It opens once calls slow down past 2s (from 25m), not before the slowdown (15m).
    assert!(
        first_open.is_some_and(|t| t > 900.0 && t < 2400.0),
        "{relay:?}"
    );
    // And closes again after the relay is fast again (45m).
    let last = relay.changes.last().unwrap();
    assert!(last.1 == "closed" && last.0 > 2700.0, "{relay:?}");
    assert!(r.outcomes.get("no target available").copied().unwrap_or(0) > 0);
}

#[test]
fn budget_runs_out_mid_month_and_reroutes() {
    let r = simulate(Path::new("scenarios/budget-exhaustion.toml"));
    let premium = &r.budgets["premium"];
    let monthly = &r.budgets["monthly"];
    // The daily premium budget runs out on the first day; the month's in its middle.
    assert!(
        premium.exhausted_at_s.is_some_and(|t| t < 86_400.0),
        "{premium:?}"
    );
    let day = monthly.exhausted_at_s.map(|t| t / 86_400.0);
    assert!(day.is_some_and(|d| (8.0..22.0).contains(&d)), "{day:?}");
    // Rerouted to bulk, then rejected once the month's budget is spent.
    assert!(r.served_by_route.get("bulk").copied().unwrap_or(0) > 100);
    let rejected = r.outcomes.get("budget `monthly` exceeded").copied();
    assert!(rejected.unwrap_or(0) > 1000, "{:?}", r.outcomes);
    assert!(r.cost_usd <= 6300.0 * 1.01, "{}", r.cost_usd);
    assert!(r.savings.as_ref().is_some_and(|s| s.saved_usd > 0.0));
}

#[test]
fn price_change_moves_the_cheapest_route() {
    let r = simulate(Path::new("scenarios/price-change.toml"));
    assert_eq!(r.reloads.len(), 1, "{:?}", r.reloads);
    let by = &r.served_by_model;
    // deepseek is the cheapest until gemini's price drops at 2h, then gemini is.
    assert!(
        by["deepseek-v3.2"] > 3000 && by["gemini-2.5-flash"] > 3000,
        "{by:?}"
    );
    assert_eq!(r.success_rate, 1.0);
}

/// `tollgate simulate --scenario S --baseline B [--format F] [--out O] RELAY`, expected to
/// exit 0.
fn with_baseline(s: &Path, baseline: &str, format: &str, out: Option<&Path>) -> Output {
    let mut args = vec![
        "simulate",
        "--scenario",
        s.to_str().unwrap(),
        "--baseline",
        baseline,
    ];
    args.extend(["--format", format]);
    if let Some(o) = out {
        args.extend(["--out", o.to_str().unwrap()]);
    }
    args.push(RELAY);
    let o = tollgate(&args);
    assert_eq!(code(&o), 0, "{}", text(&o));
    o
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const SHORT: &str = r#"
duration = "2m"
seed = 3
[traffic]
rate = 5
[[traffic.requests]]
task = "chat"
max_tokens = [100, 400]
[upstreams.relay]
latency = { p50 = "300ms", p99 = "2s" }
failures = { server_error = 0.05 }
"#;

#[test]
fn same_inputs_and_seed_give_the_same_bytes() {
    let s = scratch("short.toml", SHORT);
    let s = s.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["simulate", "--scenario", s, "--format", "json"];
        args.extend_from_slice(extra);
        args.push(RELAY);
        let o = tollgate(&args);
        assert_eq!(code(&o), 0, "{}", text(&o));
        o.stdout
    };
    let a = run(&[]);
    assert_eq!(a, run(&[]), "two runs differ");
    assert_eq!(a, run(&["--seed", "3"]));
    assert_ne!(a, run(&["--seed", "4"]), "another seed, the same run");
    let doc: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(doc["seed"], 3);
    assert!(doc["requests"].as_u64().unwrap() > 400, "{doc}");
}

#[test]
fn exit_codes() {
    let s = scratch("codes.toml", SHORT);
    let s = s.to_str().unwrap();
    let gate = scratch(
        "gate.toml",
        &format!("{SHORT}\n[expect]\nmin_success = 0.9999\nmax_p99 = \"1ms\"\n"),
    );
    let ok = scratch(
        "ok.toml",
        &format!("{SHORT}\n[expect]\nmin_success = 0.5\n"),
    );
    let bad = scratch("bad.toml", "duration = \"0s\"\n[traffic]\nrat = 1\n");
    let broken_policy = scratch(
        "broken.toml",
        "[[routes]]\nname = \"x\"\ntargets = [\"nope\"]\n",
    );
    let cases: [(&[&str], i32); 7] = [
        (&["simulate", "--scenario", ok.to_str().unwrap(), RELAY], 0),
        (
            &["simulate", "--scenario", gate.to_str().unwrap(), RELAY],
            1,
        ),
        (&["simulate", "--scenario", bad.to_str().unwrap(), RELAY], 2),
        (&["simulate", "--scenario", "no/such/file.toml", RELAY], 2),
        (
            &["simulate", "--scenario", s, broken_policy.to_str().unwrap()],
            1,
        ),
        (&["simulate", "--scenario", s, "no/such/policy.toml"], 2),
        (&["simulate", RELAY], 2),
    ];
    for (args, want) in cases {
        let o = tollgate(args);
        assert_eq!(code(&o), want, "{args:?}:\n{}", text(&o));
    }
    let o = tollgate(&["simulate", "--scenario", gate.to_str().unwrap(), RELAY]);
    assert!(
        text(&o).contains("expect max_p99 1: FAILED"),
        "{}",
        text(&o)
    );
    let o = tollgate(&["simulate", "--scenario", bad.to_str().unwrap(), RELAY]);
    let t = text(&o);
    assert!(
        t.contains("duration-out-of-range") && t.contains("unknown key `rat`"),
        "{t}"
    );
}

#[test]
fn baseline_runs_both_and_shows_the_differences() {
    // Names only what both policies have (nothing): upstreams answer as unscripted ones do.
    let plain = "duration = \"2m\"\nseed = 3\n[traffic]\nrate = 5\n";
    let s = scratch("baseline.toml", plain);
    let out = scratch("baseline.json", "");
    let o = with_baseline(&s, "policies/failover.toml", "json", Some(&out));
    assert!(o.stdout.is_empty(), "--out writes the file, not stdout");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["baseline"]["policy"], "policies/failover.toml");
    assert_eq!(doc["policy"], RELAY);
    let diff = doc["differences"]["cost_usd"].as_f64().unwrap();
    let want = doc["cost_usd"].as_f64().unwrap() - doc["baseline"]["cost_usd"].as_f64().unwrap();
    assert!((diff - want).abs() < 1e-5, "{diff} vs {want}");
    let o = with_baseline(&s, "policies/failover.toml", "human", None);
    assert!(
        text(&o).contains("differences (baseline → policy): success"),
        "{}",
        text(&o)
    );
}

/// Keys of the JSON document listed in a docs/simulate.md table marked `<!-- json: NAME -->`.
fn documented(section: &str) -> Vec<String> {
    let text = std::fs::read_to_string("docs/simulate.md").unwrap();
    let marker = format!("<!-- json: {section} -->");
    let (_, rest) = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker}"));
    let mut keys: Vec<String> = rest
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn the_json_document_is_the_documented_one() {
    let s = scratch(
        "doc.toml",
        &format!("{SHORT}\n[expect]\nmin_success = 0.5\n"),
    );
    let o = with_baseline(&s, RELAY, "json", None);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut top = keys(&doc);
    top.retain(|k| !["baseline", "differences"].contains(&k.as_str()));
    let mut want = documented("top");
    want.retain(|k| !["baseline", "differences"].contains(&k.as_str()));
    assert_eq!(top, want, "top-level keys");
    assert_eq!(keys(&doc["latency_ms"]), documented("latency_ms"));
    assert_eq!(keys(&doc["series"]), documented("series"));
    assert_eq!(keys(&doc["differences"]), documented("differences"));
    assert_eq!(keys(&doc["expect"][0]), documented("expect"));
    for k in [
        "requests",
        "succeeded",
        "success_rate",
        "attempts",
        "cost_usd",
        "simulated_seconds",
    ] {
        assert!(doc[k].is_number(), "{k}");
    }
}

/// `--format html`: one self-contained page (no external reference), byte-identical per
/// seed, with lines in its charts and breaker bands. (`scripts/test.sh` opens it in
/// headless Chromium: no console errors, charts drawn.)
#[test]
fn the_html_report_is_self_contained_and_has_charts() {
    let s = scratch("html.toml", SHORT);
    let out = scratch("report.html", "");
    let run = || {
        with_baseline(&s, RELAY, "html", Some(&out));
        std::fs::read_to_string(&out).unwrap()
    };
    let page = run();
    assert_eq!(page, run(), "two runs differ");
    assert!(page.starts_with("<!DOCTYPE html>"));
    for external in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
        assert!(
            !page.contains(external),
            "references something outside: {external}"
        );
    }
    let lines = page.matches("<polyline class=\"series\"").count();
    assert!(
        lines >= 8,
        "{lines} lines: requests and latency, for both policies"
    );
    assert!(page.contains("points=\"") && !page.contains("points=\"\""));
    assert!(page.contains("Budget `monthly`"), "a chart per budget");
}

/// A `reload` event switches policies while traffic flows: requests before it take the
/// first policy's routes, after it the second's; a reload to a policy that does not
/// compile fails the command with exit 1.
#[test]
fn a_reload_event_switches_policies_mid_run() {
    let other = std::fs::canonicalize("policies/failover.toml").unwrap();
    let scenario = format!(
        "duration = \"2m\"\nseed = 3\n[traffic]\nrate = 5\n[[events]]\nat = \"1m\"\nreload = {:?}\n",
        other.display().to_string()
    );
    let s = scratch("reload.toml", &scenario);
    let r = simulate(&s);
    assert_eq!(r.reloads.len(), 1, "{:?}", r.reloads);
    assert!(r.reloads[0].0 >= 60.0);
    let routes = &r.served_by_route;
    assert!(
        routes.contains_key("default") && routes.contains_key("bulk"),
        "{routes:?}"
    );
    let broken = scratch(
        "broken-reload.toml",
        "[[routes]]\nname = \"x\"\ntargets = [\"nope\"]\n",
    );
    let scenario = scenario.replace(
        &format!("{:?}", other.display().to_string()),
        &format!("{:?}", broken.display().to_string()),
    );
    let s = scratch("reload-broken.toml", &scenario);
    let o = tollgate(&["simulate", "--scenario", s.to_str().unwrap(), RELAY]);
    assert_eq!(code(&o), 1, "{}", text(&o));
}
