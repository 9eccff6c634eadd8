//! Fidelity: a short scenario run through `tollgate simulate`'s engine (virtual time, the
//! scripted upstreams) and through the real relay against in-process fake upstreams in
//! real time (HTTP over loopback, wall-clock waits) gives the same success rate, attempts
//! per request and cost, within the tolerances stated here. The simulation is only worth
//! trusting if it matches what the relay does.
//!
//! The two runs draw their faults independently (the engine from the scenario's seed, the
//! fakes from theirs), so they agree in distribution, not call for call: each tolerance is
//! about four standard deviations of the difference of two runs of this size.

use std::sync::Arc;
use std::time::Duration;

use tollgate::exec::Executor;
use tollgate::http::Client;
use tollgate::server::fake::{Behavior, FakeUpstream};
use tollgate::server::Relay;
use tollgate::sim::file::{compile, load_scenario_text, report};

mod common;

use common::relay::{header, no_keys, serve};

/// Requests per second and seconds of traffic: about 1,200 requests, 4 s of real time.
const RATE: u64 = 300;
const SECONDS: u64 = 4;
/// Filler words per prompt, and `max_tokens`, fixed so both runs send the same requests.
const WORDS: usize = 40;
const MAX_TOKENS: u64 = 200;
/// Share of calls each model fails with a 5xx.
const FAIL_A: f64 = 0.5;
const FAIL_B: f64 = 0.3;
const LATENCY_MS: u64 = 10;

/// Tolerances (absolute for the success rate, relative for the others), about 4.5 standard
/// deviations of the difference of two independent runs of 1,200 requests: the success
/// rate (1 − 0.5² · 0.3² ≈ 0.978) has σ ≈ 0.0043 a run, attempts per request (≈ 1.83, σ ≈
/// 0.9 a request) σ ≈ 1.4%, the cost (the served requests' tokens; the engine draws usage
/// within ±10% of the estimate) σ ≈ 0.5%. A 10,000-request simulation of this scenario
/// gives 0.978 and 1.82, as the formulas say.
const SUCCESS_TOLERANCE: f64 = 0.03;
const AMPLIFICATION_TOLERANCE: f64 = 0.09;
const COST_TOLERANCE: f64 = 0.05;

fn policy(a: &str, b: &str) -> String {
    format!(
        r#"
version = 1
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "10s" }}
retry = "twice"
[upstreams.a]
base_url = "{a}"
[upstreams.b]
base_url = "{b}"
[models.ma]
upstream = "a"
price = {{ input_per_mtok = 1.0, output_per_mtok = 10.0 }}
[models.mb]
upstream = "b"
price = {{ input_per_mtok = 1.0, output_per_mtok = 10.0 }}
[retry.twice]
max_attempts = 2
backoff = {{ kind = "constant", base = "5ms", max = "5ms", jitter = "none" }}
[[routes]]
name = "main"
targets = ["ma", "mb"]
"#
    )
}

fn scenario() -> String {
    format!(
        r#"
duration = "{SECONDS}s"
seed = 3
[traffic]
rate = {RATE}
[[traffic.requests]]
model = "main"
prompt_words = [{WORDS}, {WORDS}]
max_tokens = [{MAX_TOKENS}, {MAX_TOKENS}]
[models.ma]
latency = {{ p50 = "{LATENCY_MS}ms", p99 = "{LATENCY_MS}ms" }}
failures = {{ server_error = {FAIL_A} }}
[models.mb]
latency = {{ p50 = "{LATENCY_MS}ms", p99 = "{LATENCY_MS}ms" }}
failures = {{ server_error = {FAIL_B} }}
"#
    )
}

/// What both runs are compared on.
#[derive(Debug)]
struct Figures {
    requests: u64,
    success_rate: f64,
    amplification: f64,
    cost_usd: f64,
}

