//! `tollgate demo`: the reference policy against simulated upstreams, in-process, with no
//! key and no network beyond 127.0.0.1.
//!
//! Two simulated OpenAI-compatible upstreams stand in for the policy's two:
//! - `relay` serves four models, each with its own behaviour: `gemini-2.5-flash` and
//!   `gpt-4.1` healthy, `deepseek-v3.2` failing 30% of calls with 500/503,
//!   `claude-sonnet-4.5` rate-limited (429 with `Retry-After: 1`);
//! - `anthropic` goes down (503) from 30% to 60% of the run, then comes back.
//!
//! The policy is loaded as written, with `TOLLGATE__…` overrides that point its upstreams
//! at the simulations and scale its waits and limits to a run of seconds (printed at the
//! start). The load goes through the real relay (`tollgate serve`'s router) over loopback.
//!
//! **Reproducible.** Everything runs on one thread under tokio's paused clock: the relay's
//! waits (backoff, `Retry-After`, breakers' open time, limiter windows), the simulated
//! upstreams' latency and rate windows and the load's pacing are virtual time, which moves
//! only when every task waits on a timer. The simulated faults are seeded from `--seed`
//! (not from the ports), so the same seed gives the same report, byte for byte: latencies
//! are virtual too (the time the relay and upstreams would take, not this machine's
//! speed), and the real time the run took goes to stderr. This relies on loopback sockets
//! delivering a write before the writer waits (Linux does, in the sender's system call):
//! an I/O still in flight when every task waits would let the clock jump ahead.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;

use super::{EXIT_INVALID, EXIT_USAGE};
use crate::exec::{Executor, Usage};
use crate::http::Client;
use crate::plan::Plan;
use crate::policy::LoadOptions;
use crate::server::fake::{Behavior, FakeUpstream};
use crate::server::Relay;

/// The model the savings are measured against.
const PREMIUM: &str = "claude-sonnet-4.5";

/// Overrides that scale the reference policy's waits and limits to a seconds-long run.
const DEMO_OVERRIDES: [(&str, &str); 12] = [
    ("TOLLGATE__RETRY__STANDARD__BACKOFF__BASE", "10ms"),
    ("TOLLGATE__RETRY__STANDARD__BACKOFF__MAX", "200ms"),
    ("TOLLGATE__RETRY__STANDARD__ON__429__BACKOFF__BASE", "20ms"),
    ("TOLLGATE__RETRY__STANDARD__ON__429__BACKOFF__MAX", "200ms"),
    ("TOLLGATE__RETRY__STANDARD__RETRY_AFTER__MAX", "250ms"),
    // At 0.2, retries cannot cover a model failing 30% of the calls of a route it serves
    // first (`bulk`): about a tenth of that route would stop with retry_budget_exhausted.
    ("TOLLGATE__RETRY__STANDARD__BUDGET__RATIO", "0.5"),
    ("TOLLGATE__BREAKERS__STANDARD__OPEN_FOR", "500ms"),
    ("TOLLGATE__BREAKERS__STRICT__OPEN_FOR", "500ms"),
    (
        "TOLLGATE__UPSTREAMS__RELAY__LIMITS__REQUESTS_PER_MINUTE",
        "120000",
    ),
    (
        "TOLLGATE__UPSTREAMS__RELAY__LIMITS__TOKENS_PER_MINUTE",
        "500000000",
    ),
    (
        "TOLLGATE__UPSTREAMS__ANTHROPIC__LIMITS__REQUESTS_PER_MINUTE",
        "60000",
    ),
    ("TOLLGATE__DEFAULTS__TIMEOUTS__PER_TRY", "2s"),
];

/// One finished request.
struct Outcome {
    ok: bool,
    latency: Duration,
    attempts: u32,
    failovers: u32,
    route: String,
    model: String,
    /// The error code of a failed request.
    error: String,
}

/// Runs the demo.
pub fn run(policy: &Path, requests: usize, concurrency: usize, rate: f64, seed: u64) -> ExitCode {
    // Virtual time on one thread: the relay, the simulated upstreams and the load share
    // tokio's paused clock, so waits cost no real time and a seed gives one run, event for
    // event (see `demo`).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        250.0
    };
    rt.block_on(demo(
        policy,
        requests.max(1),
        concurrency.max(1),
        rate,
        seed,
    ))
}

