//! Reload latency: from a policy file write to the `Applied` event, over 200 reloads.
//! Prints p50/p90/p99/max (it measures, it does not assert).
//!
//! ```text
//! cargo run --release --example reload_latency [-- RELOADS [DEBOUNCE_MS]]
//! ```
//!
//! Each round writes a new version of the file (write-temp-and-rename, as editors do),
//! then waits for the `Applied` event that brings that version in. The latency includes the
//! debounce, one debouncer tick (a quarter of the debounce), loading, compiling and the swap.

use std::time::{Duration, Instant};

use tollgate::exec::Executor;
use tollgate::plan::Plan;
use tollgate::policy::LoadOptions;
use tollgate::reload::{self, PolicySource, ReloadConfig, ReloadEvent};

fn policy(n: u32) -> String {
    format!(
        "[upstreams.up]\nbase_url = \"http://127.0.0.1:1/v1\"\n\
         limits = {{ requests_per_second = 100.0, burst = 10 }}\n\
         [models.m{n}]\nupstream = \"up\"\nprice = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n\
         [[routes]]\nname = \"main\"\ntargets = [\"m{n}\"]\n"
    )
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let reloads: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let debounce = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(75));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy(0)).expect("write");
    let opts = LoadOptions::new([path.clone()]).with_env(Vec::<(String, String)>::new());
    let plan = Plan::load(&opts).expect("policy compiles").plan;
    let exec = Executor::new(plan).expect("executor");
    let handle = reload::watch(
        PolicySource::from(opts),
        &exec,
        ReloadConfig::default().debounce(debounce),
    )
    .expect("watch");
    let mut rx = handle.subscribe();
    let mut lat = Vec::with_capacity(reloads as usize);
    for n in 1..=reloads {
        let tmp = dir.path().join("policy.toml.tmp");
        std::fs::write(&tmp, policy(n)).expect("write");
        let t0 = Instant::now();
        std::fs::rename(&tmp, &path).expect("rename");
        let want = format!("m{n}");
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event within 5 s")
                .expect("watcher running");
            if let ReloadEvent::Applied { .. } = ev {
                if exec.plan().model_by_name(&want).is_some() {
                    lat.push(t0.elapsed());
                    break;
                }
            }
        }
    }
    handle.stop();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "reload latency, file write → Applied, {reloads} reloads, debounce {} ms:",
        debounce.as_millis()
    );
    println!(
        "  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (min {:.1} ms)",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.9)),
        ms(pct(&lat, 0.99)),
        ms(lat[lat.len() - 1]),
        ms(lat[0])
    );
    println!(
        "  p99 minus debounce: {:.1} ms (goal: within 100 ms)",
        ms(pct(&lat, 0.99)) - ms(debounce)
    );
}