fn simulated() -> Figures {
    // The policy's base URLs do not matter to the engine.
    let plan = common::plan(&policy("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"));
    let mut l = load_scenario_text("fidelity.toml", scenario());
    let file = l.file.take().expect("the scenario parses");
    let prepared = compile(&mut l, &file, &plan, None);
    assert!(!l.has_errors(), "{}", l.to_diagnostics().render(false));
    let r = report::run("fidelity", plan, &prepared).expect("runs");
    assert_eq!(r.violations, 0, "broken promises");
    Figures {
        requests: r.requests,
        success_rate: r.success_rate,
        amplification: r.amplification,
        cost_usd: r.cost_usd,
    }
}

fn fake(fail_rate: f64) -> Behavior {
    Behavior {
        latency: Duration::from_millis(LATENCY_MS),
        fail_rate,
        full_length: true,
        ..Behavior::default()
    }
}

/// One request of the scenario's template, in the relay's format.
fn body() -> serde_json::Value {
    serde_json::json!({
        "model": "main",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "word ".repeat(WORDS)}],
    })
}

/// `n` requests through the relay, paced at [`RATE`].
async fn real(n: u64) -> Figures {
    let (a, b) = (
        FakeUpstream::start("a").await.unwrap(),
        FakeUpstream::start("b").await.unwrap(),
    );
    a.set_default(fake(FAIL_A));
    b.set_default(fake(FAIL_B));
    let plan = common::plan(&policy(&a.base_url(), &b.base_url()));
    let client = Client::with_env(&plan, no_keys()).unwrap();
    let exec = Executor::builder(plan).seed(3).build().unwrap();
    let (url, _stop) = serve(Relay::new(exec.clone(), client)).await;
    let url = Arc::new(format!("{url}/v1/chat/completions"));
    let http = reqwest::Client::new();
    let start = tokio::time::Instant::now();
    let mut calls = Vec::new();
    // Open loop, as the engine's arrivals: request i leaves at i / RATE seconds.
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / RATE as f64)).await;
        let (http, url) = (http.clone(), url.clone());
        calls.push(tokio::spawn(async move {
            let r = http.post(url.as_str()).json(&body()).send().await.unwrap();
            let attempts: u64 = header(&r, "x-tollgate-attempts").parse().unwrap_or(0);
            let ok = r.status().is_success() && r.bytes().await.is_ok();
            (ok, attempts)
        }));
    }
    let (mut ok, mut attempts) = (0u64, 0u64);
    for c in calls {
        let (served, n) = c.await.unwrap();
        ok += u64::from(served);
        attempts += n;
    }
    assert_eq!(
        attempts,
        a.total_calls() + b.total_calls(),
        "the attempts the relay reports are the calls the upstreams saw"
    );
    Figures {
        requests: n,
        success_rate: ok as f64 / n as f64,
        amplification: attempts as f64 / n as f64,
        cost_usd: exec.stats().spend_usd,
    }
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn the_simulation_matches_the_relay_against_real_upstreams() {
    let sim = simulated();
    let real = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(real(sim.requests));
    eprintln!("simulated {sim:?}\nreal      {real:?}");
    let expected = (RATE * SECONDS) as f64;
    assert!(
        relative(sim.requests as f64, expected) < 0.05,
        "{} arrivals for {expected}",
        sim.requests
    );
    // The figures are not trivial: retries and failovers happen and some requests fail.
    assert!(
        sim.amplification > 1.5 && sim.success_rate < 0.995,
        "{sim:?}"
    );
    assert!(
        (sim.success_rate - real.success_rate).abs() <= SUCCESS_TOLERANCE,
        "success rate: simulated {:.4}, real {:.4} (tolerance {SUCCESS_TOLERANCE})",
        sim.success_rate,
        real.success_rate
    );
    assert!(
        relative(sim.amplification, real.amplification) <= AMPLIFICATION_TOLERANCE,
        "attempts per request: simulated {:.3}, real {:.3} (tolerance {:.0}%)",
        sim.amplification,
        real.amplification,
        AMPLIFICATION_TOLERANCE * 100.0
    );
    assert!(
        relative(sim.cost_usd, real.cost_usd) <= COST_TOLERANCE,
        "cost: simulated ${:.6}, real ${:.6} (tolerance {:.0}%)",
        sim.cost_usd,
        real.cost_usd,
        COST_TOLERANCE * 100.0
    );
}