async fn demo(
    policy: &Path,
    requests: usize,
    concurrency: usize,
    rate: f64,
    seed: u64,
) -> ExitCode {
    let relay_up = match FakeUpstream::start("relay").await {
        Ok(f) => f,
        Err(e) => {
            return fail(
                EXIT_USAGE,
                format!("cannot start a simulated upstream: {e}"),
            )
        }
    };
    let anthropic_up = match FakeUpstream::start("anthropic").await {
        Ok(f) => f,
        Err(e) => {
            return fail(
                EXIT_USAGE,
                format!("cannot start a simulated upstream: {e}"),
            )
        }
    };
    relay_up.seed(seed);
    anthropic_up.seed(seed);
    let ms = Duration::from_millis;
    relay_up.set(
        "gemini-2.5-flash",
        Behavior {
            latency: ms(12),
            ..Behavior::default()
        },
    );
    relay_up.set(
        "gpt-4.1",
        Behavior {
            latency: ms(25),
            ..Behavior::default()
        },
    );
    relay_up.set(
        "deepseek-v3.2",
        Behavior {
            latency: ms(18),
            fail_rate: 0.3,
            ..Behavior::default()
        },
    );
    relay_up.set(
        "claude-sonnet-4.5",
        Behavior {
            latency: ms(30),
            rate_limit_per_sec: Some(50),
            retry_after_secs: 1,
            // Per-model limit: headers would describe this model's window, which the policy
            // would apply to the whole `relay` upstream.
            rate_limit_headers: false,
            ..Behavior::default()
        },
    );
    anthropic_up.set_default(Behavior {
        latency: ms(35),
        ..Behavior::default()
    });

    let mut env: Vec<(String, String)> = vec![
        (
            "TOLLGATE__UPSTREAMS__RELAY__BASE_URL".into(),
            relay_up.base_url(),
        ),
        (
            "TOLLGATE__UPSTREAMS__ANTHROPIC__BASE_URL".into(),
            anthropic_up.base_url(),
        ),
    ];
    env.extend(
        DEMO_OVERRIDES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let plan = match Plan::load(&LoadOptions::new([policy]).with_env(env.clone())) {
        Ok(c) => c.plan,
        Err(d) => {
            eprint!("{}", d.render(super::color()));
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // Fake keys, in-process only: no real key is needed or read.
    let keys: HashMap<String, String> = plan
        .upstreams
        .iter()
        .flat_map(|u| u.api_keys.iter())
        .map(|k| {
            let v = k.prefixes.first().map_or("demo", String::as_str);
            (k.env.clone(), format!("{v}demo-key"))
        })
        .collect();
    let client = match Client::with_env(&plan, Arc::new(move |k: &str| keys.get(k).cloned())) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_INVALID, e.to_string()),
    };
    let premium = plan
        .model_by_name(PREMIUM)
        .and_then(|m| plan.model(m).price);
    let exec = match Executor::builder(plan.clone()).seed(seed).build() {
        Ok(e) => e,
        Err(e) => return fail(EXIT_INVALID, e.to_string()),
    };
    let relay = Relay::new(exec.clone(), client);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return fail(EXIT_USAGE, format!("cannot listen on 127.0.0.1: {e}")),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(EXIT_USAGE, e.to_string()),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(listener, relay, async {
        let _ = stop_rx.await;
    }));

    println!(
        "tollgate demo: {requests} requests, {concurrency} at a time, policy {}",
        policy.display()
    );
    println!();
    println!("simulated upstreams (in-process, 127.0.0.1, no key, no network):");
    // Not their ports: those differ from run to run, and the report does not.
    println!("  relay      gemini-2.5-flash, gpt-4.1: healthy");
    println!("             deepseek-v3.2: fails 30% of calls (500/503)");
    println!("             claude-sonnet-4.5: rate-limited, 50/s, then 429 + Retry-After: 1");
    println!("  anthropic  goes down (503) from 30% to 60% of the run, then comes back");
    println!();
    println!("policy overrides for a seconds-long run (the policy file is unchanged):");
    println!("  TOLLGATE__UPSTREAMS__{{RELAY,ANTHROPIC}}__BASE_URL = the simulated upstreams");
    for (k, v) in DEMO_OVERRIDES {
        println!("  {k}={v}");
    }
    println!();

    let bar = indicatif::ProgressBar::new(requests as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Breaker watcher: trips (→ open) and recoveries (→ closed) by breaker.
    let breaker_log: Arc<Mutex<BTreeMap<String, (u32, u32)>>> = Arc::default();
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let exec = exec.clone();
        let log = breaker_log.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut last: HashMap<String, &'static str> = HashMap::new();
            while watching.load(Relaxed) {
                let st = exec.stats();
                let all = st
                    .upstreams
                    .iter()
                    .filter_map(|u| u.breaker.clone())
                    .chain(st.models.iter().filter_map(|m| m.breaker.clone()));
                for b in all {
                    let prev = last.insert(b.name.clone(), b.state).unwrap_or("closed");
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    let e = l.entry(b.name.clone()).or_default();
                    if b.state == "open" && prev != "open" {
                        e.0 += 1;
                    }
                    if b.state == "closed" && prev != "closed" {
                        e.1 += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let anthropic_up = Arc::new(anthropic_up);
    let url = format!("http://{addr}/v1/chat/completions");
    let started = Instant::now();
    let real = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, next, outcomes, bar, url, anth) = (
            http.clone(),
            next.clone(),
            outcomes.clone(),
            bar.clone(),
            url.clone(),
            anthropic_up.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= requests {
                    break;
                }
                if i == requests * 3 / 10 {
                    anth.set_down(true);
                    bar.set_message("anthropic is down");
                }
                if i == requests * 6 / 10 {
                    anth.set_down(false);
                    bar.set_message("anthropic is back");
                }
                // Open-loop pacing: request i leaves at i / rate, however fast the machine.
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let (body, task) = workload(i, seed);
                let t0 = Instant::now();
                let mut rb = http.post(&url).json(&body);
                if let Some(t) = task {
                    rb = rb.header("x-tollgate-task", t);
                }
                let o = match rb.send().await {
                    Ok(r) => {
                        let h = |k: &str| {
                            r.headers()
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let ok = r.status().is_success();
                        let o = Outcome {
                            ok,
                            latency: Duration::ZERO,
                            attempts: h("x-tollgate-attempts").parse().unwrap_or(0),
                            failovers: h("x-tollgate-failovers").parse().unwrap_or(0),
                            route: h("x-tollgate-route"),
                            model: h("x-tollgate-model"),
                            error: String::new(),
                        };
                        let status = r.status().as_u16();
                        let body = r.bytes().await;
                        let error = match (&body, ok) {
                            (Ok(_), true) => String::new(),
                            (Ok(b), false) => serde_json::from_slice::<serde_json::Value>(b)
                                .ok()
                                .and_then(|v| v["error"]["code"].as_str().map(String::from))
                                .map_or(format!("{status}"), |c| format!("{status} {c}")),
                            (Err(e), _) => e.to_string(),
                        };
                        Outcome {
                            ok: o.ok && body.is_ok(),
                            latency: t0.elapsed(),
                            error,
                            ..o
                        }
                    }
                    Err(_) => Outcome {
                        ok: false,
                        latency: t0.elapsed(),
                        attempts: 0,
                        failovers: 0,
                        route: String::new(),
                        model: String::new(),
                        error: "no answer from the relay".into(),
                    },
                };
                outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let wall = started.elapsed();
    bar.finish_with_message("done");
    eprintln!(
        "ran {:.1} s of virtual time in {:.2} s of real time",
        wall.as_secs_f64(),
        real.elapsed().as_secs_f64()
    );
    watching.store(false, Relaxed);
    let _ = watcher.await;
    let _ = stop_tx.send(());
    let _ = server.await;

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    let stats = exec.stats();
    report(
        &outcomes,
        wall,
        &stats,
        &breaker_log.lock().unwrap_or_else(|e| e.into_inner()),
        premium,
    );
    ExitCode::SUCCESS
}

/// Request `i` of the mix: a quarter for each reference route.
fn workload(i: usize, seed: u64) -> (serde_json::Value, Option<&'static str>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let msg = |text: String, max_tokens: u64| {
        json!({"model": "auto", "max_tokens": max_tokens,
               "messages": [{"role": "user", "content": text}]})
    };
    match rng.u8(0..4) {
        0 => (msg(format!("Quick: is order {i} shipped yet?"), 64), None),
        1 => (
            msg(
                format!("Analyze and compare these two cache designs for service {i}, then evaluate the trade-offs."),
                800,
            ),
            None,
        ),
        2 => (
            msg(format!("Summarize ticket {i} for the support team."), 200),
            Some(if rng.bool() { "chat" } else { "summary" }),
        ),
        _ => (msg(format!("Translate product description {i} into French."), 200), None),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(
    outcomes: &[Outcome],
    wall: Duration,
    stats: &crate::exec::Stats,
    breakers: &BTreeMap<String, (u32, u32)>,
    premium: Option<crate::plan::Price>,
) {
    let n = outcomes.len().max(1);
    let ok = outcomes.iter().filter(|o| o.ok).count();
    let attempts: u64 = outcomes.iter().map(|o| u64::from(o.attempts)).sum();
    let failed_over = outcomes.iter().filter(|o| o.failovers > 0).count();
    let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    lat.sort();
    let mut by_route: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.ok) {
        *by_route.entry(o.route.as_str()).or_default() += 1;
    }
    let mut served_by: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.ok) {
        *served_by.entry(o.model.as_str()).or_default() += 1;
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!();
    println!(
        "results ({:.1} s of virtual time, {:.0} requests/s)",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "  success            {ok} / {n} ({:.2}%)",
        100.0 * ok as f64 / n as f64
    );
    println!(
        "  attempts/request   {:.3} ({} attempts upstream for {ok} served)",
        attempts as f64 / ok.max(1) as f64,
        attempts
    );
    println!(
        "  failovers          {failed_over} requests served by a later target than their first"
    );
    println!(
        "  latency            p50 {}, p90 {}, p99 {}, max {}",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.9)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0))
    );
    let routes: Vec<String> = by_route.iter().map(|(r, c)| format!("{r} {c}")).collect();
    println!("  routes             {}", routes.join(", "));
    if breakers.values().all(|(t, _)| *t == 0) {
        println!("  breakers           no trips");
    }
    for (name, (trips, recoveries)) in breakers.iter().filter(|(_, (t, _))| *t > 0) {
        println!("  breaker            {name}: {trips} trip(s), {recoveries} recovery(ies)");
    }
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| !o.ok) {
        *errors.entry(o.error.as_str()).or_default() += 1;
    }
    let mut errors: Vec<(&str, usize)> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (e, c) in errors.iter().take(5) {
        let e: String = e.chars().take(160).collect();
        println!("  failed             {c} × {e}");
    }
    println!();
    println!("cost by model");
    println!(
        "  {:<26} {:>8} {:>9} {:>10} {:>11} {:>12}",
        "model", "served", "attempts", "tokens in", "tokens out", "cost USD"
    );
    let mut total_usage = Usage::default();
    let mut baseline = 0.0;
    for m in &stats.models {
        let served = served_by.get(m.name.as_str()).copied().unwrap_or(0);
        if m.successes + m.failures == 0 {
            continue;
        }
        println!(
            "  {:<26} {:>8} {:>9} {:>10} {:>11} {:>12.6}",
            m.name,
            served,
            m.successes + m.failures,
            m.tokens.0,
            m.tokens.1,
            m.spend_usd
        );
        let u = Usage {
            input_tokens: m.tokens.0,
            output_tokens: m.tokens.1,
        };
        total_usage.input_tokens += u.input_tokens;
        total_usage.output_tokens += u.output_tokens;
        if let Some(p) = premium {
            baseline += p.cost(u).as_dollars();
        }
    }
    println!(
        "  {:<26} {:>8} {:>9} {:>10} {:>11} {:>12.6}",
        "total", ok, attempts, total_usage.input_tokens, total_usage.output_tokens, stats.spend_usd
    );
    if premium.is_some() && baseline > 0.0 {
        let saved = baseline - stats.spend_usd;
        println!();
        println!(
            "savings: the same tokens on {PREMIUM} would cost ${baseline:.6}; routing cost ${:.6}: ${saved:.6} saved ({:.1}%)",
            stats.spend_usd,
            100.0 * saved / baseline
        );
    }
}

fn fail(code: u8, msg: String) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}
