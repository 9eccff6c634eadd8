//! Relay overhead benchmark: the same requests sent straight to a fast fake upstream and
//! through `tollgate serve`'s relay (and, optionally, through another proxy such as
//! LiteLLM pointed at the same fake), at several concurrencies.
//!
//! ```text
//! cargo run --release --example relay_bench -- [--fake-port 18080] [--requests 4000]
//!     [--concurrency 1,64] [--rate R] [--other NAME=URL ...]
//! ```
//! Without `--rate` the load is a closed loop: each of `conc` clients sends its next request
//! when the previous one answers (throughput). With `--rate R` it is an open loop: the `conc`
//! clients together send `R` requests per second on a fixed schedule, and a latency is
//! measured from the request's *scheduled* time (beyond the timer's ~1 ms slack), so a
//! stalled server is charged for the requests it delayed (no coordinated omission). That is the added latency of the relay at
//! `conc` connections when the machine is not saturated.
//! `--other litellm=http://127.0.0.1:4000` adds a column for any OpenAI-compatible proxy
//! already running and routing model `fake` to `http://127.0.0.1:FAKE_PORT/v1`
//! (`LITELLM_MASTER_KEY`, if set, is sent as its bearer key). See BENCHMARKS.md.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::exec::Executor;
use tollgate::http::Client;
use tollgate::server::fake::FakeUpstream;
use tollgate::server::Relay;

/// How late tokio's timer may wake a paced client without it counting as a stall.
const TIMER_SLACK: Duration = Duration::from_millis(2);

struct Args {
    fake_port: u16,
    requests: usize,
    concurrency: Vec<usize>,
    rate: Option<f64>,
    others: Vec<(String, String)>,
}

fn args() -> Args {
    let mut a = Args {
        fake_port: 0,
        requests: 4000,
        concurrency: vec![1, 64],
        rate: None,
        others: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--fake-port" => a.fake_port = v.parse().expect("--fake-port PORT"),
            "--requests" => a.requests = v.parse().expect("--requests N"),
            "--concurrency" => {
                a.concurrency = v
                    .split(',')
                    .map(|c| c.parse().expect("--concurrency 1,64"))
                    .collect()
            }
            "--rate" => a.rate = Some(v.parse().expect("--rate REQUESTS_PER_SECOND")),
            "--other" => {
                let (n, u) = v.split_once('=').expect("--other NAME=URL");
                a.others.push((n.into(), u.into()));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Run {
    p50: Duration,
    p99: Duration,
    rps: f64,
    errors: usize,
}

async fn run(url: &str, key: Option<&str>, n: usize, c: usize, rate: Option<f64>) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "fake",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello benchmark"}],
    }))
    .unwrap();
    let url = format!("{url}/chat/completions");
    // Warm up the pools.
    for _ in 0..c.min(50) {
        let _ = send(&http, &url, key, &body).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    // Open loop: request k (over all clients) is due at t0 + k / rate.
    let gap = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    for _ in 0..c {
        let (http, url, body, next) = (http.clone(), url.clone(), body.clone(), next.clone());
        let key = key.map(String::from);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= n {
                    break;
                }
                let t = match gap {
                    Some(g) => {
                        let due = t0 + g * k as u32;
                        tokio::time::sleep_until(due.into()).await;
                        // tokio's timer wakes up to ~1 ms late: within that slack the
                        // latency counts from the actual send; a client held up longer (by
                        // its previous request) is charged from the due time.
                        let woke = Instant::now();
                        if woke.duration_since(due) > TIMER_SLACK {
                            due
                        } else {
                            woke
                        }
                    }
                    None => Instant::now(),
                };
                if !send(&http, &url, key.as_deref(), &body).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let wall = t0.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    Run {
        p50: pct(0.5),
        p99: pct(0.99),
        rps: all.len() as f64 / wall.as_secs_f64(),
        errors,
    }
}

async fn send(http: &reqwest::Client, url: &str, key: Option<&str>, body: &[u8]) -> bool {
    let mut rb = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    match rb.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            r.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

fn policy(fake: &str) -> String {
    format!(
        r#"
[upstreams.fake]
base_url = "{fake}"
pool = {{ max_idle = 256 }}
[models.fake]
upstream = "fake"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[retry.r]
max_attempts = 2
[breakers.b]
consecutive_failures = 5
[[routes]]
name = "main"
targets = ["fake"]
retry = "r"
"#
    )
}

#[tokio::main]
async fn main() {
    let a = args();
    let fake = if a.fake_port == 0 {
        FakeUpstream::start("fake").await.unwrap()
    } else {
        FakeUpstream::start_on("fake", ("127.0.0.1", a.fake_port))
            .await
            .unwrap()
    };
    let plan = tollgate::plan::Plan::load(
        &tollgate::policy::LoadOptions::from_text("bench.toml", policy(&fake.base_url()))
            .with_env(Vec::<(String, String)>::new()),
    )
    .unwrap_or_else(|d| panic!("{}", d.render(false)))
    .plan;
    let relay = Relay::new(
        Executor::new(plan.clone()).unwrap(),
        Client::from_plan(&plan).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(tollgate::server::serve(
        listener,
        relay,
        std::future::pending(),
    ));
    let master = std::env::var("LITELLM_MASTER_KEY").ok();
    let mut targets: Vec<(String, String, Option<String>)> = vec![
        ("direct".into(), fake.base_url(), None),
        ("tollgate".into(), relay_url, None),
    ];
    for (n, u) in &a.others {
        targets.push((
            n.clone(),
            u.trim_end_matches('/').to_string(),
            master.clone(),
        ));
    }
    println!(
        "{} requests per run ({}); fake upstream {} answers at once",
        a.requests,
        a.rate.map_or("closed loop".to_string(), |r| format!(
            "open loop at {r} req/s"
        )),
        fake.base_url()
    );
    println!(
        "{:<10} {:>5} {:>10} {:>10} {:>10} {:>12} {:>12} {:>7}",
        "target", "conc", "p50 ms", "p99 ms", "req/s", "+p50 ms", "+p99 ms", "errors"
    );
    for &c in &a.concurrency {
        let mut direct: Option<(Duration, Duration)> = None;
        for (name, url, key) in &targets {
            // Slower proxies get fewer requests so a run stays bounded.
            let n = if name == "direct" || name == "tollgate" {
                a.requests
            } else {
                (a.requests / 4).max(200)
            };
            let r = run(url, key.as_deref(), n, c, a.rate).await;
            let (add50, add99) = match direct {
                None => {
                    direct = Some((r.p50, r.p99));
                    ("-".to_string(), "-".to_string())
                }
                Some((d50, d99)) => (
                    format!("{:.3}", (r.p50.as_secs_f64() - d50.as_secs_f64()) * 1e3),
                    format!("{:.3}", (r.p99.as_secs_f64() - d99.as_secs_f64()) * 1e3),
                ),
            };
            println!(
                "{:<10} {:>5} {:>10.3} {:>10.3} {:>10.0} {:>12} {:>12} {:>7}",
                name,
                c,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.rps,
                add50,
                add99,
                r.errors
            );
        }
    }
}
