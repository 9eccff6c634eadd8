//! Local vs shared (Redis) rate limiting through the executor, 64 concurrent callers.
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! REDIS_URL=redis://127.0.0.1:6390/ cargo run --release --features redis --example shared_bench
//! ```
//!
//! Prints, per configuration, calls per second, mean latency of one `execute` (decision
//! plus a no-op operation), Redis round trips per 1,000 calls and the shared limiter's
//! requests by kind (background prefetches, batches asked by a caller that found the lease
//! empty, single permits asked after waiting a whole timeout for batches).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tollgate::exec::shared::redis::RedisBackend;
use tollgate::exec::shared::StateBackend;
use tollgate::exec::{Done, Executor, Failure, Request};
use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;

const CALLERS: usize = 64;
const PER_CALLER: usize = 2_000;

fn plan(state: &str, lease: u32) -> Plan {
    let text = format!(
        r#"
version = 1
[state.redis]
url = {{ env = "REDIS_URL" }}
timeout = "50ms"
lease = {lease}

[upstreams.main]
base_url = "https://api.example.com/v1"
limits = {{ requests_per_second = 1e9, burst = 1000000, state = "{state}" }}

[models.small]
upstream = "main"

[[routes]]
name = "default"
targets = ["small"]
"#
    );
    Plan::load(
        &LoadOptions::from_text("policy.toml", text).with_env(Vec::<(String, String)>::new()),
    )
    .unwrap_or_else(|d| panic!("{}", d.render(false)))
    .plan
}

async fn run(name: &str, exec: Executor) {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let e = exec.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::new().input_tokens(1);
            let mut ok = 0usize;
            for _ in 0..PER_CALLER {
                ok += e
                    .execute(&req, |_t, _| async {
                        Ok::<_, Failure>(Done::with_usage((), 1, 1))
                    })
                    .await
                    .is_ok() as usize;
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let el = t0.elapsed();
    let calls = CALLERS * PER_CALLER;
    let rt = exec.runtime();
    let shared = rt.shared_rate(tollgate::plan::UpstreamId(0));
    let trips = shared.map_or(0, |s| s.health().round_trips.load(Relaxed));
    let kinds = shared.map_or(String::new(), |s| {
        let r = &s.requests;
        format!(
            "  [prefetches {}, batches {}, singles {}, failures {}]",
            r.prefetches.load(Relaxed),
            r.batches.load(Relaxed),
            r.singles.load(Relaxed),
            s.health().failures.load(Relaxed)
        )
    });
    println!(
        "{name:<22} {:>10.0} calls/s  {:>8.2} µs/call (mean, {CALLERS} callers)  {:>6.1} round trips/1000 calls  ({ok}/{calls} admitted){kinds}",
        calls as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / calls as f64 * CALLERS as f64,
        trips as f64 * 1000.0 / calls as f64,
    );
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").expect("set REDIS_URL=redis://127.0.0.1:PORT/");
    run("local", Executor::new(plan("local", 1)).unwrap()).await;
    for lease in [1u32, 16, 64, 256, 1024, 4096] {
        let p = plan("shared", lease);
        let settings = p.redis.clone().unwrap();
        let b: Arc<dyn StateBackend> = Arc::new(RedisBackend::new(&url, &settings).unwrap());
        let exec = Executor::builder(p).state_backend(b).build().unwrap();
        run(&format!("shared, lease {lease}"), exec).await;
    }
    // Local again: the first row also pays the runtime's warm-up; the spread between the
    // two local rows is the noise of the machine.
    run("local (again)", Executor::new(plan("local", 1)).unwrap()).await;
}
